"""Backgrounds over Globus Compute's 10 MB task payload cap, staged in chunks (`faasctl.scan.staging`).

The background here is the tiny record's RegionA with a second measurement of `BULK_PARAMETERS`
parameter settings: about 22 MB of JSON, 15 MB pickled, while the model fitted (the first
measurement's) stays small, so fits take milliseconds (a background as large through its bins
would make the compiled engine's dense model, bins x parameters, too large for a test). It scans
through the local engine and through the real ``GlobusComputeEngine`` (`local_engine`, whose
`EngineExecutor` refuses a task over the cap as the web service does), and each CLs equals the
compiled engine's in this process with the background in memory.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from faasctl.exceptions import ScanError
from faasctl.executors.gc_engine import MAX_PAYLOAD, local_engine
from faasctl.executors.local import local_executor
from faasctl.pallets.load import Pallet, load_pallet, workspace_digest
from faasctl.scan import staging
from faasctl.scan.client import FitClient

TINY = Path(__file__).resolve().parent / "data" / "tiny_record" / "RegionA"
BULK_PARAMETERS = 200_000
PATCHES = ["sig_300_100", "sig_300_200"]


@pytest.fixture(scope="module")
def large_pallet() -> Pallet:
    tiny = load_pallet(TINY)
    background = copy.deepcopy(tiny.background)
    rng = random.Random(18)
    parameters = [{"name": f"bulk_{i:06d}", "auxdata": [rng.uniform(0.5, 1.5)], "sigmas": [rng.uniform(0.01, 0.2)],
                   "bounds": [[0.0, 5.0]], "inits": [rng.uniform(0.5, 1.5)]} for i in range(BULK_PARAMETERS)]
    background["measurements"].append({"name": "Bulk", "config": {"poi": "mu_SIG", "parameters": parameters}})
    assert len(json.dumps(background)) > 20_000_000
    return Pallet(source="large", background=background, patches={n: tiny.patches[n].loaded() for n in PATCHES},
                  labels=tiny.labels, digest=workspace_digest(background))


@pytest.fixture(scope="module")
def expected(large_pallet: Pallet) -> dict[str, float]:
    """Each patch's CLs from the compiled engine in this process, the background in memory."""
    from faasctl.backends import get_backend

    backend = get_backend("jax")
    return {n: backend.hypotest(large_pallet.background, large_pallet.digest, large_pallet.patches[n]).cls_obs for n in PATCHES}


@pytest.fixture(autouse=True)
def _stage_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(staging.STAGE_ENV, str(tmp_path / "stage"))  # the workers inherit it


def _scan(executor: object, pallet: Pallet, expected: dict[str, float], stage: Path) -> FitClient:
    client = FitClient(executor, backend="jax")  # type: ignore[arg-type]
    results = list(client.scan(pallet))
    assert sorted(r.patch for r in results) == PATCHES
    for r in results:
        assert r.ok, f"{r.patch}: {r.error}"
        assert r.cls_obs == pytest.approx(expected[r.patch], rel=1e-6)
        assert r.timing is not None and r.timing.bytes_sent is not None and r.timing.bytes_sent < 100_000
    assert client.background_sends == 0 and client.staged_chunks == len(list((stage / pallet.digest).glob("*.part"))) > 1
    return client


def test_chunks_reassemble_to_the_background(large_pallet, tmp_path):
    pieces = staging.chunks(large_pallet.background)
    assert len(pieces) > 1 and all(len(p) <= staging.CHUNK_BYTES for p in pieces)
    assert staging.load_staged(large_pallet.digest, len(pieces)) is None  # nothing staged yet
    for i, piece in enumerate(pieces):
        staging.stage_chunk(large_pallet.digest, i, len(pieces), piece)
    assert staging.load_staged(large_pallet.digest, len(pieces)) == large_pallet.background
    last = tmp_path / "stage" / large_pallet.digest / f"{len(pieces) - 1:05d}-of-{len(pieces):05d}.part"
    last.write_bytes(last.read_bytes()[:-10])
    with pytest.raises(ValueError, match="corrupt"):
        staging.load_staged(large_pallet.digest, len(pieces))


def test_large_background_on_the_local_engine(large_pallet, expected, tmp_path):
    with local_executor(2) as executor:
        _scan(executor, large_pallet, expected, tmp_path / "stage")


@pytest.mark.slow  # ~50 s: the engine's start, and the background refused before it is staged
def test_large_background_on_the_globus_compute_engine(large_pallet, expected, tmp_path):
    assert staging.needs_staging(large_pallet.background)
    with local_engine(2) as executor:
        # sent with its task, the background is over the cap: refused, as the web service refuses it
        with pytest.raises(ScanError, match=f"over the {MAX_PAYLOAD} byte limit"):
            list(FitClient(executor, backend="jax", inline_limit=1 << 40).scan(large_pallet))
        _scan(executor, large_pallet, expected, tmp_path / "stage")


def _lacks_chunks(task: dict) -> dict:
    """A worker on a node that never has the staged chunks (a multi-node endpoint without a shared folder)."""
    from faasctl.scan.worker import NEED_BACKGROUND

    assert task["background"] is None and task["staged"]
    return {"patch": task["patch"]["name"], "values": task["patch"]["values"], "status": NEED_BACKGROUND,
            "staged": True, "worker": "node-without-chunks:1"}


def test_a_node_without_the_chunks_gets_them_again_then_fails(tmp_path):
    import concurrent.futures as cf

    tiny = load_pallet(TINY)
    names = list(tiny.patches)[:2]
    pieces = len(staging.chunks(tiny.background))
    with cf.ThreadPoolExecutor(2) as executor:
        client = FitClient(executor, function=_lacks_chunks, check_stack=False, inline_limit=0, retries=2)
        results = list(client.scan(tiny, names))
    assert sorted(r.patch for r in results) == sorted(names)
    for r in results:
        assert r.failed and "after 3 stagings" in (r.error or "") and staging.STAGE_ENV in (r.error or ""), r.error
    # staged once, then again before each resubmission of each patch (2 each)
    assert client.staged_chunks == pieces * (1 + 2 * len(names)) and client.background_sends == 0
