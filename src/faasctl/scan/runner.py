"""A pallet scan with its results folder: which patches to fit, fitting them, keeping the results.

`Scan` is what ``faasctl fit`` runs, and what a notebook runs too, with the same resume::

    from faasctl.scan import Scan
    from faasctl.executors import open_executor

    scan = Scan("../shared/pallets/1Lbb", out="results/1Lbb")   # resumes from results/1Lbb/results.json
    with open_executor(workers=2) as executor:
        for result in scan.run(executor):
            print(result.patch, result.cls_obs)
    scan.plot()
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from pathlib import Path
from typing import Iterator, Sequence

from jsonpatch import JsonPatchException
from jsonpointer import JsonPointerException

from faasctl.exceptions import PatchError
from faasctl.pallets.load import Pallet, Patch, load_pallet
from faasctl.pallets.patching import apply_patch_shared
from faasctl.scan.client import FitClient
from faasctl.scan.results import PatchResult, ResultStore
from faasctl.study import DEFAULT_BACKEND

__all__ = ["Scan", "check_patches", "run_scan", "pallet_record", "default_out"]

log = logging.getLogger(__name__)


def pallet_record(pallet: Pallet) -> dict[str, object]:
    """What a results file records about the pallet it belongs to."""
    return {"source": pallet.source, "digest": pallet.digest, "labels": pallet.labels, "region": pallet.region}


def pallet_stem(path: str | Path) -> str:
    """A pallet's name without archive suffixes: ``SUSY-2018-04_likelihoods.tar.gz`` → ``SUSY-2018-04_likelihoods``."""
    name = Path(path).resolve().name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        name = name.removesuffix(suffix)
    return name


def default_out(path: str | Path, pallet: Pallet) -> Path:
    """Where a scan's results go unless told: ``./results/<pallet>[-<region>]``."""
    return Path("results") / (pallet_stem(path) + (f"-{pallet.region}" if pallet.region else ""))


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


class Scan:
    """A scan of ``pallet`` into the results folder ``out``, resuming from what ``out`` holds.

    Args:
        pallet: a loaded `Pallet`, or a path that `load_pallet` reads (folder or archive).
        out: the results folder (default `default_out`: ``./results/<pallet>``).
        patches: fit only these patch names (default: all).
        force: drop earlier results in ``out`` instead of resuming from them.
        **load: keyword arguments of `load_pallet` (``region``, ``labels``, ``ignore_digest``).

    Raises:
        PalletError: the pallet cannot be read.
        PatchError: a selected name is unknown, or a selected patch does not apply.
        ScanError: ``out`` holds results of another pallet, or an unreadable results file.
    """

    def __init__(
        self, pallet: Pallet | str | Path, out: str | Path | None = None, *, patches: Sequence[str] | None = None,
        force: bool = False, **load: object,
    ) -> None:
        if not isinstance(pallet, Pallet):
            path = Path(pallet)
            pallet = load_pallet(path, **load)  # type: ignore[arg-type]
            out = out if out is not None else default_out(path, pallet)
        elif out is None:
            out = default_out(pallet.source, pallet)
        self.pallet = pallet
        self.out = Path(out)
        self.store = ResultStore(self.out, pallet_record(pallet), force=force)
        self.selected = pallet.select(patches)
        check_patches(pallet, self.selected)
        done = self.store.done()
        #: the selected patches still to fit, and the names of those ``out`` already holds
        self.todo = [p for p in self.selected if p.name not in done]
        self.skipped = [p.name for p in self.selected if p.name in done]

    def run(
        self, executor: cf.Executor, *, backend: str = DEFAULT_BACKEND, timeout: float | None = None,
        max_in_flight: int = 64,
    ) -> Iterator[PatchResult]:
        """Fit the patches still to do on ``executor``, recording each result as it arrives."""
        yield from run_scan(self.pallet, self.todo, self.store, executor, backend=backend, timeout=timeout,
                            max_in_flight=max_in_flight)

    @property
    def results(self) -> list[PatchResult]:
        """The results of the selected patches that ``out`` holds, in the pallet's order."""
        return [self.store.results[p.name] for p in self.selected if p.name in self.store.results]

    def plot(self, path: str | Path | None = None, *, title: str | None = None) -> Path | None:
        """Draw the exclusion plot of every result in ``out`` (default ``out/exclusion.png``); None if too few points."""
        from faasctl.scan.plot import exclusion_plot

        return exclusion_plot(list(self.store.results.values()), self.pallet.labels,
                              Path(path) if path else self.out / "exclusion.png",
                              title=title or pallet_stem(self.pallet.source))


def run_scan(
    pallet: Pallet,
    todo: Sequence[Patch],
    store: ResultStore,
    executor: cf.Executor,
    *,
    backend: str = DEFAULT_BACKEND,
    timeout: float | None = None,
    max_in_flight: int = 64,
) -> Iterator[PatchResult]:
    """Fit ``todo`` on ``executor``, recording each result in ``store`` as it arrives."""
    client = FitClient(executor, backend=backend, timeout=timeout, max_in_flight=max_in_flight)
    for result in client.scan(pallet, list(todo)):
        store.add(result)
        if result.failed:
            log.warning("patch %s failed: %s", result.patch, result.error)
        yield result
