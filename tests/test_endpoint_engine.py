"""The Globus Compute path, without the Globus cloud.

* `EngineExecutor` drives the real ``GlobusComputeEngine`` (parsl HTEX, ``LocalProvider`` on
  127.0.0.1, CurveZMQ on): each call is packed as the endpoint receives it from the cloud
  (messagepack ``Task`` + ``ComputeSerializer`` buffers), run by the endpoint's own
  worker-side ``execute_task`` and unpacked as the SDK's ``Executor`` does.
* The cloud ``globus_compute_sdk.Executor`` itself needs the Globus services, which are not
  reachable from tests: `FakeComputeExecutor` is a TEST DOUBLE with its submit/Future contract
  (``ComputeFuture`` with a ``task_id``, ``TaskExecutionFailed`` for remote errors), whose
  cloud hop is replaced by handing the packed task straight to an endpoint engine.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Task
from globus_compute_endpoint.engines import ProcessPoolEngine
from globus_compute_endpoint.engines.base import GCFuture
from globus_compute_sdk.errors import TaskExecutionFailed
from globus_compute_sdk.sdk.asynchronous.compute_future import ComputeFuture
from globus_compute_sdk.serialize import ComputeSerializer

from faasctl.executors.capacity import executor_capacity
from faasctl.scan.client import FitClient
from faasctl.executors.gc_engine import EngineExecutor, local_engine, pack_task, unpack_result
from test_client import assert_matches_pyhf, bind, die_once, simple_pallet

TESTS = Path(__file__).resolve().parent


class FakeComputeExecutor(EngineExecutor):
    """TEST DOUBLE for ``globus_compute_sdk.Executor(endpoint_id=...)``: no Globus cloud.

    Same contract as the SDK's Executor: ``submit(fn, *args, **kwargs)`` returns a
    ``ComputeFuture`` with a ``task_id``; a remote error raises ``TaskExecutionFailed``;
    ``endpoint_id`` names the endpoint. The web service's hop is skipped: tasks are packed
    as the service hands them to the endpoint and go straight to ``engine``.
    """

    def __init__(self, endpoint_id: str, engine: object) -> None:
        super().__init__(engine)  # type: ignore[arg-type]
        self.endpoint_id = uuid.UUID(str(endpoint_id))


@contextlib.contextmanager
def fake_cloud(run_dir: Path, endpoint_id: str | None = None) -> Iterator[FakeComputeExecutor]:
    """The double over the endpoint package's ``ProcessPoolEngine`` (cheap to start)."""
    endpoint = uuid.UUID(endpoint_id) if endpoint_id else uuid.uuid4()
    # spawn: JAX's threads are already running in this process, and a forked child can hang on their locks
    engine = ProcessPoolEngine(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
    engine.start(endpoint_id=endpoint, run_dir=str(run_dir))
    try:
        yield FakeComputeExecutor(str(endpoint), engine)
    finally:
        engine.shutdown(block=True)


@pytest.fixture(scope="module")
def gce():
    """The real GlobusComputeEngine, 2 workers that can import the test modules."""
    with local_engine(2, worker_init=f"export PYTHONPATH={TESTS}:${{PYTHONPATH:-}}") as ex:
        yield ex


def test_pack_task_is_what_the_endpoint_unpacks():
    task_id = uuid.uuid4()
    packed = pack_task(divmod, (7, 2), {}, task_id=task_id)
    task = messagepack.unpack(packed)
    assert isinstance(task, Task) and task.task_id == task_id
    # the endpoint's worker unpacks exactly three buffers: function, args, kwargs
    fn, args, kwargs = ComputeSerializer().unpack_and_deserialize(task.task_buffer)
    assert fn(*args, **kwargs) == (3, 1)


def test_scan_on_globus_compute_engine_matches_pyhf(gce):
    pallet = simple_pallet()
    client = FitClient(gce)
    results = list(client.scan(pallet))
    assert_matches_pyhf(results, pallet)
    assert executor_capacity(gce) == 2
    assert client.background_sends == 4 + client.bounces


def test_futures_and_errors_as_the_sdk_gives_them(gce):
    future = gce.submit(divmod, 7, 2)
    assert isinstance(future, ComputeFuture) and uuid.UUID(future.task_id)
    assert future.result(timeout=120) == (3, 1)
    assert not future.cancel(), "an engine cannot take a task back"
    failing = gce.submit(divmod, 1, 0)
    with pytest.raises(TaskExecutionFailed) as err:
        failing.result(timeout=120)
    assert "ZeroDivisionError" in err.value.remote_data


def test_lost_worker_is_resubmitted(gce, tmp_path):
    """The engine packs a killed worker's task as an error Result (WorkerLost); the client retries it."""
    pallet = simple_pallet()
    names = list(pallet.patches)[:2]
    client = FitClient(gce, function=bind(die_once, str(tmp_path / "killed-once")))
    results = list(client.scan(pallet, names))
    assert client.losses == 1
    assert_matches_pyhf(results, pallet, names)


def test_unpack_result_raises_the_remote_error(tmp_path):
    """An engine answers with a packed Result, an error one when the function raised."""
    with fake_cloud(tmp_path) as ex:
        future = GCFuture(uuid.uuid4())
        ex.engine.submit(future, pack_task(int, ("x",)), resource_specification={})
        packed = future.result(timeout=60)
    assert messagepack.unpack(packed).is_error
    with pytest.raises(TaskExecutionFailed, match="invalid literal for int"):
        unpack_result(packed)


def test_fit_client_on_the_cloud_executor_double(tmp_path):
    pallet = simple_pallet()
    names = list(pallet.patches)[:3]
    with fake_cloud(tmp_path) as ex:
        client = FitClient(ex)
        results = list(client.scan(pallet, names))
        ex.shutdown()
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(divmod, 1, 1)
    assert_matches_pyhf(results, pallet, names)
