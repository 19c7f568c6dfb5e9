"""The embedded default engine: worker processes on this machine."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

from faasctl.executors.parsl import INTERCHANGE_CMD, ParslExecutor, loopback_options, quiet_parsl

__all__ = ["local_executor"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def local_executor(
    workers: int | None = None, *, run_dir: str | Path | None = None, retries: int = 0, worker_init: str = ""
) -> Iterator[ParslExecutor]:
    """The embedded default engine: ``workers`` local processes behind parsl's HTEX on loopback.

    Args:
        workers: worker processes (default: the number of cores).
        run_dir: where parsl keeps its logs (default: a temporary folder, removed after).
        retries: parsl-level retries of failed tasks (the client retries lost tasks itself).
        worker_init: shell commands run before the workers start, after the thread-count
            exports (as a site's ``worker_init``; health-check tests use it to break a worker).
    """
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor

    quiet_parsl()
    workers = workers or os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        if run_dir is None:
            run_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="faasctl-parsl-"))
        htex = HighThroughputExecutor(
            label="faasctl-local", interchange_launch_cmd=INTERCHANGE_CMD, **loopback_options(workers, worker_init)
        )
        config = Config(
            executors=[htex], run_dir=str(run_dir), retries=retries, strategy="none",
            initialize_logging=False, usage_tracking=0,
        )
        executor = ParslExecutor(config)
        try:
            yield executor
        finally:
            executor.shutdown()
