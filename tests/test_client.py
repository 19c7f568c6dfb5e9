"""FitClient on real executors: the local engine (a process pool, 2 workers), process and thread pools.

Task functions that misbehave (kill their worker, hang, answer nonsense) are defined here at
module level, so that the local engine's workers import them by reference (they get this
process's ``sys.path``).
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import functools
import multiprocessing
import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pyhf  # noqa: F401 - imported before test_process_pool forks its workers
import pytest

from conftest import assert_agrees, pyhf_reference
from faasctl.executors.capacity import executor_capacity
from faasctl.scan.client import FitClient
from faasctl.executors.local import local_executor
from faasctl.exceptions import PatchError
from faasctl.pallets.load import Pallet, load_pallet, workspace_digest
from faasctl.scan.results import PatchResult
from faasctl.scan.worker import NEED_BACKGROUND, fit_patch

TESTS = Path(__file__).resolve().parent
EXAMPLE = TESTS.parent / "examples" / "simple"


# --- reference values: plain pyhf, in this process ---------------------------------------------


@functools.cache
def simple_pallet() -> Pallet:
    return load_pallet(EXAMPLE)


@functools.cache
def other_pallet() -> Pallet:
    """examples/simple with more data observed in one bin: another background, another digest."""
    base = simple_pallet()
    background = copy.deepcopy(base.background)
    background["observations"][2]["data"][0] += 6
    names = list(base.patches)[:3]
    return Pallet(source="other", background=background, patches={n: base.patches[n] for n in names},
                  labels=base.labels, digest=workspace_digest(background))


def assert_matches_pyhf(results: list[PatchResult], pallet: Pallet, names: list[str] | None = None) -> None:
    names = list(pallet.patches) if names is None else names
    assert sorted(r.patch for r in results) == sorted(names), "one result per patch"
    for r in results:
        assert r.ok, f"{r.patch}: {r.error}"
        assert_agrees(r, pyhf_reference(pallet, r.patch), f"{r.patch} ({r.backend})")


# --- task functions for the failure paths --------------------------------------------------------


def die_once(marker: str, task: dict[str, Any]) -> dict[str, Any]:
    """Kill this worker process the first time any worker runs it (the marker does not exist yet)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return fit_patch(task)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def hang_on(slow: str, release: str, task: dict[str, Any]) -> dict[str, Any]:
    """Hang on patch ``slow`` until the file ``release`` appears (at most a minute)."""
    if task["patch"]["name"] == slow:
        deadline = time.monotonic() + 60
        while not Path(release).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return fit_patch(task)


def fake_fit(seconds: float, task: dict[str, Any]) -> dict[str, Any]:
    """A fit that takes ``seconds`` and answers fixed numbers: for client logic without pyhf."""
    time.sleep(seconds)
    patch = task["patch"]
    return {"patch": patch["name"], "values": patch["values"], "status": "ok", "cls_obs": 0.5,
            "cls_exp": [0.1, 0.2, 0.3, 0.4, 0.5], "worker": f"fake:{os.getpid()}", "backend": task["backend"]}


def bind(fn: Any, *args: Any) -> Any:
    """``functools.partial`` with the function's name: parsl's submit wants ``__name__``."""
    return functools.update_wrapper(functools.partial(fn, *args), fn)


def always_need_background(task: dict[str, Any]) -> dict[str, Any]:
    return {"patch": task["patch"]["name"], "status": NEED_BACKGROUND}


# --- any executor ------------------------------------------------------------------------------


def test_process_pool():
    pallet = simple_pallet()
    names = list(pallet.patches)[4:6]
    # spawn: forking this process is unsafe once JAX (imported at collection) runs its threads
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        client = FitClient(ex)
        results = list(client.scan(pallet, names))
    assert_matches_pyhf(results, pallet, names)
    assert client.background_sends == len(names)  # the seeds (2 x 2 workers) cover them all


def test_thread_pool_with_patch_objects():
    pallet = simple_pallet()
    patches = list(pallet.patches.values())[7:9]
    with cf.ThreadPoolExecutor(2) as ex:
        results = list(FitClient(ex).scan(pallet, patches))
    assert_matches_pyhf(results, pallet, [p.name for p in patches])


