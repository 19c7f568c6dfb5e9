"""Every patch of the real 1Lbb and staus pallets, fitted the default way, against plain pyhf.

The reference CLs are committed test data (tests/data/reference/<pallet>.json, made with plain
pyhf by tests/data/make_references.py): for each patch, pyhf's answer with its default SLSQP
settings (``default``) and converged to a tight tolerance (``converged``), since the default
sometimes stops short of the minimum. The scan runs as ``faasctl fit`` runs it: `FitClient` with
its default backend on local worker processes (`open_executor`). Each patch must agree with
``default`` or, where it does not, with ``converged`` (`faasctl.study.agrees`); where pyhf's CLs
is not finite (stored as null), no ok number may be reported.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import json
from typing import Any, Callable, Iterator

import pytest

from conftest import REFERENCE_DATA, SHARED_PALLETS, require
from faasctl.executors import open_executor
from faasctl.pallets import load_pallet
from faasctl.scan import FitClient
from faasctl.scan.results import PatchResult
from faasctl.study import agrees

pytestmark = pytest.mark.pallets

#: The pallets, and how many patches each has (the reference must cover every one).
PALLETS = {"1Lbb": 125, "staus": 57}


@functools.cache
def _reference(name: str) -> dict[str, Any]:
    return json.loads((REFERENCE_DATA / f"{name}.json").read_text())


def _cases() -> list[Any]:
    # a missing reference file fails test_reference_covers_every_patch, not the collection
    return [pytest.param(pallet, patch, id=f"{pallet}-{patch}")
            for pallet in PALLETS if (REFERENCE_DATA / f"{pallet}.json").exists()
            for patch in _reference(pallet)["patches"]]


@pytest.fixture(scope="module")
def scan() -> Iterator[Callable[[str], dict[str, PatchResult]]]:
    """``scan(pallet)``: the pallet's results by patch, scanned once, when a test first asks for them.

    As ``faasctl fit --workers 2`` scans: FitClient with its defaults on two local worker processes.
    """
    results: dict[str, dict[str, PatchResult]] = {}
    with contextlib.ExitStack() as stack:
        executors: list[cf.Executor] = []

        def scan(pallet: str) -> dict[str, PatchResult]:
            path = SHARED_PALLETS / pallet
            require(path.exists(), f"the {pallet} pallet at {path}")
            if pallet not in results:
                if not executors:
                    executors.append(stack.enter_context(open_executor(workers=2)))
                results[pallet] = {r.patch: r for r in FitClient(executors[0]).scan(load_pallet(path))}
            return results[pallet]

        yield scan


@pytest.mark.parametrize("pallet", PALLETS)
def test_reference_covers_every_patch(pallet: str) -> None:
    path = SHARED_PALLETS / pallet
    require(path.exists(), f"the {pallet} pallet at {path}")
    loaded, reference = load_pallet(path), _reference(pallet)
    assert reference["digest"] == loaded.digest, "the reference was made for another version of the pallet"
    assert sorted(reference["patches"]) == sorted(loaded.patches)
    assert len(loaded.patches) == PALLETS[pallet]


@pytest.mark.parametrize(("pallet", "patch"), _cases())
def test_patch_agrees_with_plain_pyhf(scan: Callable[[str], dict[str, PatchResult]], pallet: str, patch: str) -> None:
    result = scan(pallet)[patch]
    stored = _reference(pallet)["patches"][patch]
    finite = [values for values in (stored.get("default"), stored.get("converged"))
              if values is not None and None not in values]
    if not finite:
        assert not result.ok, f"pyhf's CLs is not finite, but the scan reported {result.cls_obs}, {result.cls_exp}"
        return
    assert result.ok, result.error
    got = [result.cls_obs, *result.cls_exp]
    assert any(agrees(got, want) for want in finite), f"{got} agrees with none of pyhf's {finite}"
