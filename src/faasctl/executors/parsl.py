"""parsl under faasctl: a DataFlowKernel seen as a `concurrent.futures.Executor`, and HTEX settings.

parsl's ``HighThroughputExecutor`` is the engine under Globus Compute (funcX) endpoints; faasctl drives
it with a private DataFlowKernel for the local engine and for direct mode on sites, wrapped as a plain
`concurrent.futures.Executor` so that `faasctl.scan.FitClient` treats it like Globus Compute's ``Executor``.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import functools
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from faasctl.study import WORKER_ENV

__all__ = ["ParslExecutor", "INTERCHANGE_CMD", "loopback_options", "quiet_parsl", "worker_init_exports",
           "this_python_first_on_path"]

log = logging.getLogger(__name__)


def worker_init_exports(extra: dict[str, str] | None = None) -> str:
    env = {**WORKER_ENV, **(extra or {})}
    return "; ".join(f"export {k}='{v}'" for k, v in env.items())


#: parsl's interchange, started with this Python rather than found on PATH (a venv need not be
#: activated), through a wrapper that makes it ignore Ctrl-C and end with its client.
INTERCHANGE_CMD = [sys.executable, "-m", "faasctl.executors._interchange"]


def this_python_first_on_path() -> str:
    """A worker_init line that makes worker pools run this Python installation's parsl."""
    return f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\""


class ParslExecutor(cf.Executor):
    """A parsl DataFlowKernel seen as a `concurrent.futures.Executor`.

    Args:
        config: a ``parsl.Config``; its first executor runs the tasks.
        shutdown_timeout: seconds `shutdown` waits for parsl's own cleanup before it stops
            the processes the executor started itself.
    """

    def __init__(self, config: Any, *, shutdown_timeout: float = 10.0) -> None:
        from parsl.dataflow.dflow import DataFlowKernel

        self.dfk = DataFlowKernel(config)
        self.label = config.executors[0].label
        self.shutdown_timeout = shutdown_timeout

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        if not hasattr(fn, "__name__"):  # parsl names tasks after their function (partials have none)
            fn = functools.update_wrapper(functools.partial(fn), getattr(fn, "func", fn))
        return self.dfk.submit(
            fn, app_args=args, executors=[self.label], cache=False, ignore_for_cache=None, app_kwargs=kwargs
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Clean up the DataFlowKernel, bounded: its processes are stopped however parsl's cleanup ends.

        ``dfk.cleanup()`` scales blocks in through the interchange and waits on its answer
        without a timeout: if the interchange is gone (a Ctrl-C reaches the whole process
        group, so it dies too), cleanup never returns. It runs in a thread for at most
        ``shutdown_timeout`` seconds; then the interchange and the blocks are stopped here.
        """
        cleanup = threading.Thread(target=self._cleanup, name="faasctl-parsl-cleanup", daemon=True)
        cleanup.start()
        cleanup.join(self.shutdown_timeout)
        if cleanup.is_alive():
            log.warning("parsl did not shut down within %g s; stopping its interchange and blocks", self.shutdown_timeout)
            atexit.unregister(self.dfk.atexit_cleanup)  # it would only warn that the DFK still runs
            self._cancel_blocks()
        self._stop_interchange()

    def _cleanup(self) -> None:
        try:
            self.dfk.cleanup()
        except Exception as err:  # noqa: BLE001 - a broken engine must not hide why the scan stopped
            log.warning("parsl cleanup failed: %s", err)

    def _htex(self) -> Any:
        return self.dfk.executors.get(self.label)

    def _stop_interchange(self) -> None:
        proc = getattr(self._htex(), "interchange_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _cancel_blocks(self) -> None:
        """Stop the blocks parsl started: local ones by process group, others through the provider (scancel)."""
        from parsl.providers import LocalProvider

        htex = self._htex()
        provider = getattr(htex, "provider", None)
        if provider is None:
            return
        jobs = list(getattr(htex, "blocks_to_job_id", {}).values())
        if isinstance(provider, LocalProvider):
            # LocalProvider starts each block in a process group of its own: stop the group
            for job in jobs:
                pid = provider.resources.get(job, {}).get("remote_pid")
                try:
                    group = os.getpgid(pid)
                    if group != os.getpgrp():  # never our own group
                        os.killpg(group, signal.SIGKILL)
                except (TypeError, ProcessLookupError, PermissionError):
                    pass
        elif jobs:
            worker = threading.Thread(target=provider.cancel, args=(jobs,), daemon=True)
            worker.start()
            worker.join(self.shutdown_timeout)


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
