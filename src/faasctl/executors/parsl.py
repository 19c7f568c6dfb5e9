"""parsl under faasctl: a DataFlowKernel seen as a `concurrent.futures.Executor`, and HTEX settings.

parsl's ``HighThroughputExecutor`` is the engine under Globus Compute (funcX) endpoints; faasctl drives
it with a private DataFlowKernel for the local engine and for direct mode on sites, wrapped as a plain
`concurrent.futures.Executor` so that `faasctl.scan.FitClient` treats it like Globus Compute's ``Executor``.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from faasctl.study import WORKER_ENV

__all__ = ["ParslExecutor", "INTERCHANGE_CMD", "loopback_options", "quiet_parsl", "worker_init_exports",
           "this_python_first_on_path"]

log = logging.getLogger(__name__)


def worker_init_exports(extra: dict[str, str] | None = None) -> str:
    env = {**WORKER_ENV, **(extra or {})}
    return "; ".join(f"export {k}='{v}'" for k, v in env.items())


#: parsl's interchange, started with this Python rather than found on PATH (a venv need not be activated).
INTERCHANGE_CMD = [sys.executable, "-m", "parsl.executors.high_throughput.interchange"]


def this_python_first_on_path() -> str:
    """A worker_init line that makes worker pools run this Python installation's parsl."""
    return f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\""


class ParslExecutor(cf.Executor):
    """A parsl DataFlowKernel seen as a `concurrent.futures.Executor`.

    Args:
        config: a ``parsl.Config``; its first executor runs the tasks.
    """

    def __init__(self, config: Any) -> None:
        from parsl.dataflow.dflow import DataFlowKernel

        self.dfk = DataFlowKernel(config)
        self.label = config.executors[0].label

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        if not hasattr(fn, "__name__"):  # parsl names tasks after their function (partials have none)
            fn = functools.update_wrapper(functools.partial(fn), getattr(fn, "func", fn))
        return self.dfk.submit(
            fn, app_args=args, executors=[self.label], cache=False, ignore_for_cache=None, app_kwargs=kwargs
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.dfk.cleanup()


def loopback_options(workers: int, worker_init: str = "") -> dict[str, Any]:
    """HighThroughputExecutor options for one block of ``workers`` local processes on loopback.

    Shared by the embedded engine and the local ``GlobusComputeEngine`` (which passes them on
    to its HTEX), so both run workers the same way.
    """
    from parsl.providers import LocalProvider

    init = "; ".join(filter(None, [this_python_first_on_path(), worker_init_exports(), worker_init]))
    return {
        "address": "127.0.0.1",
        "loopback_address": "127.0.0.1",
        "max_workers_per_node": workers,
        "heartbeat_period": 2,
        "heartbeat_threshold": 10,
        "provider": LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1, worker_init=init),
    }


def quiet_parsl() -> None:
    # parsl logs every task at INFO; keep the terminal for the progress bar.
    for name in ("parsl", "globus_compute_endpoint"):
        logging.getLogger(name).setLevel(logging.WARNING)
