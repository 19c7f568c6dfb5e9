"""Shared fixtures.

Tests that need a real service (Slurm, Docker, helm) or the real pallets in ../shared skip
when it is absent on a developer's machine, but CI sets FAASCTL_REQUIRE_SERVICES=1 after
starting everything, so there a missing service fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "simple"
SHARED_PALLETS = ROOT.parent / "shared" / "pallets"
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
