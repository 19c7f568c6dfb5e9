"""The embedded default engine: a pool of worker processes on this machine.

A `concurrent.futures.ProcessPoolExecutor` (``spawn`` start method) whose workers set
`faasctl.study.WORKER_ENV`, import the fit backend and start JAX before the first task
arrives, so that they get ready while the client still reads the pallet. It starts in a
fraction of a second; parsl's HighThroughputExecutor, which the sites use
(`faasctl.executors.site`), needs ~1 s to start and ~6 s for its first task on a local
block (docs/performance.md, ``benchmarks/engine_start.py``).

What a bare process pool does not do, `LocalExecutor` does:

* **A dead worker costs its tasks, not the scan.** A pool whose worker dies (killed, out of
  memory, a crash in native code) is *broken*: its tasks fail with ``BrokenProcessPool``
  and it refuses new ones. `LocalExecutor` then starts a fresh pool for the next
  submissions; `faasctl.scan.client.FitClient` resubmits the failed tasks as lost.
* **The caller gets a core while the workers start.** With a worker per core, the last
  one waits for the first task before it imports anything: meanwhile the caller (reading the
  pallet) and the other workers do not outnumber the cores.
* **Workers do not outlive their client.** Each worker watches its parent process and exits
  as soon as it is gone (``PR_SET_PDEATHSIG`` on Linux, and a watch thread everywhere), so
  ``kill -9`` of ``faasctl fit`` leaves no worker behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Mapping

from faasctl.study import DEFAULT_BACKEND, WORKER_ENV

__all__ = ["LocalExecutor", "local_executor"]

log = logging.getLogger(__name__)

#: Seconds between a worker's checks that its parent is still there.
PARENT_WATCH_PERIOD = 0.5


def _die_with_parent(parent: int, death_signal: bool) -> None:
    """Make this worker exit when ``parent`` (the process that started it) ends."""
    if death_signal and sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    # The death signal is Linux only and goes with the *thread* that started the worker
    # (not armed for other threads): a thread that watches the parent process covers both.
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_PERIOD)
        os._exit(1)

    if os.getppid() != parent:  # the parent ended before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="faasctl-parent-watch", daemon=True).start()


def _start_worker(
    parent: int, death_signal: bool, env: Mapping[str, str], warm: str | None, initializer: Callable[[], Any] | None,
    early: Any = None, go: Any = None,
) -> None:
    """A worker's initializer: environment, parent watch, backend warm-up, then the caller's hook.

    A worker that finds no ``early`` slot left (a semaphore) waits for ``go`` before its imports.
    """
    os.environ.update(env)
    _die_with_parent(parent, death_signal)
    released = None
    if early is not None and not early.acquire(block=False):
        go.wait()
        released = time.time()
    from faasctl.scan import worker

    if warm:
        worker.warm_up(warm)
    worker.mark_ready(released)
    if initializer is not None:
        initializer()


class LocalExecutor(cf.Executor):
    """A process pool of ``workers`` local processes that replaces itself when a worker dies.

    Args:
        workers: worker processes (default: the number of cores).
        initializer: called in each worker after faasctl has set it up (a picklable function,
            e.g. ``functools.partial(exec, code)``; health-check tests use it to break a worker).
        env: environment variables for the workers, on top of `faasctl.study.WORKER_ENV`.
        warm: the backend each worker imports and starts before its first task (``None``: none).

    Attributes:
        started: when the engine was started (``time.time()``).
        restarts: pools started again after a worker died.
        same_stack: True: the workers run this interpreter and its packages (`FitClient` need
            not ask them for their versions).
    """

    same_stack = True

    def __init__(
        self,
        workers: int | None = None,
        *,
        initializer: Callable[[], Any] | None = None,
        env: Mapping[str, str] | None = None,
        warm: str | None = DEFAULT_BACKEND,
    ) -> None:
        self._max_workers = workers or os.cpu_count() or 1
        self._env = {**WORKER_ENV, **(env or {})}
        self._warm = warm
        self._initializer = initializer
        # spawn: a fresh interpreter per worker (no fork of a threaded client, no temp files)
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._shutdown = False
        self.started = time.time()
        self.restarts = 0
        # A worker per core, and the caller busy too (reading the pallet): the last worker starts
        # its imports at the first task, so that the caller and the others have a core each
        # meanwhile (1Lbb on 2 cores: first result ~0.35 s earlier, the end unchanged).
        self._go = self._context.Event()
        early = None
        if 1 < self._max_workers >= (os.cpu_count() or 1):  # the cores, as the default worker count
            early = self._context.Semaphore(self._max_workers - 1)
        self._pool = self._new_pool(early)

    def __repr__(self) -> str:
        return f"LocalExecutor({self._max_workers})"

    def _new_pool(self, early: Any = None) -> cf.ProcessPoolExecutor:
        # The parent-death signal follows the thread that starts a worker: arm it only
        # for workers started by the main thread (the watch thread covers the others).
        death_signal = threading.current_thread() is threading.main_thread()
        pool = cf.ProcessPoolExecutor(
            self._max_workers, mp_context=self._context, initializer=_start_worker,
            initargs=(os.getpid(), death_signal, self._env, self._warm, self._initializer, early, self._go),
        )
        # A pool starts a worker per submission while none is idle: start them all now,
        # so they import and warm up while the caller prepares its tasks.
        for _ in range(self._max_workers):
            pool.submit(int)
        return pool

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._go.set()
            try:
                return self._pool.submit(fn, *args, **kwargs)
            except BrokenProcessPool as err:
                # a worker died: its pool's tasks failed (the client resubmits them); start afresh
                log.warning("a local worker died (%s); starting the workers again", err)
                self._pool.shutdown(wait=False, cancel_futures=True)
                self.restarts += 1
                self._pool = self._new_pool()
                return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            self._go.set()  # a worker still waiting to start would hold the pool's shutdown up
            pool = self._pool
        pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def terminate(self) -> None:
        """Stop now: end the workers (tasks still running are lost) and shut the pool down."""
        with self._lock:
            self._shutdown = True
            self._go.set()
            pool = self._pool
        # a pool has no public way to stop running tasks; its processes are plain Process objects
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        for process in processes:
            process.join()
        pool.shutdown(wait=True)


@contextlib.contextmanager
def local_executor(
    workers: int | None = None,
    *,
    initializer: Callable[[], Any] | None = None,
    env: Mapping[str, str] | None = None,
    warm: str | None = DEFAULT_BACKEND,
) -> Iterator[LocalExecutor]:
    """The embedded default engine: ``workers`` local processes (see `LocalExecutor`).

    Leaving the block ends the workers (`LocalExecutor.terminate`): tasks still running then
    are abandoned, as `faasctl.scan.client.FitClient` abandons a task that timed out, and a
    hung fit does not hold the caller up.

    Example:
        >>> from faasctl.scan.client import FitClient
        >>> with local_executor(2) as executor:  # doctest: +SKIP
        ...     results = list(FitClient(executor).scan(pallet))
    """
    executor = LocalExecutor(workers, initializer=initializer, env=env, warm=warm)
    try:
        yield executor
    finally:
        executor.terminate()
