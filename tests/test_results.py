"""ResultStore: atomic incremental writes, resume bookkeeping, refusing foreign results."""

from __future__ import annotations

import csv
import json

import pytest

from faasctl.exceptions import ScanError
from faasctl.scan.results import PatchResult, ResultStore

PALLET = {"source": "p", "digest": "abc", "labels": ["m1", "m2"], "region": None}


def ok(name: str, values=(1.0, 2.0)) -> PatchResult:
    return PatchResult(patch=name, values=list(values), status="ok", cls_obs=0.5, cls_exp=[0.1, 0.2, 0.3, 0.4, 0.5],
                       fit_time=1.0, worker="h:1", backend="numpy")


def test_each_result_is_on_disk_at_once(tmp_path):
    store = ResultStore(tmp_path / "out", PALLET)
    store.add(ok("a"))
    assert [r["patch"] for r in json.loads(store.json_path.read_text())["results"]] == ["a"]
    store.add(PatchResult(patch="b", values=[3, 4], status="failed", error="boom"))
    doc = json.loads(store.json_path.read_text())
    assert [r["status"] for r in doc["results"]] == ["ok", "failed"]
    assert doc["schema"] == "faasctl/results/1.0.0"
    rows = store.csv_path.read_text().splitlines()
    assert rows[0].split(",")[:4] == ["patch", "m1", "m2", "status"] and rows[2].startswith("b,3.0,4.0,failed")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv", "results.json"]  # no temp files


def test_resume_skips_only_successful(tmp_path):
    store = ResultStore(tmp_path, PALLET)
    store.add(ok("a"))
    store.add(PatchResult(patch="b", status="failed", error="x"))
    again = ResultStore(tmp_path, PALLET)
    assert again.done() == {"a"}
    assert ResultStore(tmp_path, PALLET, force=True).done() == set()


def no_sensitivity(name: str) -> PatchResult:
    return PatchResult(patch=name, values=[5.0, 6.0], status="no_sensitivity", fit_time=1.0, worker="h:1", backend="jax",
                       error="no sensitivity: q_mu,A <= 0.002 (mu = 1 barely changes the expected data)")


def test_no_sensitivity_is_a_result_without_cls(tmp_path):
    """Kept on resume (it is an answer, not a failure), with no CLs, in the JSON and the CSV alike."""
    store = ResultStore(tmp_path, PALLET)
    store.add(no_sensitivity("c"))
    store.add(PatchResult(patch="f", status="failed", error="x"))
    assert ResultStore(tmp_path, PALLET).done() == {"c"}
    (record,) = [r for r in json.loads(store.json_path.read_text())["results"] if r["patch"] == "c"]
    assert record["status"] == "no_sensitivity" and record["cls_obs"] is None and "q_mu,A" in record["error"]
    row = next(csv.DictReader(store.csv_path.read_text().splitlines()))
    assert (row["patch"], row["status"], row["cls_obs"], row["cls_exp"], row["backend"]) == ("c", "no_sensitivity", "", "", "jax")
    assert row["error"] == record["error"]
    with pytest.raises(ValueError, match="no CLs"):
        PatchResult(patch="c", status="no_sensitivity", cls_obs=0.9998, cls_exp=[1.0] * 5, error="no sensitivity")
    with pytest.raises(ValueError, match="needs cls_obs"):
        PatchResult(patch="c", status="ok")


def test_refuses_results_of_another_pallet(tmp_path):
    ResultStore(tmp_path, PALLET).add(ok("a"))
    with pytest.raises(ScanError, match="another pallet"):
        ResultStore(tmp_path, {**PALLET, "digest": "def"})


def test_unreadable_results_file(tmp_path):
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ScanError, match="unreadable results file"):
        ResultStore(tmp_path, PALLET)


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

    store = ResultStore(tmp_path, PALLET)
    store.add(ok("a"))
    store.add(no_sensitivity("b"))
    store.add(PatchResult(patch="c", status="ok", cls_obs=0.5, cls_exp=[0.5] * 5, backend="numpy",
                          fallback="FitNotConverged: Newton fit did not converge"))
    schema = json.loads((files("faasctl.scan") / "schemas" / "1.0.0" / "results.json").read_text())
    jsonschema.validate(json.loads(store.json_path.read_text()), schema)
