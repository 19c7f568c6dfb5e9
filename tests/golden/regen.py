"""Regenerate the golden endpoint folders that tests/test_render.py compares against.

    python tests/golden/regen.py

writes tests/golden/<site>/{config.yaml, user_config_template.yaml.j2, user_config_schema.json}
for every site shipped in src/faasctl/sites/, each checked first with Globus Compute's
loader. Review the diff (git diff tests/golden) before committing: it is exactly what
changes in the endpoint folders admins install.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from faasctl.render import render_endpoint, write_endpoint
from faasctl.sites import load_site, shipped_sites_dir

GOLDEN = Path(__file__).resolve().parent


def main() -> int:
    shipped = sorted(shipped_sites_dir().glob("*.yaml"))
    for folder in GOLDEN.iterdir():  # drop folders of sites that are gone
        if folder.is_dir() and folder.name[0] not in "_." and not (shipped_sites_dir() / f"{folder.name}.yaml").exists():
            shutil.rmtree(folder)
    for path in shipped:
        # the shipped file itself, never an admin's override in ~/.config/faasctl/sites
        files = render_endpoint(load_site(path.stem, site_file=path))
        for written in write_endpoint(files, GOLDEN / path.stem):
            written.chmod(0o644)
            print(written.relative_to(GOLDEN.parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
