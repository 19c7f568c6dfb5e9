"""`faasctl pallet inspect` and `faasctl.pallets.inspection`: structure signatures, broken patches, output."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pyhf
import pytest
from typer.testing import CliRunner

from faasctl.cli.main import app
from faasctl.pallets.inspection import _SampleSchema, inspect_pallet, structure_key, structure_signature
from faasctl.study import MODIFIER_SETTINGS
from faasctl.pallets.load import load_pallet

TINY = Path(__file__).resolve().parent / "data" / "tiny_record"
runner = CliRunner()


def spec_of(region: str, patch: str) -> dict:
    pallet = load_pallet(TINY / region)
    return pallet.workspace_spec(pallet.patches[patch])


# --- structure_signature ---------------------------------------------------------------------


def test_signature_ignores_numbers_and_sample_names_and_order():
    a = spec_of("RegionA", "sig_300_100")
    b = spec_of("RegionA", "sig_400_100")  # other yields, other signal sample name
    assert structure_key(a) == structure_key(b)
    assert structure_signature(a) == structure_signature(b)
    shuffled = copy.deepcopy(a)
    for channel in shuffled["channels"]:
        channel["samples"].reverse()
        for sample in channel["samples"]:
            sample["modifiers"].reverse()
    shuffled["channels"].reverse()
    assert structure_signature(shuffled) == structure_signature(a)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["channels"][0]["samples"][0]["modifiers"].pop(),  # a modifier less
        lambda s: s["channels"][0]["samples"][0]["modifiers"].append({"name": "extra", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}),
        lambda s: [m.update(type="normfactor") for m in s["channels"][0]["samples"][1]["modifiers"] if m["type"] == "lumi"],
        lambda s: s["channels"][1].update(name="CR2"),
        lambda s: [x["data"].append(1.0) for x in s["channels"][1]["samples"]],  # a bin more
        lambda s: s["measurements"][0]["config"].update(poi="mu_W"),
    ],
    ids=["fewer-modifiers", "more-modifiers", "modifier-type", "channel-name", "bins", "poi"],
)
def test_signature_sees_structure(change):
    a = spec_of("RegionA", "sig_300_100")
    b = copy.deepcopy(a)
    change(b)
    assert structure_signature(a) != structure_signature(b)


def test_pruned_systematic_is_another_structure():
    assert structure_signature(spec_of("RegionA", "sig_400_200")) != structure_signature(spec_of("RegionA", "sig_400_100"))


# --- inspect_pallet --------------------------------------------------------------------------


def test_inspect_region_a():
    pallet = load_pallet(TINY, region="RegionA", labels="m1,m2")
    calls = []
    report = inspect_pallet(pallet, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert report.ok and report.failed == {}
    assert report.values == {"m1": {"min": 300, "max": 400, "distinct": 2}, "m2": {"min": 100, "max": 200, "distinct": 2}}
    assert report.digest_status == "not recorded"
    # two structures: sig_400_200 lacks the signal's jes systematic
    assert not report.shared_structure
    assert sorted(map(sorted, report.structures.values())) == [["sig_300_100", "sig_300_200", "sig_400_100"], ["sig_400_200"]]
    for signature, names in report.structures.items():
        assert all(structure_signature(pallet.workspace_spec(pallet.patches[n])) == signature for n in names)
    assert report.varying_modifiers == {"jes (histosys)": 3}
    # the model, as pyhf itself builds it
    spec = pallet.workspace_spec(pallet.patches[report.model.patch])
    model = pyhf.Workspace(spec).model(modifier_settings=MODIFIER_SETTINGS)
    assert report.model.parameters == model.config.npars
    assert report.model.parameter_sets == len(model.config.parameters)
    assert report.model.poi == "mu_SIG"
    assert [(c["name"], c["bins"]) for c in report.model.channels] == [("CR", 1), ("SR", 2)]
    assert report.model.modifiers["staterror"] == {"parameters": 2, "uses": 4}


def test_inspect_finds_the_patch_that_cannot_build():
    report = inspect_pallet(load_pallet(TINY, region="RegionB"))
    assert not report.ok
    assert set(report.failed) == {"sig_500_100"}  # sig_600_100 builds; only its fit gives NaN
    reason = report.failed["sig_500_100"]
    assert str(TINY / "RegionB" / "patch.sig_500_100.json") in reason
    assert "InvalidModel" in reason and "mu_SIG" in reason
    with pytest.raises(pyhf.exceptions.InvalidModel):  # pyhf agrees
        pyhf.Workspace(spec_of("RegionB", "sig_500_100")).model()


def test_inspect_reports_invalid_and_unappliable_patches(tmp_path):
    region = Path(shutil.copytree(TINY / "RegionB", tmp_path / "RegionB"))
    bad_sample = json.loads((region / "patch.sig_300_100.json").read_text())
    bad_sample[0]["value"]["modifiers"][0]["data"] = "x"  # a normfactor's data must be null
    (region / "patch.sig_300_100.json").write_text(json.dumps(bad_sample))
    bad_spec = json.loads((region / "patch.sig_600_100.json").read_text())
    bad_spec[1]["value"] = "zero"  # observations must be numbers
    (region / "patch.sig_600_100.json").write_text(json.dumps(bad_spec))
    (region / "patch.sig_700_100.json").write_text(json.dumps([{"op": "remove", "path": "/channels/3"}]))
    failed = inspect_pallet(load_pallet(region)).failed
    assert set(failed) == {"sig_300_100", "sig_500_100", "sig_600_100", "sig_700_100"}
    assert "operation [0] value.modifiers[0].data: 'x' is not of type 'null'" in failed["sig_300_100"]
    assert "invalid workspace at observations[0].data" in failed["sig_600_100"]
    assert "operation [0] (remove /channels/3)" in failed["sig_700_100"]
    assert all(str(region) in reason and "\n" not in reason for reason in failed.values())


@pytest.mark.parametrize(
    "change",
    [
        lambda s: None,
        lambda s: s.update(data=[]),
        lambda s: s.update(data=["1"]),
        lambda s: s.update(colour="red"),
        lambda s: s.pop("modifiers"),
        lambda s: s["modifiers"].append({"name": "x", "type": "normsys", "data": {"hi": 1.1}}),
        lambda s: s["modifiers"].append({"name": "x", "type": "wobble", "data": None}),
        lambda s: s["modifiers"].append({"name": "x", "type": "histosys", "data": {"hi_data": [1.0], "lo_data": [True]}}),
        lambda s: s["modifiers"].append({"name": "notlumi", "type": "lumi", "data": None}),
        lambda s: s["modifiers"].append("lumi"),
    ],
)
def test_sample_check_agrees_with_pyhf_schema(change):
    """The fast per-modifier check accepts exactly what pyhf's workspace schema accepts."""
    spec = spec_of("RegionA", "sig_300_100")
    sample = spec["channels"][0]["samples"][0]
    change(sample)
    schema = _SampleSchema()
    for _ in range(2):  # the second time from the memo
        problem = schema.error(sample)
        try:
            pyhf.schema.validate(spec, "workspace.json")
        except pyhf.exceptions.InvalidSpecification:
            assert problem is not None
        else:
            assert problem is None


