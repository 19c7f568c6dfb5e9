"""A pallet scan with its results folder: which patches to fit, fitting them, keeping the results.

`Scan` is what ``faasctl fit`` runs, and what a notebook runs too, with the same resume::

    from faasctl.scan import Scan
    from faasctl.executors import open_executor

    with Scan("../shared/pallets/1Lbb", out="results/1Lbb") as scan:  # resumes from results/1Lbb
        with open_executor(workers=2) as executor:
            for result in scan.run(executor):
                print(result.patch, result.cls_obs)
        scan.plot()
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from importlib.metadata import version
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from faasctl.pallets.load import Pallet, Patch, load_pallet
from faasctl.scan.client import FitClient
from faasctl.scan.results import PatchResult, ResultStore, patch_digest
from faasctl.study import DEFAULT_BACKEND, DEFAULT_TIMEOUT, MODIFIER_SETTINGS, POI_TEST, TEST_STAT

__all__ = ["Scan", "check_patches", "checked_digests", "run_scan", "pallet_record", "default_out", "computation_settings"]

log = logging.getLogger(__name__)


def pallet_record(pallet: Pallet) -> dict[str, object]:
    """What a results file records about the pallet it belongs to."""
    return {"source": pallet.source, "digest": pallet.digest, "labels": pallet.labels, "region": pallet.region}


def computation_settings(backend: str = DEFAULT_BACKEND) -> dict[str, Any]:
    """What a result depends on besides its patch: recorded with each result, compared on resume."""
    from faasctl import __version__

    return {
        "backend": backend,
        "faasctl": __version__,
        "pyhf": version("pyhf"),
        "test": {"poi": POI_TEST, "test_stat": TEST_STAT, "modifier_settings": MODIFIER_SETTINGS},
    }


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
    checked_digests(pallet, patches)


def checked_digests(pallet: Pallet, patches: Sequence[Patch]) -> dict[str, str]:
    """Each patch's content digest (`patch_digest`), having checked that it applies (see `check_patches`).

    One read of each patch for both: a stored patch (`faasctl.pallets.load.StoredPatch`) is read
    from its file, and let go before the next.
    """
    digests = {}
    for stored in patches:
        patch = stored if getattr(stored, "checked", False) else stored.loaded()
        patch.check(pallet.background, pallet.patchset_file)
        digests[patch.name] = patch_digest(patch.values, patch.packed())
    return digests


class Scan:
    """A scan of ``pallet`` into the results folder ``out``, resuming from what ``out`` holds.

    Opening a scan takes the lock of ``out`` (see `faasctl.scan.results`): use it as a
    context manager, or `close` it, to export the results files and release the lock.

    Args:
        pallet: a loaded `Pallet`, or a path that `load_pallet` reads (folder or archive).
        out: the results folder (default `default_out`: ``./results/<pallet>``).
        patches: fit only these patch names (default: all).
        force: drop earlier results in ``out`` instead of resuming from them.
        backend: the fit backend (``auto``, ``numpy``, ``jax``); results fitted with
            other settings (backend, faasctl or pyhf version) are fitted again.
        **load: keyword arguments of `load_pallet` (``region``, ``labels``, ``ignore_digest``).

    Raises:
        PalletError: the pallet cannot be read.
        PatchError: a selected name is unknown, or a selected patch does not apply.
        ResultsError: ``out`` is not a writable folder, holds results of another pallet or an
            unreadable results file, or is in use by another scan.
    """

    def __init__(
        self, pallet: Pallet | str | Path, out: str | Path | None = None, *, patches: Sequence[str] | None = None,
        force: bool = False, backend: str = DEFAULT_BACKEND, **load: object,
    ) -> None:
        if not isinstance(pallet, Pallet):
            path = Path(pallet)
            pallet = load_pallet(path, **load)  # type: ignore[arg-type]
            out = out if out is not None else default_out(path, pallet)
        elif out is None:
            out = default_out(pallet.source, pallet)
        self.pallet = pallet
        self.out = Path(out)
        self.backend = backend
        # check every input before the results folder is touched
        self.selected = pallet.select(patches)
        self.digests = checked_digests(pallet, self.selected)
        self.store = ResultStore(self.out, pallet_record(pallet), force=force, settings=computation_settings(backend))
        #: the selected patches still to fit, the names of those ``out`` already holds, and of
        #: those whose result ``out`` holds no longer applies (changed patch or settings), with why
        self.todo: list[Patch] = []
        self.skipped: list[str] = []
        self.changed: dict[str, str] = {}
        done = self.store.done()
        for p in self.selected:
            why = self.store.stale(p.name, self.digests[p.name])
            if why is not None:
                self.changed[p.name] = why
            if p.name in done and why is None:
                self.skipped.append(p.name)
            else:
                self.todo.append(p)

    def run(
        self, executor: cf.Executor, *, timeout: float | None = DEFAULT_TIMEOUT, max_in_flight: int = 64,
    ) -> Iterator[PatchResult]:
        """Fit the patches still to do on ``executor``, recording each result as it arrives."""
        yield from run_scan(self.pallet, self.todo, self.store, executor, backend=self.backend, timeout=timeout,
                            max_in_flight=max_in_flight, digests=self.digests)

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

    def close(self) -> None:
        """Export ``results.json`` / ``results.csv`` and release the folder's lock."""
        self.store.close()

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_scan(
    pallet: Pallet,
    todo: Sequence[Patch],
    store: ResultStore,
    executor: cf.Executor,
    *,
    backend: str = DEFAULT_BACKEND,
    timeout: float | None = DEFAULT_TIMEOUT,
    max_in_flight: int = 64,
    digests: Mapping[str, str] | None = None,
) -> Iterator[PatchResult]:
    """Fit ``todo`` on ``executor``, recording each result in ``store`` (with its patch's digest) as it arrives.

    ``digests``: the patches' content digests where known already (`checked_digests`), else computed here.
    """
    if digests is None:
        digests = {p.name: patch_digest(p.values, p.packed()) for p in todo}
    client = FitClient(executor, backend=backend, timeout=timeout, max_in_flight=max_in_flight)
    for result in client.scan(pallet, list(todo)):
        result = result.model_copy(update={"digest": digests.get(result.patch)})
        store.add(result)
        if result.failed:
            log.warning("patch %s failed: %s", result.patch, result.error)
        yield result
