"""The local engine's start: the process pool (`faasctl.executors.local`) against parsl HTEX on a local block.

HTEX as the local engine used it before (`faasctl.executors.parsl.loopback_options`), and tuned
(``heartbeat_period=1``, ``poll_period=1`` ms); each timed from its construction to its
first ``noop`` task's result, in fresh processes, alternating, so that all see the same load::

    python benchmarks/engine_start.py --repeat 2
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

from faasctl.scan.worker import noop


@contextlib.contextmanager
def htex(workers: int, **tune: Any) -> Iterator[Any]:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor

    from faasctl.executors.parsl import INTERCHANGE_CMD, ParslExecutor, loopback_options, quiet_parsl

    quiet_parsl()
    with tempfile.TemporaryDirectory(prefix="faasctl-parsl-") as run_dir:
        executor = HighThroughputExecutor(label="faasctl-local", interchange_launch_cmd=INTERCHANGE_CMD,
                                          **{**loopback_options(workers), **tune})
        ex = ParslExecutor(Config(executors=[executor], run_dir=run_dir, strategy="none", initialize_logging=False,
                                  usage_tracking=0))
        try:
            yield ex
        finally:
            ex.shutdown()


def engine(kind: str, workers: int) -> Any:
    if kind == "pool":
        from faasctl.executors.local import local_executor

        return local_executor(workers, warm=None)
    if kind == "htex":
        return htex(workers)
    return htex(workers, heartbeat_period=1, poll_period=1)


def one(kind: str, workers: int) -> None:
    start = time.perf_counter()
    with engine(kind, workers) as ex:
        started = time.perf_counter()
        ex.submit(noop, 1).result()
        first = time.perf_counter()
    print(f"{kind:<11} start {started - start:6.2f} s   first no-op task {first - started:6.2f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.workers)
        return 0
    for _ in range(args.repeat):
        for kind in ("pool", "htex", "htex-tuned"):
            subprocess.run([sys.executable, __file__, "--one", kind, "--workers", str(args.workers)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
