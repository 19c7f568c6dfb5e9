"""parsl's HTEX interchange as faasctl starts it: ignoring Ctrl-C, and ending with its client.

* A Ctrl-C in a terminal sends SIGINT to the whole process group: the interchange, killed by
  it mid-scan, would print a traceback and leave parsl's cleanup in the client waiting on it.
  It ignores SIGINT; the client stops it (`faasctl.executors.parsl.ParslExecutor.shutdown`).
* If the client is killed outright (``kill -9``), nothing stops the interchange: on Linux it
  asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
            pass
        if os.getppid() == 1:  # the client died before the request took effect
            sys.exit(0)
    runpy.run_module("parsl.executors.high_throughput.interchange", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