def test_queued_tasks_do_not_time_out():
    """One worker, four 0.6 s tasks, a 1 s timeout: each task runs well within it, though the
    last one finishes 2.4 s after it was submitted."""
    pallet = simple_pallet()
    names = list(pallet.patches)[:4]
    with cf.ThreadPoolExecutor(1) as ex:
        results = list(FitClient(ex, timeout=1.0, function=functools.partial(fake_fit, 0.6)).scan(pallet, names))
    assert [r.status for r in results] == ["ok"] * 4


def test_timeout_on_a_thread_pool():
    pallet = simple_pallet()
    names = list(pallet.patches)[:3]
    release = threading.Event()

    def slow_on_second(task: dict[str, Any]) -> dict[str, Any]:
        if task["patch"]["name"] == names[1]:
            release.wait(30)
        return fake_fit(0.0, task)

    with cf.ThreadPoolExecutor(2) as ex:
        try:
            results = {r.patch: r for r in FitClient(ex, timeout=0.5, function=slow_on_second).scan(pallet, names)}
        finally:
            release.set()
    assert results[names[1]].error == "TimeoutError: no result within 0.5 s"
    assert results[names[0]].ok and results[names[2]].ok


def test_lost_tasks_fail_after_the_retries():
    pallet = simple_pallet()
    calls = []

    def lost(task: dict[str, Any]) -> dict[str, Any]:
        calls.append(task["patch"]["name"])
        raise ConnectionError("manager lost")

    with cf.ThreadPoolExecutor(2) as ex:
        client = FitClient(ex, retries=2, function=lost)
        (result,) = client.scan(pallet, ["grid_300_0"])
    assert calls == ["grid_300_0"] * 3
    assert client.losses == 3
    assert result.status == "failed" and result.error == "task lost after 3 attempts: ConnectionError: manager lost"


def test_need_background_does_not_loop():
    """A worker that asks for the background even when it has been sent is a failure, not a loop."""
    pallet = simple_pallet()
    names = list(pallet.patches)[:2]
    with cf.ThreadPoolExecutor(2) as ex:
        client = FitClient(ex, background_seeds=0, function=always_need_background)
        results = list(client.scan(pallet, names))
    assert client.bounces == 2 and client.background_sends == 2
    assert all(r.status == "failed" and "asked for the background although the task carried it" in r.error
               for r in results)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"nonsense": 1}, "malformed result: ('patch',): Field required"),
        ({"patch": "grid_400_0", "status": "ok", "cls_obs": 0.5, "cls_exp": [0.5] * 5},
         "malformed result: the worker answered for patch 'grid_400_0'"),
        ({"patch": "grid_300_0", "status": "ok"}, "malformed result: status ok but no cls_obs"),
        ("not a record", "malformed result: expected a record, got 'not a record'"),
    ],
)
def test_malformed_answers_are_failed_results(answer, error):
    pallet = simple_pallet()
    with cf.ThreadPoolExecutor(1) as ex:
        (result,) = FitClient(ex, function=lambda task: answer).scan(pallet, ["grid_300_0"])
    assert result.status == "failed" and result.error == error


