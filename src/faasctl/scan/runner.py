"""A pallet scan: which patches to fit, the client that fits them, and the store that keeps them."""

from __future__ import annotations

import concurrent.futures as cf
import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

from jsonpatch import JsonPatchException
from jsonpointer import JsonPointerException

from faasctl.scan.client import FitClient
from faasctl.exceptions import PatchError
from faasctl.pallets.load import Pallet, Patch
from faasctl.pallets.patching import apply_patch_shared
from faasctl.scan.results import PatchResult, ResultStore

__all__ = ["check_patches", "plan", "run_scan", "pallet_record"]

log = logging.getLogger(__name__)


def pallet_record(pallet: Pallet) -> dict[str, object]:
    """What a results file records about the pallet it belongs to."""
    return {"source": pallet.source, "digest": pallet.digest, "labels": pallet.labels, "region": pallet.region}


@dataclass
class Plan:
    todo: list[Patch]
    skipped: list[str]


def check_patches(pallet: Pallet, patches: Sequence[Patch]) -> None:
    """Fail fast, before anything is submitted or written, if a patch does not apply.

    Raises:
        PatchError: naming the patch, the patchset file and the failing operation.
    """
    for patch in patches:
        try:
            apply_patch_shared(pallet.background, patch.operations)
        except (JsonPatchException, JsonPointerException) as err:
            raise PatchError(f"{patch.source or pallet.patchset_file}: patch {patch.name!r} does not apply to the background: {err}") from err


def plan(pallet: Pallet, store: ResultStore, names: Sequence[str] | None = None) -> Plan:
    """The patches still to fit: the selection minus those ``store`` already holds.

    Raises:
        PatchError: a name is unknown or a selected patch does not apply.
    """
    selected = pallet.select(names)
    check_patches(pallet, selected)
    done = store.done()
    return Plan([p for p in selected if p.name not in done], [p.name for p in selected if p.name in done])


def run_scan(
    pallet: Pallet,
    todo: Sequence[Patch],
    store: ResultStore,
    executor: cf.Executor,
    *,
    backend: str = "numpy",
    timeout: float | None = None,
    max_in_flight: int = 64,
) -> Iterator[PatchResult]:
    """Fit ``todo`` on ``executor``, recording each result in ``store`` as it arrives."""
    client = FitClient(executor, backend=backend, timeout=timeout, max_in_flight=max_in_flight)
    for result in client.scan(pallet, list(todo)):
        store.add(result)
        if not result.ok:
            log.warning("patch %s failed: %s", result.patch, result.error)
        yield result
