"""The analyst's API: send a pallet's patch fits to any executor and stream the results.

Example:
    >>> from faasctl.scan.client import FitClient
    >>> from faasctl.executors.local import local_executor
    >>> from faasctl.pallets.load import load_pallet
    >>> pallet = load_pallet("examples/simple")  # doctest: +SKIP
    >>> with local_executor(workers=2) as ex:  # doctest: +SKIP
    ...     for result in FitClient(ex).scan(pallet):
    ...         print(result.patch, result.cls_obs)

The executor is any `concurrent.futures.Executor` whose workers have faasctl installed:
Globus Compute's ``Executor(endpoint_id=...)``, the embedded parsl engine
(`faasctl.executors.local.local_executor`), a direct-mode site engine
(``faasctl.executors.site.site_executor``), a Globus Compute engine driven locally
(`faasctl.executors.gc_engine.EngineExecutor`) or a plain thread or process pool.

How a scan travels:

* A *window* of at most ``max_in_flight`` tasks is in flight; the next task is submitted as
  soon as one finishes, and results are yielded in the order they finish.
* The background workspace (often MB-sized) is shipped once per worker, not once per patch:
  the first few tasks carry it (twice the executor's worker count when it says, else the
  whole first window) and workers keep it (`faasctl.scan.worker`). A task that lands on a worker
  without it comes back as ``need-background`` and is resent with it (a *bounce*).
* A task lost to infrastructure (worker killed, block cancelled, node lost: the future
  raises) is resubmitted up to ``retries`` times. A fit that fails is a result, not a loss:
  the worker returns it as ``status="failed"`` and it is not retried.
* ``timeout`` bounds how long a patch may take. Tasks queued behind busy workers are not
  running yet, so a task's clock starts at its submission or at the latest completion of
  any task, whichever is later: a task times out when it has been in flight ``timeout``
  seconds (``timeout * batch_size`` for a batch) with no task finishing meanwhile.
  Timed-out tasks cannot be stopped on most executors; they are abandoned and recorded as
  failed.
* Every result records where its time went (`faasctl.scan.results.TaskTiming`): when its task
  was submitted and its result received (client clock), when it started and finished (worker
  clock), the queue wait, and the pickled size of the task and of its result.
* A background too large for a task (over `faasctl.scan.staging.INLINE_LIMIT`, under Globus
  Compute's 10 MB payload cap) is *staged* instead: sent once in chunks that workers write into
  a cache folder keyed by its digest, from which each worker assembles it once
  (`faasctl.scan.staging`). Tasks then carry only the digest; a worker whose node lacks a chunk
  asks for the background, and the chunks are sent again (up to ``retries`` times per patch).
* With ``batch_size`` > 1 each task fits several patches in turn on one worker: fewer round
  trips for backends whose fits take less time than a round trip (the compiled jax backend on
  a remote endpoint). The default, one patch per task, balances load best.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import pickle
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from pydantic import ValidationError

from faasctl.exceptions import ScanError, error_text
from faasctl.study import DEFAULT_BACKEND, DEFAULT_TIMEOUT
from faasctl.executors.capacity import executor_capacity
from faasctl.pallets.load import Pallet, Patch
from faasctl.scan.results import PatchResult, TaskTiming
from faasctl.scan.staging import INLINE_LIMIT, STAGE_ENV, chunks, needs_staging, stage_chunk
from faasctl.scan.worker import NEED_BACKGROUND, fit_patch

__all__ = ["FitClient", "TaskFunction", "run_batch"]

log = logging.getLogger(__name__)


#: What runs on a worker: a task dict in, a result record (`faasctl.scan.results.PatchResult`) out.
TaskFunction = Callable[[dict[str, Any]], dict[str, Any]]


def run_batch(function: TaskFunction, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``function`` on each task in turn: the task function of batched submission.

    Only the first task of a batch carries the background; ``fit_patch`` keeps it for the
    others, which run on the same worker.
    """
    return [function(task) for task in tasks]


@dataclass(eq=False)
class _Job:
    """One patch on its way through the executor."""

    patch: Patch
    attempt: int = 1  # submissions after losses; bounces do not count
    needs_background: bool = False  # the next submission must carry the background
    restages: int = 0  # times a worker lacked the staged background's chunks
    needs_chunks: bool = False  # a worker lacked them: stage them again before the next submission


@dataclass(eq=False)
class _Task:
    """One executor submission: a patch, or a batch of patches."""

    jobs: list[_Job]
    background: bool
    batched: bool
    submitted: float = field(default_factory=time.monotonic)
    submitted_at: float = 0.0  # time.time(), for the results' timing
    sizes: list[int] = field(default_factory=list)  # pickled size of each job's payload


