"""A Globus Compute endpoint's engine, driven here as a `concurrent.futures.Executor`.

On a real endpoint each task arrives from the Globus cloud as a messagepack ``Task``: the
SDK serialized the function (when it registered it) and the arguments (when it submitted
them) with its ``ComputeSerializer``, and the web service joined the two buffers. The
endpoint hands the packed bytes to its engine (``GlobusComputeEngine``: parsl's HTEX);
a worker unpacks them, runs the function and packs a ``Result``
(``globus_compute_endpoint.engines.helper.execute_task``), which travels back to the SDK.

`EngineExecutor` plays the SDK's and the cloud's part of that trip, byte for byte, so the
functions faasctl sends to endpoints (`faasctl.scan.client.FitClient`, `faasctl.check`) run here
exactly as they will on an endpoint, without the cloud: serialization, the worker-side
unpacking, the engine's error packing and the SDK's ``TaskExecutionFailed`` included.

Example:
    >>> from faasctl.scan.client import FitClient
    >>> from faasctl.executors.gc_engine import local_engine
    >>> with local_engine(workers=2) as ex:  # doctest: +SKIP
    ...     results = list(FitClient(ex).scan(pallet))
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from faasctl.executors.capacity import executor_capacity, htex_capacity
from faasctl.exceptions import ScanError

if TYPE_CHECKING:
    from globus_compute_endpoint.engines.base import GlobusComputeEngineBase
    from globus_compute_sdk.serialize import ComputeSerializer

__all__ = ["EngineExecutor", "local_engine", "pack_task", "unpack_result", "MAX_PAYLOAD"]

log = logging.getLogger(__name__)

#: The Globus Compute web service refuses a task whose packed payload is larger (10 MB).
MAX_PAYLOAD = 10 * 1024 * 1024


def pack_task(
    fn: Callable[..., Any],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    task_id: uuid.UUID | None = None,
    serializer: ComputeSerializer | None = None,
) -> bytes:
    """The bytes an endpoint's engine receives for ``fn(*args, **kwargs)``.

    The function buffer is packed as ``Client.register_function`` packs it, the arguments
    as ``Batch.add`` packs them, and the two are joined into a messagepack ``Task`` as the
    web service does.
    """
    from globus_compute_common import messagepack
    from globus_compute_common.messagepack.message_types import Task
    from globus_compute_sdk.serialize import ComputeSerializer

    serde = serializer or ComputeSerializer()
    function_buffer = serde.pack_buffers([serde.serialize(fn)])
    payload = serde.pack_buffers([serde.serialize(tuple(args)), serde.serialize(dict(kwargs or {}))])
    return bytes(messagepack.pack(Task(task_id=task_id or uuid.uuid4(), task_buffer=function_buffer + payload)))


def unpack_result(packed: bytes, serializer: ComputeSerializer | None = None) -> Any:
    """The function's return value from a packed ``Result``, as the SDK's Executor reads it.

    Raises:
        globus_compute_sdk.errors.TaskExecutionFailed: the task raised on the worker, or the
            engine lost it (the remote traceback is in ``remote_data``).
    """
    from globus_compute_common import messagepack
    from globus_compute_sdk.errors import TaskExecutionFailed
    from globus_compute_sdk.serialize import ComputeSerializer

    result = messagepack.unpack(packed)
    if result.is_error:
        raise TaskExecutionFailed(result.data)
    return (serializer or ComputeSerializer()).deserialize(result.data)


class EngineExecutor(cf.Executor):
    """A started Globus Compute engine as a `concurrent.futures.Executor`.

    Args:
        engine: a started ``GlobusComputeEngine`` (or any engine of
            ``globus_compute_endpoint.engines``: ``ProcessPoolEngine``, ``ThreadPoolEngine``).
        serializer: the SDK-side serializer (default: the SDK's defaults, as ``Executor``).
        max_payload: refuse a task whose packed size is over this many bytes, as the web
            service does (default `MAX_PAYLOAD`; ``None``: no limit).

    Futures are the SDK's ``ComputeFuture`` with a ``task_id``. They are marked running at
    submission: an engine cannot take a task back, so ``cancel()`` returns False.
    `shutdown` stops accepting tasks; whoever started the engine shuts it down.
    """

    def __init__(self, engine: GlobusComputeEngineBase, *, serializer: ComputeSerializer | None = None,
                 max_payload: int | None = MAX_PAYLOAD) -> None:
        from globus_compute_sdk.serialize import ComputeSerializer

        self.engine = engine
        self.max_payload = max_payload
        self.serializer = serializer or ComputeSerializer()
        self._outstanding: set[cf.Future[Any]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"EngineExecutor({type(self.engine).__name__}, endpoint_id={self.engine.endpoint_id})"

    @property
    def max_workers(self) -> int | None:
        """Worker slots of the engine, when its size is fixed (see `faasctl.executors.capacity.executor_capacity`)."""
        inner = getattr(self.engine, "executor", None)
        if inner is None:
            return None
        return executor_capacity(inner) or htex_capacity(inner)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        from globus_compute_endpoint.engines.base import GCFuture
        from globus_compute_sdk.sdk.asynchronous.compute_future import ComputeFuture

        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to an EngineExecutor after shutdown")
        task_id = uuid.uuid4()
        packed = pack_task(fn, args, kwargs, task_id=task_id, serializer=self.serializer)
        if self.max_payload is not None and len(packed) > self.max_payload:
            raise ValueError(f"task payload of {len(packed)} bytes is over the {self.max_payload} byte limit of Globus Compute")
        future: cf.Future[Any] = ComputeFuture(task_id=str(task_id))
        future.set_running_or_notify_cancel()
        gc_future = GCFuture(task_id)
        with self._lock:
            self._outstanding.add(future)
        gc_future.add_done_callback(lambda done: self._deliver(done, future))
        self.engine.submit(gc_future, packed, resource_specification={})
        return future

    def _deliver(self, done: cf.Future[Any], future: cf.Future[Any]) -> None:
        try:
            future.set_result(unpack_result(done.result(), self.serializer))
        except Exception as err:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(err)
        finally:
            with self._lock:
                self._outstanding.discard(future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            pending = list(self._outstanding)
        if wait and pending:
            cf.wait(pending)


@contextlib.contextmanager
def local_engine(
    workers: int = 2,
    *,
    run_dir: str | Path | None = None,
    endpoint_id: uuid.UUID | None = None,
    worker_init: str = "",
    encrypted: bool = True,
    container: Mapping[str, Any] | None = None,
) -> Iterator[EngineExecutor]:
    """A ``GlobusComputeEngine`` on this machine (parsl ``LocalProvider``, loopback), as an endpoint runs it.

    Args:
        workers: worker processes in the one block.
        run_dir: the endpoint's run folder (default: a temporary folder, removed after).
        endpoint_id: the id the engine reports (default: a fresh one).
        worker_init: shell commands run before the workers start, after faasctl's
            one-thread-per-worker exports.
        encrypted: CurveZMQ between interchange and workers, as endpoints default to.
        container: the engine's ``container_type``, ``container_uri`` and ``container_cmd_options``
            (as a rendered endpoint config has them): the worker pool runs in that image.

    Raises:
        ScanError: ``globus-compute-endpoint`` (which launches the interchange and workers)
            is not on PATH.
    """
    from globus_compute_endpoint.engines import GlobusComputeEngine

    from faasctl.executors.parsl import loopback_options, quiet_parsl

    if shutil.which("globus-compute-endpoint") is None:
        raise ScanError("globus-compute-endpoint is not on PATH: activate the environment faasctl is installed in")
    quiet_parsl()
    with contextlib.ExitStack() as stack:
        if run_dir is None:
            run_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="faasctl-gce-"))
        engine = GlobusComputeEngine(
            label="faasctl-local-gce",
            encrypted=encrypted,
            **loopback_options(workers, worker_init),
            job_status_kwargs={"max_idletime": 3600.0, "strategy_period": 1.0},
            **dict(container or {}),
        )
        engine.start(endpoint_id=endpoint_id or uuid.uuid4(), run_dir=str(run_dir))
        executor = EngineExecutor(engine)
        try:
            yield executor
        finally:
            executor.shutdown(wait=False)
            engine.shutdown()
