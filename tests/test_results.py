"""ResultStore: durable O(1) records in SQLite, exported files, resume bookkeeping, the folder's lock."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from faasctl.exceptions import ResultsError
from faasctl.pallets.load import pack_operations
from faasctl.scan import results as results_module
from faasctl.scan.results import PatchResult, ResultStore, load_results, patch_digest

PALLET = {"source": "p", "digest": "abc", "labels": ["m1", "m2"], "region": None}
SETTINGS = {"backend": "numpy", "faasctl": "0.1.0", "pyhf": "0.7.6", "test": {"poi": 1.0}}


def ok(name: str, values=(1.0, 2.0), **extra) -> PatchResult:
    record = {"patch": name, "values": list(values), "status": "ok", "cls_obs": 0.5, "cls_exp": [0.1, 0.2, 0.3, 0.4, 0.5],
              "fit_time": 1.0, "worker": "h:1", "backend": "numpy"}
    return PatchResult(**{**record, **extra})


def test_each_result_is_durable_at_once_and_exported(tmp_path):
    out = tmp_path / "out"
    with ResultStore(out, PALLET, export_every=math.inf) as store:
        store.add(ok("a"))
        assert list(load_results(out)) == ["a"]  # in the database, read by another connection
        store.add(PatchResult(patch="b", values=[3, 4], status="failed", error="boom"))
        assert [r.status for r in load_results(out).values()] == ["ok", "failed"]
        store.add(ok("a", values=(1.0, 2.0), worker="h:2"))  # a refit replaces the record in place
    doc = json.loads(store.json_path.read_text())
    assert [(r["patch"], r["status"], r["worker"]) for r in doc["results"]] == [("a", "ok", "h:2"), ("b", "failed", None)]
    assert doc["schema"] == "faasctl/results/1.0.0"
    rows = store.csv_path.read_text().splitlines()
    assert rows[0].split(",")[:4] == ["patch", "m1", "m2", "status"] and rows[2].startswith("b,3.0,4.0,failed")
    assert sorted(p.name for p in out.iterdir()) == [".faasctl.lock", "results.csv", "results.json", "results.sqlite"]


def test_files_are_exported_periodically(tmp_path):
    with ResultStore(tmp_path, PALLET, export_every=0) as store:
        store.add(ok("a"))
        assert [r["patch"] for r in json.loads(store.json_path.read_text())["results"]] == ["a"]


def _written() -> int:
    """Bytes this process has passed to write()/pwrite() so far (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def test_cost_of_a_result_does_not_grow_with_the_results_held(tmp_path):
    """The old store rewrote the whole results.json/csv per result: bytes per add grew linearly."""
    with ResultStore(tmp_path, PALLET, export_every=math.inf) as store:
        def cost(first: int, n: int = 100) -> int:
            before = _written()
            for i in range(first, first + n):
                store.add(ok(f"p{i}", values=(i, i)))
            return _written() - before

        early = cost(0)
        for i in range(100, 1000):
            store.add(ok(f"p{i}", values=(i, i)))
        late = cost(1000)
    assert late < 2 * early, (early, late)


def test_exports_keep_the_bytes_per_result_flat(tmp_path, monkeypatch):
    """Exports while a scan runs rewrite both files: at a fixed pace their bytes would grow with the results."""
    clock = iter(range(10**9))  # a result a second, each clock reading one second later
    monkeypatch.setattr(results_module, "time", SimpleNamespace(monotonic=lambda: float(next(clock))))
    with ResultStore(tmp_path, PALLET, export_every=5) as store:
        def per_result(first: int, n: int) -> float:
            before = _written()
            for i in range(first, first + n):
                store.add(ok(f"p{i}", values=(i, i)))
            return (_written() - before) / n

        early = per_result(0, 200)
        late = per_result(200, 1800)
        assert json.loads(store.json_path.read_text())["results"], "exported while results arrive"
    assert late < 2 * early, (early, late)


def test_resume_skips_only_successful(tmp_path):
    with ResultStore(tmp_path, PALLET) as store:
        store.add(ok("a"))
        store.add(PatchResult(patch="b", status="failed", error="x"))
    with ResultStore(tmp_path, PALLET) as again:
        assert again.done() == {"a"}
    with ResultStore(tmp_path, PALLET, force=True) as forced:
        assert forced.done() == set()
    assert json.loads((tmp_path / "results.json").read_text())["results"] == []


def test_patch_digest_is_the_canonical_json_of_values_and_operations():
    """The digest is unchanged since results first recorded it (else every resume would refit
    everything once): the sha256 of ``{"values", "operations"}`` as sorted, compact JSON."""
    import hashlib

    operations = [{"path": "/x", "op": "add", "value": {"b": [1.5, 2.0], "a": "é"}}]
    canonical = json.dumps({"values": [300.0, 1e-3], "operations": operations}, sort_keys=True, separators=(",", ":"))
    assert patch_digest((300.0, 1e-3), pack_operations(operations)) == hashlib.sha256(canonical.encode()).hexdigest()


def test_changed_patch_or_settings_is_stale(tmp_path):
    digest = patch_digest([1.0, 2.0], pack_operations([{"op": "add", "path": "/x", "value": 1}]))
    with ResultStore(tmp_path, PALLET, settings=SETTINGS) as store:
        store.add(ok("a", digest=digest))
        assert store.stale("a", digest) is None
        assert store.stale("a", patch_digest([1.0, 2.0], pack_operations([{"op": "add", "path": "/x", "value": 2}]))) == "patch content"
    with ResultStore(tmp_path, PALLET, settings={**SETTINGS, "backend": "jax"}) as other:
        assert other.stale("a", digest) == "settings: backend 'numpy' → 'jax'"
    doc = json.loads((tmp_path / "results.json").read_text())
    record = doc["results"][0]
    assert record["digest"] == digest and doc["settings"][record["settings"]] == SETTINGS


def test_results_json_of_an_older_run_is_imported(tmp_path):
    old = {"schema": "faasctl/results/1.0.0", "pallet": PALLET,
           "results": [ok("a").model_dump(exclude={"digest", "settings"}), {"patch": "b", "status": "failed"}]}
    (tmp_path / "results.json").write_text(json.dumps(old))
    with ResultStore(tmp_path, PALLET, settings=SETTINGS) as store:
        assert store.done() == {"a"}
        assert store.stale("a", "any digest") is None  # recorded before digests were: trusted
    assert set(load_results(tmp_path)) == {"a", "b"}


def no_sensitivity(name: str) -> PatchResult:
    return PatchResult(patch=name, values=[5.0, 6.0], status="no_sensitivity", fit_time=1.0, worker="h:1", backend="jax",
                       error="no sensitivity: q_mu,A <= 0.002 (mu = 1 barely changes the expected data)")


def test_no_sensitivity_is_a_result_without_cls(tmp_path):
    """Kept on resume (it is an answer, not a failure), with no CLs, in the JSON and the CSV alike."""
    with ResultStore(tmp_path, PALLET) as store:
        store.add(no_sensitivity("c"))
        store.add(PatchResult(patch="f", status="failed", error="x"))
    with ResultStore(tmp_path, PALLET) as again:
        assert again.done() == {"c"}
    (record,) = [r for r in json.loads(store.json_path.read_text())["results"] if r["patch"] == "c"]
    assert record["status"] == "no_sensitivity" and record["cls_obs"] is None and "q_mu,A" in record["error"]
    row = next(csv.DictReader(store.csv_path.read_text().splitlines()))
    assert (row["patch"], row["status"], row["cls_obs"], row["cls_exp"], row["backend"]) == ("c", "no_sensitivity", "", "", "jax")
    assert row["error"] == record["error"]
    with pytest.raises(ValueError, match="no CLs"):
        PatchResult(patch="c", status="no_sensitivity", cls_obs=0.9998, cls_exp=[1.0] * 5, error="no sensitivity")
    # an ok without CLs is not trusted: a failed result, refitted on resume
    malformed = PatchResult(patch="c", status="ok")
    assert malformed.failed and malformed.error == "malformed result: status ok but no cls_obs"


def test_refuses_results_of_another_pallet(tmp_path):
    with ResultStore(tmp_path, PALLET) as store:
        store.add(ok("a"))
    with pytest.raises(ResultsError, match="another pallet.*force=True") as err:
        ResultStore(tmp_path, {**PALLET, "digest": "def"})
    assert err.value.exit_code == 2


@pytest.mark.parametrize("name", ["results.json", "results.sqlite"])
def test_unreadable_results_file(tmp_path, name):
    (tmp_path / name).write_text("{not json, not a database")
    with pytest.raises(ResultsError, match="unreadable results"):
        ResultStore(tmp_path, PALLET)
    ResultStore(tmp_path, PALLET, force=True).close()


def test_out_that_is_a_file_or_under_one(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ResultsError, match="not a folder"):
        ResultStore(afile, PALLET)
    with pytest.raises(ResultsError, match="cannot create the results folder"):
        ResultStore(afile / "out", PALLET)


def test_second_process_is_refused_until_the_first_dies(tmp_path):
    """Two real processes: the lock is the kernel's, so a SIGKILLed holder releases it."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from faasctl.scan.results import ResultStore; "
         f"s = ResultStore(sys.argv[1], {PALLET!r}); print('locked', flush=True); sys.stdin.read()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ResultsError, match=rf"in use by another scan \(pid {holder.pid} on \S+ since 20") as err:
            ResultStore(tmp_path, PALLET)
        assert "\n" not in str(err.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with ResultStore(tmp_path, PALLET) as store:  # the kernel released the dead process's lock
        assert store.done() == set()


def test_stores_of_one_process_share_the_lock(tmp_path):
    first = ResultStore(tmp_path, PALLET)
    first.add(ok("a"))
    with ResultStore(tmp_path, PALLET) as second:
        assert second.done() == {"a"}
    first.add(ok("b"))  # still locked and writable after the second closed
    first.close()


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({}, "no cls_obs"),
        ({"cls_obs": float("nan"), "cls_exp": [0.1] * 5}, "cls_obs is nan"),
        ({"cls_obs": 0.5, "cls_exp": [0.1] * 4}, "not 5 values"),
        ({"cls_obs": 0.5, "cls_exp": [0.1, 0.1, float("inf"), 0.1, 0.1]}, "not finite"),
    ],
)
def test_ok_without_a_usable_result_is_failed(record, reason):
    result = PatchResult.model_validate({"patch": "a", "status": "ok", **record})
    assert not result.ok and reason in result.error


def test_committed_schema_matches_model():
    """schemas/1.0.0/results.json is generated from ResultsDocument; regenerate it when the model changes:
    python -c "import json; from faasctl.scan.results import ResultsDocument; print(json.dumps(ResultsDocument.model_json_schema(by_alias=True), indent=2))" > src/faasctl/scan/schemas/1.0.0/results.json
    """
    from importlib.resources import files

    from faasctl.scan.results import ResultsDocument

    committed = json.loads((files("faasctl.scan") / "schemas" / "1.0.0" / "results.json").read_text())
    assert committed == ResultsDocument.model_json_schema(by_alias=True)


def test_results_file_validates_against_schema(tmp_path):
    from importlib.resources import files

    import jsonschema

    with ResultStore(tmp_path, PALLET, settings=SETTINGS) as store:
        store.add(ok("a", digest="0" * 64))
        store.add(no_sensitivity("b"))
        store.add(PatchResult(patch="c", status="ok", cls_obs=0.5, cls_exp=[0.5] * 5, backend="numpy",
                              fallback="FitNotConverged: Newton fit did not converge"))
    schema = json.loads((files("faasctl.scan") / "schemas" / "1.0.0" / "results.json").read_text())
    jsonschema.validate(json.loads(store.json_path.read_text()), schema)