class FitClient:
    """Submit patch fits to an executor and stream the results as they finish.

    Args:
        executor: any `concurrent.futures.Executor` whose workers have faasctl installed.
        backend: the fit backend on the workers (``auto``, the default: compiled jax with a per-patch
            fallback to plain pyhf; ``numpy``: plain pyhf; ``jax``).
        max_in_flight: tasks submitted but not finished at once; a window keeps memory
            flat for large pallets and lets a slow worker's backlog drain elsewhere.
        timeout: seconds a patch may take, counted as described in the module docstring;
            a patch over it is recorded as failed (default `DEFAULT_TIMEOUT`, 10 min; ``None``: no limit).
        retries: how often a task lost to infrastructure (worker died, block cancelled)
            is resubmitted. Fits that fail are results, and are not retried.
        batch_size: patches per task (default 1). Each batch runs on one worker in turn.
        background_seeds: how many of the first tasks carry the background (default:
            twice the executor's worker count when `executor_capacity` knows it, else
            ``max_in_flight``). ``0`` ships it only when a worker asks.
        function: the task function (tests and health checks swap it); it takes a task
            dict and returns a record, or ``{"status": "need-background"}``, like
            `faasctl.scan.worker.fit_patch`.
        check_stack: before the first scan, ask a worker for its versions and refuse to fit
            where they differ from this process's in what results depend on
            (`faasctl.stack.compare`: `StackMismatch`); other differences are logged. Default:
            unless the executor's workers run this very interpreter (``executor.same_stack``,
            as the local engine's do): their versions are this process's.
        inline_limit: pickled background size (bytes) above which it is staged in chunks
            rather than carried by tasks (`faasctl.scan.staging`).

    Attributes:
        background_sends: tasks that carried the background, since the client was made.
        bounces: tasks that came back asking for the background.
        submissions: tasks submitted to the executor (resubmissions included).
        losses: tasks lost to infrastructure (each retried or recorded as failed).
        staged_chunks: chunk tasks sent to stage large backgrounds.
    """

    def __init__(
        self,
        executor: cf.Executor,
        *,
        backend: str = DEFAULT_BACKEND,
        max_in_flight: int = 64,
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = 2,
        batch_size: int = 1,
        background_seeds: int | None = None,
        function: TaskFunction = fit_patch,
        check_stack: bool | None = None,
        inline_limit: int = INLINE_LIMIT,
    ) -> None:
        if timeout is not None and not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be positive finite seconds or None, not {timeout!r}")
        self.executor = executor
        self.backend = backend
        self.max_in_flight = max(1, max_in_flight)
        self.timeout = timeout
        self.retries = max(0, retries)
        self.batch_size = max(1, batch_size)
        self.background_seeds = background_seeds
        self.function = function
        self.check_stack = check_stack if check_stack is not None else not getattr(executor, "same_stack", False)
        self.inline_limit = inline_limit
        self._staged: dict[str, int] = {}  # background digest -> its number of chunks
        self._background_blob: tuple[str | None, bytes] = (None, b"")  # the last background pickled, by digest
        self.staged_chunks = 0
        self.background_sends = 0
        self.bounces = 0
        self.submissions = 0
        self.losses = 0

    def __repr__(self) -> str:
        return (
            f"FitClient({self.executor!r}, backend={self.backend!r}, max_in_flight={self.max_in_flight}, "
            f"timeout={self.timeout!r}, retries={self.retries}, batch_size={self.batch_size})"
        )

    # --- public ------------------------------------------------------------------------------

    def scan(self, pallet: Pallet, patches: Sequence[str | Patch] | None = None) -> Iterator[PatchResult]:
        """Fit ``patches`` and yield one result per patch as each finishes.

        Args:
            pallet: the pallet whose background the patches apply to.
            patches: patch names or `Patch` objects (default: every patch of the pallet; an
                empty sequence fits nothing).

        Yields:
            A `PatchResult` per patch, in the order they finish: ``ok``, or ``failed`` with
            the error (fit error, timeout, or loss after ``retries`` resubmissions).

        Raises:
            PatchError: a name is not in the pallet.
            ScanError: the executor refuses tasks (shut down, not connected).
            StackMismatch: the workers run another Python minor, dill, pyhf or faasctl (``check_stack``).
        """
        queue = deque(_Job(p) for p in _select(pallet, patches))
        if self.check_stack and queue:
            from faasctl.stack import check_worker

            check_worker(self.executor, self.timeout)
            self.check_stack = False  # once per client
        staged = bool(queue) and needs_staging(pallet.background, self.inline_limit)
        if staged:
            self._stage(pallet)
        seeds = 0 if staged else self._seeds()
        running: dict[cf.Future[Any], _Task] = {}
        progress = time.monotonic()  # the latest completion of any task

        def fill() -> None:
            nonlocal seeds
            while queue and len(running) < self.max_in_flight:
                jobs = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
                carry = seeds > 0 or any(j.needs_background for j in jobs)
                seeds -= seeds > 0
                if staged:  # workers read the background from the staged chunks, never from the task
                    carry = False
                    if any(j.needs_chunks for j in jobs):  # a worker's node lacked some: send them again
                        self._stage(pallet)
                        for job in jobs:
                            job.needs_chunks = False
                task = _Task(jobs, background=carry, batched=self.batch_size > 1)
                running[self._submit(pallet, task)] = task

        try:
            fill()
            while running:
                wait_for = None
                if self.timeout is not None:
                    deadline = min(self._deadline(t, progress) for t in running.values())
                    wait_for = max(0.0, deadline - time.monotonic())
                finished, _ = cf.wait(running, timeout=wait_for, return_when=cf.FIRST_COMPLETED)
                if finished:
                    progress = time.monotonic()
                for fut in finished:
                    yield from self._collect(fut, running.pop(fut), queue)
                if self.timeout is not None:
                    now = time.monotonic()
                    for fut, task in list(running.items()):
                        if now >= self._deadline(task, progress):
                            del running[fut]
                            _cancel(fut)
                            limit = self.timeout * len(task.jobs)
                            for job in task.jobs:
                                yield self._failed(job, f"TimeoutError: no result within {limit:g} s")
                fill()
        finally:
            # the consumer stopped early, or an error: do not leave work queued
            for fut in running:
                _cancel(fut)

    # --- internals ---------------------------------------------------------------------------

    def _stage(self, pallet: Pallet) -> None:
        """Send ``pallet``'s background in chunk tasks (`faasctl.scan.staging.stage_chunk`), and wait for them."""
        pieces = chunks(pallet.background)
        try:
            futures = [self.executor.submit(stage_chunk, pallet.digest, i, len(pieces), piece) for i, piece in enumerate(pieces)]
        except Exception as err:  # noqa: BLE001 - shut down, not connected, refused
            raise ScanError(f"{type(self.executor).__name__} refused a background chunk: {error_text(err)}") from err
        self.staged_chunks += len(pieces)
        done, pending = cf.wait(futures, timeout=self.timeout)
        failed = [f for f in done if f.exception() is not None]
        if pending or failed:
            why = error_text(failed[0].exception()) if failed else f"no answer within {self.timeout:g} s"  # type: ignore[arg-type]
            raise ScanError(f"staging the background ({len(pieces)} chunks of {pallet.digest[:12]}…) failed: {why}")
        self._staged[pallet.digest] = len(pieces)
        log.info("background %s… staged in %d chunks", pallet.digest[:12], len(pieces))

    def _seeds(self) -> int:
        if self.background_seeds is not None:
            return max(0, self.background_seeds)
        workers = executor_capacity(self.executor)
        return min(self.max_in_flight, 2 * workers) if workers else self.max_in_flight

    def _deadline(self, task: _Task, progress: float) -> float:
        assert self.timeout is not None
        return max(task.submitted, progress) + self.timeout * len(task.jobs)

    def _pickled_background(self, pallet: Pallet) -> bytes:
        """The background as tasks carry it: pickled once per client, not once per task and pickler.

        1Lbb's takes 46 ms to pickle, and the first tasks, which carry it, were pickled twice
        each (their size, then the executor's own pickling) as the workers waited for them.
        """
        if self._background_blob[0] != pallet.digest:
            self._background_blob = (pallet.digest, pickle.dumps(pallet.background, protocol=pickle.HIGHEST_PROTOCOL))
        return self._background_blob[1]

    def _submit(self, pallet: Pallet, task: _Task) -> cf.Future[Any]:
        payloads = [
            {
                "digest": pallet.digest,
                "background": self._pickled_background(pallet) if task.background and i == 0 else None,
                "staged": self._staged.get(pallet.digest),
                "patch": {"name": j.patch.name, "values": list(j.patch.values), "packed": j.patch.packed()},
                "backend": self.backend,
            }
            for i, j in enumerate(task.jobs)
        ]
        task.sizes = [len(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)) for p in payloads]
        task.submitted_at = time.time()  # before: a worker may start it before submit returns
        try:
            if task.batched:
                fut = self.executor.submit(run_batch, self.function, payloads)
            else:
                fut = self.executor.submit(self.function, payloads[0])
        except Exception as err:  # noqa: BLE001 - shut down, not connected, refused
            raise ScanError(f"{type(self.executor).__name__} refused a task: {error_text(err)}") from err
        self.submissions += 1
        self.background_sends += task.background
        for job in task.jobs:
            job.needs_background = False
        task.submitted = time.monotonic()
        return fut

    def _collect(self, fut: cf.Future[Any], task: _Task, queue: deque[_Job]) -> Iterator[PatchResult]:
        try:
            output = fut.result()
        except Exception as err:  # noqa: BLE001 - lost worker or task: infrastructure
            yield from self._lost(task, err, queue)
            return
        records = output if task.batched else [output]
        if not isinstance(records, list) or len(records) != len(task.jobs):
            for job in task.jobs:
                yield self._failed(job, f"malformed result: expected {len(task.jobs)} record(s), got {output!r:.200}")
            return
        received = time.time()
        for i, (job, record) in enumerate(zip(task.jobs, records)):
            result = self._result(job, record, task.background and i == 0, queue)
            if result is not None:
                _add_timing(result, record, task, i, received)
                yield result

    def _result(self, job: _Job, record: Any, carried: bool, queue: deque[_Job]) -> PatchResult | None:
        if not isinstance(record, dict):
            return self._failed(job, f"malformed result: expected a record, got {record!r:.200}")
        if record.get("status") == NEED_BACKGROUND:
            if record.get("staged"):
                job.restages += 1
                job.needs_chunks = True
                if job.restages > self.retries:
                    return self._failed(job, f"worker {record.get('worker') or '(unnamed)'} has not all chunks of the staged "
                                             f"background after {job.restages} stagings: its node's cache is not where the "
                                             f"chunks landed (set {STAGE_ENV} on the workers to a folder all nodes share)")
            elif carried:
                # the task carried it: resending would loop
                return self._failed(job, f"worker {record.get('worker') or '(unnamed)'} asked for the background although the "
                                         "task carried it (does the task function keep it?)")
            self.bounces += 1
            job.needs_background = True
            queue.appendleft(job)
            return None
        try:
            result = PatchResult.model_validate(record)
        except ValidationError as err:
            return self._failed(job, f"malformed result: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}")
        if result.patch != job.patch.name:
            return self._failed(job, f"malformed result: the worker answered for patch {result.patch!r}")
        return result

    def _lost(self, task: _Task, err: BaseException, queue: deque[_Job]) -> Iterator[PatchResult]:
        self.losses += 1
        reason = error_text(err)
        for job in reversed(task.jobs):
            if job.attempt <= self.retries:
                log.warning("patch %s: task lost (%s); resubmitting (attempt %d of %d)",
                            job.patch.name, reason, job.attempt + 1, self.retries + 1)
                job.attempt += 1
                job.needs_background = True  # it may land on a new worker
                queue.appendleft(job)
            else:
                tries = f" after {job.attempt} attempts" if job.attempt > 1 else ""
                yield self._failed(job, f"task lost{tries}: {reason}")

    def _failed(self, job: _Job, error: str) -> PatchResult:
        return PatchResult(patch=job.patch.name, values=list(job.patch.values), status="failed", error=error,
                           backend=self.backend)


