"""Direct mode on a real Slurm cluster (.ci/slurm-up.sh: one node, localhost).

The fits run in worker pools that parsl's SlurmProvider submits with sbatch, built by Globus
Compute's loader from the generic ``slurm`` site's rendered endpoint config; the parsl
interchange runs in this process's host, with no Globus cloud involved. The reference CLs
are plain pyhf's, computed here.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLE, assert_agrees, require
from faasctl.study import pyhf_hypotest
from faasctl.scan.client import FitClient
from faasctl.executors.site import site_executor
from faasctl.study import WORKER_ENV
from faasctl.pallets import Pallet, apply_patch, load_pallet
from faasctl.scan.results import PatchResult, ResultStore
from faasctl.scan.runner import Scan, pallet_record, run_scan
from faasctl.sites import load_site

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]

#: fast failure detection for the test cluster (the defaults suit real clusters)
FAST = {"heartbeat_period": 1, "heartbeat_threshold": 5, "status_period": 1, "strategy_period": 0.5}


def _sinfo_responds() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module", autouse=True)
def slurm() -> None:
    require(_sinfo_responds(), "a Slurm cluster answering sinfo (.ci/slurm-up.sh)")


@pytest.fixture(scope="module")
def pallet() -> Pallet:
    return load_pallet(EXAMPLE)


def _pyhf_reference(background: dict[str, Any], patch: Any) -> tuple[float, list[float]]:
    return pyhf_hypotest(apply_patch(background, patch))


@pytest.fixture(scope="module")
def reference(pallet: Pallet) -> dict[str, tuple[float, list[float]]]:
    """Plain pyhf's (CLs_obs, CLs_exp band) per patch, computed here.

    In two fresh processes with one BLAS thread each: threaded BLAS on a busy 2-core
    machine is several times slower than this.
    """
    with pytest.MonkeyPatch.context() as mp:
        for key, value in WORKER_ENV.items():
            mp.setenv(key, value)  # read by the spawned processes when they import numpy
        with cf.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {name: pool.submit(_pyhf_reference, pallet.background, patch) for name, patch in pallet.patches.items()}
            return {name: fut.result() for name, fut in futures.items()}


def _site(**blocks: int) -> Any:
    overrides = [f"provider.{key}={value}" for key, value in blocks.items()]
    return load_site("slurm", overrides=["provider.walltime=00:10:00", *overrides])


def _agrees(result: PatchResult, reference: dict[str, tuple[float, list[float]]]) -> None:
    assert result.ok, result.error
    assert_agrees(result, reference[result.patch], result.patch)


def _slurm_job(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout


def test_scan_through_slurm_blocks_matches_pyhf(pallet: Pallet, reference: dict[str, Any], tmp_path: Path) -> None:
    names = sorted(pallet.patches)[::3]  # 4 of the 12 patches
    with site_executor(_site(max_blocks=2), run_dir=tmp_path / "runinfo", **FAST) as executor:
        results = list(FitClient(executor).scan(pallet, names))
        job_ids = list(executor.dfk.executors[executor.label].blocks_to_job_id.values())
    assert sorted(r.patch for r in results) == names
    for result in results:
        _agrees(result, reference)
    # the workers really were Slurm jobs of this scan
    assert job_ids
    assert "JobName=parsl.faasctl-slurm.block-" in _slurm_job(job_ids[0])


def test_cancelled_block_loses_nothing_and_resume_completes(pallet: Pallet, reference: dict[str, Any],
                                                            tmp_path: Path) -> None:
    out = tmp_path / "results"
    first = Scan(pallet, out)
    store, todo = first.store, first.todo
    assert len(todo) == 12
    site = _site(max_blocks=1)

    before: list[PatchResult] = []
    after: list[PatchResult] = []
    with site_executor(site, run_dir=tmp_path / "runinfo", **FAST) as executor:
        htex = executor.dfk.executors[executor.label]
        # a window of two tasks: the scan cannot race past the cancel on a fast machine (the test
        # needs patches left to resume; with all 12 in flight they can finish before scancel lands)
        scan = run_scan(pallet, todo, store, executor, max_in_flight=2)
        for result in scan:
            before.append(result)
            if len(before) == 3:
                break
        killed = list(htex.blocks_to_job_id.values())
        cancelled_at = time.time()
        subprocess.run(["scancel", *killed], check=True, timeout=30)

        # every result seen so far is on disk, complete
        on_disk = ResultStore(out, pallet_record(pallet)).results
        assert {r.patch for r in before} <= set(on_disk)
        for result in before:
            _agrees(on_disk[result.patch], reference)

        # the block is replaced (a new Slurm job), and the scan goes on there: a result from a worker
        # process started after the cancel (results the old block's workers sent before it may still arrive)
        for result in scan:
            after.append(result)
            if result.timing and result.timing.worker_start and result.timing.worker_start > cancelled_at:
                break
        assert set(htex.blocks_to_job_id.values()) - set(killed), "no replacement block was submitted"
        scan.close()  # stop mid-scan, as a Ctrl-C would

    done = {r.patch for r in before + after}
    assert len(done) < 12, "the scan finished before it was stopped; nothing left to resume"
    for result in before + after:
        _agrees(result, reference)

    # rerun: resume from the results file, fit only what is missing
    resumed = Scan(pallet, out)
    assert set(resumed.skipped) == done
    assert {p.name for p in resumed.todo} == set(pallet.patches) - done
    with site_executor(site, run_dir=tmp_path / "runinfo", **FAST) as executor:
        rest = list(resumed.run(executor))
    assert {r.patch for r in rest} == set(pallet.patches) - done

    final = ResultStore(out, pallet_record(pallet)).results
    assert set(final) == set(pallet.patches)
    for result in final.values():
        _agrees(result, reference)


def test_fit_direct_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``faasctl fit --site slurm --direct --timeline``: the workers' lanes come from the Slurm jobs."""
    import json

    from typer.testing import CliRunner

    from faasctl.cli.main import app

    monkeypatch.chdir(tmp_path)  # the run folder (./runinfo) and the results
    names = ["grid_300_0", "grid_500_100"]
    args = ["fit", str(EXAMPLE), "--site", "slurm", "--direct", "--set", "provider.walltime=00:10:00",
            "--out", "out", "--no-plot", "--timeline", *[a for n in names for a in ("--patch", n)]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 0
    summary = json.loads((tmp_path / "out" / "timeline.json").read_text())["breakdown"]
    assert summary["patches"] == len(names) and summary["workers"] >= 1
    stored = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    for r in stored:
        t = r["timing"]
        assert t["worker_start"] <= t["started"] <= t["finished"] and t["submitted"] <= t["received"]