def test_stopping_early_cancels_queued_tasks():
    pallet = simple_pallet()
    calls = []

    def counted(task: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return fake_fit(0.2, task)

    with cf.ThreadPoolExecutor(1) as ex:
        for _ in FitClient(ex, function=counted).scan(pallet):
            break
    assert len(calls) <= 2 < len(pallet)


def test_selection():
    pallet = simple_pallet()
    with cf.ThreadPoolExecutor(1) as ex:
        client = FitClient(ex, function=functools.partial(fake_fit, 0.0))
        assert list(client.scan(pallet, [])) == []
        assert [r.patch for r in client.scan(pallet, ["grid_300_0", "grid_300_0"])] == ["grid_300_0"]
        with pytest.raises(PatchError, match="no patch named 'grid_301_0' \\(did you mean grid_"):
            list(client.scan(pallet, ["grid_301_0"]))
        assert client.submissions == 1


def test_arguments_are_checked():
    with cf.ThreadPoolExecutor(1) as ex, pytest.raises(ValueError, match="timeout must be positive"):
        FitClient(ex, timeout=0)


# --- the local engine --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ex():
    """The embedded engine with 2 workers (they import this module by reference)."""
    with local_executor(2) as ex:
        # wait for both workers, so background shipping is not skewed by a late worker
        list(cf.as_completed([ex.submit(time.sleep, 0.5) for _ in range(2)], timeout=600))
        yield ex


def test_local_engine_scan_matches_pyhf_and_ships_background_once_per_worker(local_ex):
    pallet = simple_pallet()
    client = FitClient(local_ex, backend="numpy")
    results = []
    for result in client.scan(pallet):  # a stream: each result as it finishes
        results.append(result)
    assert_matches_pyhf(results, pallet)
    assert {r.worker for r in results} and all(r.backend == "numpy" for r in results)
    # seeded to twice the 2 workers; a worker without it asks (a bounce) and gets it once
    assert executor_capacity(local_ex) == 2
    assert client.background_sends == 4 + client.bounces
    assert client.background_sends <= len(pallet) // 2
    assert client.submissions == len(pallet) + client.bounces


def test_batched_submission(local_ex):
    pallet = simple_pallet()
    client = FitClient(local_ex, batch_size=5)
    results = list(client.scan(pallet))
    assert_matches_pyhf(results, pallet)
    assert client.submissions == 3  # 5 + 5 + 2 patches
    assert client.background_sends == 3  # seeded: on the first patch of each batch


def test_wrong_pallet_bounces_for_its_background(local_ex):
    """Workers hold examples/simple's background; another pallet's tasks, sent without theirs, come back for it."""
    list(FitClient(local_ex).scan(simple_pallet(), list(simple_pallet().patches)[:2]))
    other = other_pallet()
    client = FitClient(local_ex, background_seeds=0)
    results = list(client.scan(other))
    assert_matches_pyhf(results, other)
    assert client.bounces >= 1 and client.background_sends == client.bounces
    # the answers are the other pallet's, not the cached background's
    for r in results:
        assert r.cls_obs != pytest.approx(pyhf_reference(simple_pallet(), r.patch)[0], rel=1e-3)


def test_lost_task_is_resubmitted(local_ex, tmp_path):
    pallet = simple_pallet()
    names = list(pallet.patches)[:3]
    marker = tmp_path / "killed-once"
    client = FitClient(local_ex, function=bind(die_once, str(marker)), retries=2)
    restarts = local_ex.restarts
    results = list(client.scan(pallet, names))
    assert marker.exists(), "a worker was killed"
    # the pool broke: every task in flight then was lost, and a new pool fitted them
    assert 1 <= client.losses <= len(names)
    assert local_ex.restarts == restarts + 1
    assert_matches_pyhf(results, pallet, names)


def test_results_record_where_their_time_went(local_ex):
    pallet = simple_pallet()
    names = list(pallet.patches)[:4]
    client = FitClient(local_ex, background_seeds=1)
    results = list(client.scan(pallet, names))
    assert_matches_pyhf(results, pallet, names)
    for r in results:
        t = r.timing
        # client clock around the worker's (one machine, one clock)
        assert t.submitted <= t.started <= t.finished <= t.received
        assert t.worker_start <= t.worker_ready <= t.started
        # the local engine's last worker (a worker per core) waited for the first task before its imports
        assert t.worker_released is None or t.worker_start <= t.worker_released <= t.worker_ready
        assert t.queue_wait == pytest.approx(t.started - t.submitted)
        assert t.overhead == pytest.approx((t.received - t.submitted) - (t.finished - t.started))
        assert r.fit_time <= t.finished - t.started
        assert t.bytes_received > 0 and isinstance(t.compiled, bool) and t.setup >= 0
    # the tasks that carried the background are the large ones: the seed, and one per bounce
    # (how many bounced depends on which worker each task landed on)
    background = len(pickle.dumps(pallet.background))
    assert sum(r.timing.bytes_sent > background for r in results) == client.background_sends >= 1


def test_timeout_records_a_hung_patch_as_failed(local_ex, tmp_path):
    pallet = simple_pallet()
    names = list(pallet.patches)[:3]
    release = tmp_path / "release"
    client = FitClient(local_ex, timeout=5, function=bind(hang_on, names[1], str(release)))
    try:
        start = time.monotonic()
        results = {r.patch: r for r in client.scan(pallet, names)}
        elapsed = time.monotonic() - start
    finally:
        release.touch()  # frees the worker for the next tests
    assert results[names[1]].status == "failed"
    assert results[names[1]].error.startswith("TimeoutError: no result within 5 s")
    assert_matches_pyhf([results[n] for n in (names[0], names[2])], pallet, [names[0], names[2]])
    assert elapsed < 30