def _add_timing(result: PatchResult, record: dict[str, Any], task: _Task, index: int, received: float) -> None:
    """The client's side of a result's timing, beside the worker's."""
    timing = result.timing or TaskTiming()
    timing.submitted, timing.received = task.submitted_at, received
    timing.bytes_sent = task.sizes[index] if index < len(task.sizes) else None
    timing.bytes_received = len(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
    if timing.started is not None:
        timing.queue_wait = timing.started - task.submitted_at
        if timing.finished is not None:
            timing.overhead = (received - task.submitted_at) - (timing.finished - timing.started)
    result.timing = timing


def _select(pallet: Pallet, patches: Sequence[str | Patch] | None) -> list[Patch]:
    if patches is None:
        return list(pallet.patches.values())
    names = [p for p in patches if not isinstance(p, Patch)]
    if names:
        pallet.select(names)  # raises PatchError, with suggestions, for unknown names
    chosen = [p if isinstance(p, Patch) else pallet.patches[p] for p in patches]
    return list({p.name: p for p in chosen}.values())


def _cancel(fut: cf.Future[Any]) -> None:
    # parsl's AppFuture.cancel raises NotImplementedError; a running task cannot be
    # stopped on most executors anyway: the task is abandoned.
    try:
        fut.cancel()
    except Exception:  # noqa: BLE001
        pass
