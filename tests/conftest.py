"""Shared fixtures.

Tests that need a real service (Slurm, Docker, helm) or the real pallets in ../shared skip
when it is absent on a developer's machine, but CI sets FAASCTL_REQUIRE_SERVICES=1 after
starting everything, so there a missing service fails the run instead of skipping.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from faasctl.pallets import Pallet
from faasctl.study import agrees, pyhf_hypotest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "simple"
SHARED_PALLETS = ROOT.parent / "shared" / "pallets"
#: Plain pyhf's CLs for every patch of the real pallets (tests/data/make_references.py).
REFERENCE_DATA = ROOT / "tests" / "data" / "reference"
REQUIRE_SERVICES = os.environ.get("FAASCTL_REQUIRE_SERVICES") == "1"


def require(available: bool, what: str) -> None:
    """Skip (developer machine) or fail (CI) when ``what`` is not available."""
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required in CI (FAASCTL_REQUIRE_SERVICES=1) but is not available")
    pytest.skip(f"{what} is not available here")


@pytest.fixture
def example_pallet() -> Path:
    """The small example pallet shipped in examples/simple (12 patches)."""
    return EXAMPLE


@pytest.fixture
def pallet_1lbb() -> Path:
    """The real ATLAS 1Lbb pallet, when ../shared/pallets is present."""
    path = SHARED_PALLETS / "1Lbb"
    require(path.exists(), f"the 1Lbb pallet at {path}")
    return path


@pytest.fixture
def staus_record() -> Path:
    """The staus likelihood record as published on HEPData, when ../shared/pallets is present."""
    path = SHARED_PALLETS / "hepdata" / "SUSY-2018-04_likelihoods.tar.gz"
    require(path.exists(), f"the staus record at {path}")
    return path


def which(tool: str) -> str | None:
    """``tool`` on PATH or in the project's .tools/bin (where .ci/helm-get.sh puts helm)."""
    return shutil.which(tool) or shutil.which(tool, path=str(ROOT / ".tools" / "bin"))


# --- agreement with plain pyhf -------------------------------------------------------------------


def cls_values(answer: Any) -> list[float]:
    """[CLs_obs, *CLs_exp] of a hypotest's ``(obs, [exp])``, a `PatchResult`, a results.json record or a list."""
    if isinstance(answer, dict):
        return [answer["cls_obs"], *answer["cls_exp"]]
    if hasattr(answer, "cls_obs"):
        return [answer.cls_obs, *answer.cls_exp]
    if len(answer) == 2 and not isinstance(answer[1], (int, float)):
        return [answer[0], *answer[1]]
    return list(answer)


def assert_agrees(got: Any, want: Any, what: str = "") -> None:
    """``got`` equals ``want`` within the study's tolerance (`faasctl.study.agrees`)."""
    got, want = cls_values(got), cls_values(want)
    assert agrees(got, want), f"{what}: {got} does not agree with plain pyhf's {want}"


@functools.cache
def stored_references(digest: str) -> dict[str, Any]:
    """The committed reference CLs of the pallet whose background has ``digest`` (``{}`` if none)."""
    for path in sorted(REFERENCE_DATA.glob("*.json")):
        doc = json.loads(path.read_text())
        if doc.get("digest") == digest:
            return dict(doc["patches"])
    return {}


_COMPUTED: dict[tuple[str, str, str], list[float]] = {}


def pyhf_reference(pallet: Pallet, name: str) -> list[float]:
    """[CLs_obs, *CLs_exp] of patch ``name`` as plain pyhf computes it (`faasctl.study.pyhf_hypotest`).

    For the real pallets the values committed in tests/data/reference (pyhf's default settings)
    are used; other patches are fitted once per test session.
    """
    stored = stored_references(pallet.digest).get(name)
    if stored is not None and all(v is not None for v in stored["default"]):
        return list(stored["default"])
    patch = pallet.patches[name]
    key = (pallet.digest, name, json.dumps(patch.operations, sort_keys=True))
    if key not in _COMPUTED:
        _COMPUTED[key] = cls_values(pyhf_hypotest(pallet.workspace_spec(patch, shared=True)))
    return _COMPUTED[key]


# --- worker images and the registry ----------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    """A worker image that `faasctl image build` made in this test session."""

    tag: str
    output: str
    seconds: float


@pytest.fixture(scope="session")
def cpu_image() -> BuiltImage:
    """The CPU worker image, built once per session by ``faasctl image build`` on the engine at DOCKER_HOST.

    Needs the engine and a local base image with Python (``eval "$(.ci/docker-up.sh)"`` exports both);
    the engine's layer cache makes a rebuild with unchanged sources quick. FAASCTL_TEST_IMAGE=TAG uses
    an image built before instead (a developer's shortcut: a change to src/ rebuilds faasctl's layers).
    """
    reuse = os.environ.get("FAASCTL_TEST_IMAGE")
    if reuse:
        return BuiltImage(reuse, f"Built {reuse} (FAASCTL_TEST_IMAGE)", 0.0)
    from typer.testing import CliRunner

    from faasctl.cli.main import app
    from faasctl.exceptions import ImageBuildError
    from faasctl.images import docker_client

    try:
        docker_client()
    except ImageBuildError as err:
        require(False, f"a Docker engine (.ci/docker-up.sh): {err}")
    base = os.environ.get("FAASCTL_BASE_IMAGE")
    require(base is not None, "FAASCTL_BASE_IMAGE, a local base image with Python (.ci/docker-up.sh)")
    tag = "faasctl-worker:pytest-cpu"
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["image", "build", "--flavor", "cpu", "--base-image", base, "--tag", tag, "--quiet"])
    assert result.exit_code == 0, result.output
    return BuiltImage(tag, result.output, time.perf_counter() - start)


@pytest.fixture
def docker_engine() -> Any:
    """A docker client for the engine at DOCKER_HOST (.ci/docker-up.sh starts one)."""
    from faasctl.exceptions import ImageBuildError
    from faasctl.images import docker_client

    try:
        return docker_client()
    except ImageBuildError as err:
        require(False, f"a Docker engine (.ci/docker-up.sh): {err}")


@pytest.fixture(scope="session")
def registry() -> str:
    """``HOST:PORT`` of the local OCI registry (``eval "$(.ci/registry-up.sh)"`` exports FAASCTL_REGISTRY)."""
    address = os.environ.get("FAASCTL_REGISTRY", "127.0.0.1:5055")
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=5) as response:
            answers = response.status == 200
    except OSError:
        answers = False
    require(answers, f"an OCI registry at {address} (.ci/registry-up.sh)")
    return address
