import sys

from faasctl.check.core import main

sys.exit(main())
