"""``faasctl fit`` guarding its results folder and its options: refused early (exit 2), or said out loud."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faasctl.cli.main import app
from faasctl.pallets.load import load_pallet
from faasctl.scan.results import load_results
from faasctl.study import agrees, pyhf_hypotest

runner = CliRunner()


def _one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("where", ["file", "under-file", "under-file-deeper"])
def test_out_that_cannot_be_a_folder_is_refused_before_fitting(example_pallet, afile, where):
    out = {"file": afile, "under-file": afile / "out", "under-file-deeper": afile / "a" / "b"}[where]
    result = runner.invoke(app, ["fit", str(example_pallet), "--out", str(out), "-p", "grid_300_0"])
    assert result.exit_code == 2, result.output
    assert "--out" in result.output and str(afile) in _one_line(result.output)
    assert "Fitting" not in result.output


def test_render_out_under_a_file_is_refused(afile):
    result = runner.invoke(app, ["render", "--site", "river", "--out", str(afile / "river")])
    assert result.exit_code == 2, result.output
    assert "--out" in result.output and "not a folder" in _one_line(result.output)


def test_second_scan_on_a_locked_out_is_refused(example_pallet, tmp_path):
    """Another process (a real one) holds the folder, as a running scan does."""
    out = tmp_path / "out"
    pallet = {"source": "x", "digest": load_pallet(example_pallet).digest, "labels": [], "region": None}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from faasctl.scan.results import ResultStore; "
         f"s = ResultStore(sys.argv[1], {pallet!r}); print('locked', flush=True); sys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = runner.invoke(app, ["fit", str(example_pallet), "--out", str(out), "-p", "grid_300_0"])
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert result.exit_code == 2, result.output
    assert f"in use by another scan (pid {holder.pid} on" in _one_line(result.output)
    assert "another --out" in _one_line(result.output)
    assert load_results(out) == {}


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf"])
def test_timeout_must_be_positive_and_finite(example_pallet, tmp_path, value):
    result = runner.invoke(app, ["fit", str(example_pallet), "--out", str(tmp_path / "o"), f"--timeout={value}"])
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.output and "positive, finite" in _one_line(result.output)
    assert not (tmp_path / "o").exists()


def test_default_timeout_is_bounded():
    from faasctl.scan.client import FitClient
    from faasctl.study import DEFAULT_TIMEOUT

    assert FitClient(executor=None).timeout == DEFAULT_TIMEOUT  # type: ignore[arg-type]
    assert 0 < DEFAULT_TIMEOUT < float("inf")
    with pytest.raises(ValueError, match="finite"):
        FitClient(executor=None, timeout=float("inf"))  # type: ignore[arg-type]


def test_workers_above_the_cores_are_said_and_shown(example_pallet, tmp_path):
    cores = os.cpu_count()
    result = runner.invoke(app, ["fit", str(example_pallet), "--out", str(tmp_path), "-p", "grid_300_0",
                                 "-w", str(cores + 5), "--no-plot"])
    assert result.exit_code == 0, result.output
    text = _one_line(result.output)
    assert f"warning: --workers {cores + 5} is more than the {cores} cores here; running {cores} workers" in text
    assert f"{cores} local workers" in text and f"{cores + 5} local workers" not in text


def test_changed_patch_and_settings_are_refitted(example_pallet, tmp_path):
    pallet = tmp_path / "pallet"
    shutil.copytree(example_pallet, pallet)
    out = tmp_path / "out"
    args = ["fit", str(pallet), "--out", str(out), "-p", "grid_300_0", "-p", "grid_600_200", "--no-plot", "--backend", "numpy"]
    assert runner.invoke(app, args).exit_code == 0
    first = load_results(out)

    doc = json.loads((pallet / "patchset.json").read_text())
    patch = next(p for p in doc["patches"] if p["metadata"]["name"] == "grid_600_200")
    for op in patch["patch"]:
        op["value"]["data"] = [x / 2 for x in op["value"]["data"]]  # half the signal
    (pallet / "patchset.json").write_text(json.dumps(doc))

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "1 patches changed since the last run; refitting them (patch content)" in _one_line(again.output)
    assert "Resuming: 1 patches already" in again.output
    second = load_results(out)
    assert second["grid_300_0"] == first["grid_300_0"]  # untouched
    assert second["grid_600_200"].digest != first["grid_600_200"].digest
    loaded = load_pallet(pallet)
    obs, _ = pyhf_hypotest(loaded.workspace_spec(loaded.patches["grid_600_200"]))
    assert agrees(second["grid_600_200"].cls_obs, obs) and not agrees(first["grid_600_200"].cls_obs, obs)

    other = runner.invoke(app, ["fit", str(pallet), "--out", str(out), "-p", "grid_300_0", "--no-plot", "--backend", "auto"])
    assert other.exit_code == 0, other.output
    assert "1 patches changed since the last run; refitting them (settings: backend 'numpy' → 'auto')" in _one_line(other.output)