# --- the command -----------------------------------------------------------------------------


def test_cli_table():
    result = runner.invoke(app, ["pallet", "inspect", str(TINY), "--region", "RegionA", "--labels", "m1,m2", "--patches"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    for part in (
        "region RegionA of 2: RegionA, RegionB",
        "patch files",
        "m1: 300 … 400 (2 values)",
        "computed from the background",
        "2 different structures among 4 patches",
        "jes (histosys)",
        "all 4 patches build a model",
        "sig_400_200 400 200 2 yes",
    ):
        assert part in text, part


def test_cli_json_and_exit_status():
    result = runner.invoke(app, ["pallet", "inspect", str(TINY), "--region", "RegionB", "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert list(report["failed"]) == ["sig_500_100"]
    assert report["layout"] == "patch files" and report["patch_count"] == 4 and report["labels"] == ["value0", "value1"]
    assert report["model"]["poi"] == "mu_SIG" and report["model"]["channels"][0]["name"] == "SR"
    assert report["regions"] == ["RegionA", "RegionB"] and report["region"] == "RegionB"
    assert report["digest_status"] == "not recorded"


def test_cli_several_regions_exit_2():
    result = runner.invoke(app, ["pallet", "inspect", str(TINY)])
    assert result.exit_code == 2
    assert "several regions, pick one with --region: RegionA, RegionB" in " ".join(result.output.split())


def test_cli_digest_mismatch(tmp_path, example_pallet):
    folder = Path(shutil.copytree(example_pallet, tmp_path / "simple"))
    patchset = json.loads((folder / "patchset.json").read_text())
    patchset["metadata"]["digests"]["sha256"] = "f" * 64
    (folder / "patchset.json").write_text(json.dumps(patchset))
    result = runner.invoke(app, ["pallet", "inspect", str(folder), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["digest_status"] == "mismatch"
    result = runner.invoke(app, ["pallet", "inspect", str(example_pallet)])
    assert result.exit_code == 0 and "matches the patchset" in result.output and "one structure" in result.output


@pytest.mark.pallets
def test_cli_staus_record(staus_record):
    result = runner.invoke(app, ["pallet", "inspect", str(staus_record), "--region", "Region-combined", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["regions"] == ["Region-combined", "Region-highMass", "Region-lowMass"]
    assert report["patch_count"] == 57 and report["failed"] == {}
    assert report["patch_values"]["DS_400_40_Staus"] == [400.0, 40.0]
    assert report["model"]["parameters"] == 120 and len(report["model"]["channels"]) == 5
