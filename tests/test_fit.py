"""`faasctl fit` end to end: CLs equal plain pyhf's, resume after a kill, and bad input."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_agrees, pyhf_reference
from faasctl.cli.main import app
from faasctl.pallets.load import load_pallet
from faasctl.scan.results import load_results

runner = CliRunner()


def check_against_pyhf(results_json: Path, pallet_path: Path, names: list[str]) -> None:
    doc = json.loads(results_json.read_text())
    by_name = {r["patch"]: r for r in doc["results"]}
    pallet = load_pallet(pallet_path)
    for name in names:
        record = by_name[name]
        assert record["status"] == "ok", record
        assert_agrees(record, pyhf_reference(pallet, name), name)


def test_fit_matches_pyhf(example_pallet, tmp_path):
    names = ["grid_300_0", "grid_400_200", "grid_600_100"]
    args = ["fit", str(example_pallet), "--workers", "2", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, *(f"--patch={n}" for n in names)])
    assert result.exit_code == 0, result.output
    assert "3 fitted, 0 failed" in result.output
    check_against_pyhf(tmp_path / "results.json", example_pallet, names)
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("patch,m1,m2,status,cls_obs")
    assert len(csv_lines) == 4
    assert (tmp_path / "exclusion.png").stat().st_size > 10_000


@pytest.mark.pallets
@pytest.mark.slow
def test_fit_1lbb_matches_pyhf(pallet_1lbb, tmp_path):
    names = ["C1N2_Wh_hbb_1000_0", "C1N2_Wh_hbb_500_0"]
    result = runner.invoke(app, ["fit", str(pallet_1lbb), "--out", str(tmp_path), *(f"-p{n}" for n in names)])
    assert result.exit_code == 0, result.output
    check_against_pyhf(tmp_path / "results.json", pallet_1lbb, names)


def _results(path: Path) -> dict[str, dict]:
    return {r["patch"]: r for r in json.loads(path.read_text())["results"]}


#: Patches in the pallet of the kill test: enough that the scan cannot finish between the check that
#: three results are in and the kill (the example's 12 fit in ~0.1 s once compiled).
KILL_TEST_PATCHES = 240


def _many_patches(example_pallet: Path, folder: Path, n: int) -> Path:
    """The example pallet with its patches repeated under new names and values to ``n`` patches."""
    patchset = json.loads((example_pallet / "patchset.json").read_text())
    originals = patchset["patches"]
    patchset["patches"] = [
        {"metadata": {"name": f"copy{i}", "values": [float(i), float(i % 7)]}, "patch": originals[i % len(originals)]["patch"]}
        for i in range(n)
    ]
    folder.mkdir()
    shutil.copy(example_pallet / "BkgOnly.json", folder / "BkgOnly.json")
    (folder / "patchset.json").write_text(json.dumps(patchset))
    return folder


def test_resume_after_kill_refits_nothing_done(example_pallet, tmp_path):
    """SIGKILL a running scan (and its workers), then rerun: finished patches are kept as they were."""
    out = tmp_path / "out"
    pallet = _many_patches(example_pallet, tmp_path / "pallet", KILL_TEST_PATCHES)
    cmd = [sys.executable, "-m", "faasctl.cli", "fit", str(pallet), "-w", "1", "--out", str(out), "--no-plot"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "results.sqlite").exists() and len(load_results(out)) >= 3:
                break
            assert proc.poll() is None, "the scan ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no results within 120 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {name: r.model_dump() for name, r in load_results(out).items()}  # every result recorded
    assert 3 <= len(before) < KILL_TEST_PATCHES

    result = runner.invoke(app, ["fit", str(pallet), "-w", "2", "--out", str(out), "--no-plot"])
    assert result.exit_code == 0, result.output
    assert f"Resuming: {len(before)} patches already" in result.output
    after = _results(out / "results.json")
    assert len(after) == KILL_TEST_PATCHES
    for name, record in before.items():
        assert after[name] == record  # same worker, same fit time: not refitted

    forced = runner.invoke(app, ["fit", str(pallet), "-w", "2", "--out", str(out), "--no-plot", "--force",
                                 "-p", "copy0"])
    assert forced.exit_code == 0, forced.output
    assert "Resuming" not in forced.output
    assert list(_results(out / "results.json")) == ["copy0"]


@pytest.fixture
def broken(tmp_path, example_pallet):
    """A copy of the example pallet to break in various ways."""
    target = tmp_path / "pallet"
    shutil.copytree(example_pallet, target)
    return target


def _fit_error(pallet: Path, *extra: str) -> str:
    out = pallet.parent / "out"
    result = runner.invoke(app, ["fit", str(pallet), "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    assert not out.exists(), "nothing may be written on bad input"
    return " ".join(result.output.split())


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_missing_pallet(tmp_path):
    assert "no such file or folder" in _fit_error(tmp_path / "nowhere")


def test_missing_patchset(broken):
    (broken / "patchset.json").unlink()
    assert "no patchset.json found" in _fit_error(broken)


def test_invalid_json_names_file_and_line(broken):
    (broken / "BkgOnly.json").write_text('{"channels": [\n  oops\n]}')
    message = _fit_error(broken)
    assert "BkgOnly.json" in message and "invalid JSON at line 2" in message


def test_gzip_pallet_is_read(broken, tmp_path):
    for name in ("BkgOnly.json", "patchset.json"):
        data = (broken / name).read_bytes()
        (broken / name).unlink()
        (broken / f"{name}.gz").write_bytes(gzip.compress(data))
    assert len(load_pallet(broken)) == 12


def test_schema_error_names_field(broken):
    _edit(broken / "BkgOnly.json", lambda d: d["channels"][1]["samples"][0].__setitem__("data", "lots"))
    message = _fit_error(broken, "--ignore-digest")
    assert "BkgOnly.json: invalid workspace at channels[1].samples[0].data" in message


def test_digest_mismatch(broken, tmp_path):
    _edit(broken / "BkgOnly.json", lambda d: d["observations"][0]["data"].__setitem__(0, 1234.0))
    message = _fit_error(broken)
    assert "metadata.digests.sha256" in message and "--ignore-digest" in message
    result = runner.invoke(app, ["fit", str(broken), "--ignore-digest", "-p", "grid_600_200", "--out", str(tmp_path / "o"), "--no-plot"])
    assert result.exit_code == 0, result.output


def test_patch_that_does_not_apply(broken):
    _edit(broken / "patchset.json", lambda d: d["patches"][2]["patch"][0].__setitem__("path", "/channels/9/samples/3"))
    message = _fit_error(broken)
    assert "patch 'grid_300_200' does not apply" in message and "patchset.json" in message


def test_unknown_patch_name_suggests(broken):
    message = _fit_error(broken, "-p", "grid_300_00")
    assert "patchset.json: no patch named 'grid_300_00' (did you mean" in message and "grid_300_0?" in message


def test_failed_fit_is_recorded_and_scan_goes_on(broken, tmp_path):
    """A patch whose model cannot be built fails alone; the others are fitted; exit status 1."""
    def bad_modifier(doc):
        doc["patches"][0]["patch"][0]["value"]["modifiers"].append({"name": "mu_SIG", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}})
    _edit(broken / "patchset.json", bad_modifier)
    out = tmp_path / "o"
    result = runner.invoke(app, ["fit", str(broken), "-p", "grid_300_0", "-p", "grid_600_200", "--out", str(out), "--no-plot"])
    assert result.exit_code == 1, result.output
    records = _results(out / "results.json")
    assert records["grid_300_0"]["status"] == "failed" and records["grid_300_0"]["error"]
    assert records["grid_600_200"]["status"] == "ok"


def test_patches_without_sensitivity_are_not_failures(tmp_path):
    """Patches whose signal barely changes the model are recorded and shown as such, without CLs,
    drawn apart in the plot, and the scan exits 0."""
    from weak_signal import SIGNALS, weak_signal_pallet

    pallet, out = weak_signal_pallet(tmp_path / "weak"), tmp_path / "out"
    result = runner.invoke(app, ["fit", str(pallet), "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "5 fitted (3 without sensitivity), 0 failed" in result.output
    assert result.output.count("no sensitivity") >= 3 and "q_mu,A <= 0.002" in result.output
    records = _results(out / "results.json")
    for name, (_, sensitive) in SIGNALS.items():
        assert records[name]["status"] == ("ok" if sensitive else "no_sensitivity"), records[name]
        assert (records[name]["cls_obs"] is None) != sensitive
    assert (out / "exclusion.png").stat().st_size > 10_000


def test_plot_draws_points_without_sensitivity_apart(tmp_path):
    from faasctl.scan.plot import exclusion_plot
    from faasctl.scan.results import PatchResult

    blind = [PatchResult(patch=f"p{i}", values=[i, i % 2], status="no_sensitivity", error="no sensitivity: ...")
             for i in range(4)]
    assert exclusion_plot(blind, ["m1", "m2"], tmp_path / "a.png").stat().st_size > 5_000
    ok = [PatchResult(patch=f"q{i}", values=[i, 2 + i % 3], status="ok", cls_obs=0.01 * (i + 1), cls_exp=[0.02 * (i + 1)] * 5)
          for i in range(6)]
    assert exclusion_plot(ok + blind, ["m1", "m2"], tmp_path / "b.png", title="").stat().st_size > 10_000


PLOT_RIGHT_AFTER_PRELOAD = """
import sys
from faasctl.scan.plot import exclusion_plot, preload
from faasctl.scan.results import PatchResult
ok = [PatchResult(patch=f"q{i}", values=[i, 2 + i % 3], status="ok", cls_obs=0.01 * (i + 1), cls_exp=[0.02 * (i + 1)] * 5)
      for i in range(6)]
preload()  # as faasctl fit does at its first result; a small scan's last one comes right after
exclusion_plot(ok, ["m1", "m2"], sys.argv[1] + "/exclusion.png")
"""


@pytest.mark.parametrize("attempt", range(3))
def test_plot_right_after_the_preload(tmp_path, attempt):
    """The plot waits for matplotlib's import in the preload thread (two importing threads can meet
    one of its circular imports half done: an ImportError that ended a 12-patch `faasctl fit`)."""
    proc = subprocess.run([sys.executable, "-c", PLOT_RIGHT_AFTER_PRELOAD, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "exclusion.png").stat().st_size > 10_000
