"""The worker task function, called in-process."""

from __future__ import annotations

import collections
import concurrent.futures as cf

import pytest

from faasctl.scan import worker
from faasctl.study import pyhf_hypotest
from faasctl.pallets.load import load_pallet


@pytest.fixture
def pallet(example_pallet):
    return load_pallet(example_pallet)


def task(pallet, name, *, with_background):
    patch = pallet.patches[name]
    return {"digest": pallet.digest, "background": pallet.background if with_background else None, "backend": "numpy",
            "patch": {"name": patch.name, "values": list(patch.values), "operations": patch.operations}}


def test_background_is_cached_per_worker(pallet, monkeypatch):
    monkeypatch.setattr(worker, "_BACKGROUNDS", collections.OrderedDict())
    assert worker.fit_patch(task(pallet, "grid_500_0", with_background=False))["status"] == worker.NEED_BACKGROUND
    first = worker.fit_patch(task(pallet, "grid_500_0", with_background=True))
    second = worker.fit_patch(task(pallet, "grid_500_100", with_background=False))  # served from the cache
    assert first["status"] == second["status"] == "ok"
    obs, exp = pyhf_hypotest(pallet.workspace_spec(pallet.patches["grid_500_100"]))
    assert second["cls_obs"] == pytest.approx(obs, rel=1e-9) and second["cls_exp"] == pytest.approx(exp, rel=1e-9)


def test_background_travels_pickled_once(pallet, monkeypatch):
    """FitClient pickles the background once for all the tasks that carry it; a worker unpickles the
    first copy it gets and keeps it (a later copy is not unpickled)."""
    import pickle

    from faasctl.scan.client import FitClient

    monkeypatch.setattr(worker, "_BACKGROUNDS", collections.OrderedDict())
    sent = []
    with cf.ThreadPoolExecutor(2) as ex:
        client = FitClient(ex, backend="numpy", check_stack=False, background_seeds=3,
                           function=lambda t: sent.append(t) or worker.fit_patch(t))
        results = list(client.scan(pallet, ["grid_500_0", "grid_500_100", "grid_600_0", "grid_600_100"]))
    assert all(r.ok for r in results)
    blobs = [t["background"] for t in sent if t["background"] is not None]
    assert len(blobs) == 3 and all(b is blobs[0] for b in blobs) and pickle.loads(blobs[0]) == pallet.background
    kept = worker._BACKGROUNDS[pallet.digest]
    worker.fit_patch({**sent[0], "background": b"not a pickle"})  # kept: the copy is not read
    assert worker._BACKGROUNDS[pallet.digest] is kept


def test_worker_keeps_the_backgrounds_used_last(pallet, monkeypatch):
    """A long-lived worker keeps MAX_BACKGROUNDS backgrounds, dropping the least recently used."""
    monkeypatch.setattr(worker, "_BACKGROUNDS", collections.OrderedDict())
    monkeypatch.setattr(worker, "MAX_BACKGROUNDS", 2)

    def send(digest, with_background):
        t = task(pallet, "grid_500_0", with_background=with_background)
        return worker.fit_patch({**t, "digest": digest})["status"]

    assert send("a", True) == send("b", True) == "ok"
    assert send("a", False) == "ok"  # a is now the most recently used
    assert send("c", True) == "ok"  # drops b
    assert send("b", False) == worker.NEED_BACKGROUND
    assert send("a", False) == send("c", False) == "ok"
    assert list(worker._BACKGROUNDS) == ["a", "c"]


def test_fit_errors_become_failed_records(pallet, monkeypatch):
    monkeypatch.setattr(worker, "_BACKGROUNDS", collections.OrderedDict())
    bad = task(pallet, "grid_500_0", with_background=True)
    bad["patch"]["operations"] = [{"op": "remove", "path": "/channels/7"}]
    record = worker.fit_patch(bad)
    assert record["status"] == "failed" and "does not apply" in record["error"]
    assert record["fit_time"] >= 0 and record["worker"]


def test_worker_info_names_versions():
    info = worker.worker_info()
    assert info["pyhf"] == "0.7.6" and info["numpy"] and info["worker"]


