"""The analyst's API: send a pallet's patch fits to any executor and gather the results.

Example:
    >>> from faasctl.client import FitClient
    >>> from faasctl.engine import local_executor
    >>> from faasctl.pallet import load_pallet
    >>> pallet = load_pallet("examples/simple")  # doctest: +SKIP
    >>> with local_executor(workers=2) as ex:  # doctest: +SKIP
    ...     for result in FitClient(ex).scan(pallet):
    ...         print(result.patch, result.cls_obs)

The executor is any `concurrent.futures.Executor`: Globus Compute's
``Executor(endpoint_id=...)``, the embedded parsl engine (`faasctl.engine.local_executor`),
or a direct-mode site engine (`faasctl.engine.site_executor`).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from faasctl.pallet import Pallet, Patch
from faasctl.results import PatchResult
from faasctl.worker import NEED_BACKGROUND, fit_patch

__all__ = ["FitClient"]

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    patch: Patch
    attempt: int = 1
    submitted: float = field(default_factory=time.monotonic)
    with_background: bool = False


class FitClient:
    """Submit patch fits to an executor and stream the results as they finish.

    Args:
        executor: any `concurrent.futures.Executor` whose workers have faasctl installed.
        backend: the fit backend on the workers (``numpy``, ``jax`` or ``auto``).
        max_in_flight: tasks submitted but not finished at once; a window keeps memory
            flat for large pallets and lets a slow worker's backlog drain elsewhere.
        timeout: seconds a task may run before it is recorded as failed (``None``: no limit).
        retries: how often a task lost to infrastructure (worker died, block cancelled)
            is resubmitted. Fits that fail are results, and are not retried.
        function: the task function (tests and health checks swap it).
    """

    def __init__(
        self,
        executor: cf.Executor,
        *,
        backend: str = "numpy",
        max_in_flight: int = 64,
        timeout: float | None = None,
        retries: int = 2,
        function: Callable[[dict[str, Any]], dict[str, Any]] = fit_patch,
    ) -> None:
        self.executor = executor
        self.backend = backend
        self.max_in_flight = max(1, max_in_flight)
        self.timeout = timeout
        self.retries = retries
        self.function = function
        #: how many times the background travelled with a task (for benchmarks and tests)
        self.background_sends = 0

    def _submit(self, pallet: Pallet, job: _Pending) -> cf.Future[dict[str, Any]]:
        task = {
            "digest": pallet.digest,
            "background": pallet.background if job.with_background else None,
            "patch": {"name": job.patch.name, "values": list(job.patch.values), "operations": job.patch.operations},
            "backend": self.backend,
        }
        self.background_sends += job.with_background
        job.submitted = time.monotonic()
        return self.executor.submit(self.function, task)

    def scan(self, pallet: Pallet, patches: Sequence[str] | Sequence[Patch] | None = None) -> Iterator[PatchResult]:
        """Fit ``patches`` (names or `Patch` objects; default: all) and yield results as they finish."""
        selected = [p if isinstance(p, Patch) else pallet.patches[p] for p in patches] if patches else list(
            pallet.patches.values()
        )
        queue = deque(_Pending(p) for p in selected)
        # The first window carries the background: each worker then has it after its first
        # task. Later tasks travel light; one that lands on a new worker bounces once.
        for job in list(queue)[: self.max_in_flight]:
            job.with_background = True
        running: dict[cf.Future[dict[str, Any]], _Pending] = {}

        def fill() -> None:
            while queue and len(running) < self.max_in_flight:
                job = queue.popleft()
                running[self._submit(pallet, job)] = job

        try:
            fill()
            while running:
                wait_for = None
                if self.timeout is not None:
                    oldest = min(j.submitted for j in running.values())
                    wait_for = max(0.0, oldest + self.timeout - time.monotonic())
                finished, _ = cf.wait(running, timeout=wait_for, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    job = running.pop(fut)
                    result = self._collect(fut, job, queue)
                    if result is not None:
                        yield result
                if self.timeout is not None:
                    now = time.monotonic()
                    for fut, job in list(running.items()):
                        if now - job.submitted >= self.timeout:
                            fut.cancel()
                            del running[fut]
                            yield self._failed(job, f"TimeoutError: no result after {self.timeout:g} s")
                fill()
        finally:
            for fut in running:
                fut.cancel()

    def _collect(self, fut: cf.Future[dict[str, Any]], job: _Pending, queue: deque[_Pending]) -> PatchResult | None:
        try:
            record = fut.result()
        except Exception as err:  # noqa: BLE001 - lost worker or task: infrastructure
            if job.attempt <= self.retries:
                log.warning("patch %s: task lost (%s), resubmitting (attempt %d)", job.patch.name, err, job.attempt + 1)
                job.attempt += 1
                job.with_background = True
                queue.appendleft(job)
                return None
            return self._failed(job, f"{type(err).__name__}: {err}")
        if record.get("status") == NEED_BACKGROUND:
            job.with_background = True
            queue.appendleft(job)
            return None
        return PatchResult.model_validate(record)

    def _failed(self, job: _Pending, error: str) -> PatchResult:
        return PatchResult(patch=job.patch.name, values=list(job.patch.values), status="failed", error=error,
                           backend=self.backend)
