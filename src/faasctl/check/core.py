"""Health-check fits: does an endpoint still compute the right CLs after an upgrade?

A *suite* of reference fits is sent to an endpoint or site as ordinary patch fits
(`faasctl.scan.client.FitClient` with `faasctl.scan.worker.fit_patch`), and each answer is compared
with the CLs values plain pyhf computed for it, stored in ``faasctl/reference/*.json``:

``quick``
    ``synthetic``: three patches on a three-bin model built from
    ``pyhf.simplemodels.uncorrelated_background`` (shapesys, plus a normsys and a histosys
    so that the study's code4/code4p interpolation is exercised). Seconds on any worker.
``full``
    ``quick`` plus ``1Lbb``: three real patches of the ATLAS 1Lbb pallet (an excluded point,
    one near the CLs = 0.05 contour, one not excluded), when the pallet is found in
    ``$FAASCTL_PALLETS/1Lbb`` or ``../shared/pallets/1Lbb``. About 30 s per fit with numpy.

First one worker is asked for its versions (`faasctl.scan.worker.worker_info`, reported with the
results), allowing ``start_timeout`` for workers to start; then the fits are sent, each
allowed ``timeout``. A check passes when CLs_obs and the five CLs_exp agree with the
reference within ``rel_tol=1e-3`` or ``abs_tol=1e-5``. `CheckReport.raise_for_status` raises `EndpointUnhealthy`
when any check fails, errs or times out, so ``faasctl check`` exits non-zero for cron and CI.

Regenerating the references (after a deliberate change of pyhf, or of the suites)::

    python -m faasctl.check --regenerate              # the synthetic suite (seconds)
    python -m faasctl.check --regenerate --suite full # and the 1Lbb suite (minutes)

They are computed in this process with plain pyhf (`faasctl.backends.numpy.pyhf_hypotest`:
``pyhf.infer.hypotest`` with the numpy backend and scipy), never typed in by hand.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import logging
import math
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from faasctl.exceptions import EndpointUnhealthy, PalletError, SiteConfigError
from faasctl.study import MODIFIER_SETTINGS
from faasctl.pallets.load import Pallet, Patch, load_pallet, workspace_digest
from faasctl.executors import open_executor
from faasctl.scan.results import PatchResult

__all__ = [
    "SUITES",
    "REL_TOL",
    "ABS_TOL",
    "Reference",
    "CheckResult",
    "CheckReport",
    "load_reference",
    "synthetic_reference_pallet",
    "run_check",
    "check_target",
    "regenerate",
]

log = logging.getLogger(__name__)

SUITES: dict[str, tuple[str, ...]] = {"quick": ("synthetic",), "full": ("synthetic", "1Lbb")}
REL_TOL = 1e-3
ABS_TOL = 1e-5
REFERENCE_SCHEMA = "faasctl/check-reference/1.0.0"
REGENERATE = "python -m faasctl.check --regenerate"
#: The 1Lbb patches of the full suite: excluded, near the contour, not excluded.
LBB_PATCHES = ("C1N2_Wh_hbb_500_0", "C1N2_Wh_hbb_700_150", "C1N2_Wh_hbb_1000_0")
EXPECTED_LABELS = ("-2σ", "-1σ", "median", "+1σ", "+2σ")


# --- reference files -------------------------------------------------------------------------


class ReferenceFit(BaseModel):
    """One reference fit: a patch and the CLs plain pyhf computed for it."""

    model_config = ConfigDict(extra="forbid")

    patch: str
    values: list[float]
    operations: list[dict[str, Any]] | None = Field(
        default=None, description="the JSON patch, for suites that carry their own pallet"
    )
    cls_obs: float
    cls_exp: list[float] = Field(min_length=5, max_length=5)


class Reference(BaseModel):
    """A reference file, ``faasctl/reference/<suite>.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(alias="schema")
    suite: str
    description: str
    generated_by: str
    generated_with: dict[str, str | None] = Field(description="versions of what computed the values")
    hypotest: str = Field(description="the test the values come from")
    digest: str = Field(description="sha256 of the background workspace")
    labels: list[str]
    pallet: str | None = Field(default=None, description="the pallet folder name, for suites read from disk")
    background: dict[str, Any] | None = Field(default=None, description="the background, for self-contained suites")
    fits: list[ReferenceFit]


def reference_path(suite: str) -> Path:
    """Where the reference of ``suite`` lives in the source tree (for regeneration)."""
    return Path(__file__).parent / "reference" / f"{suite.lower()}.json"


def load_reference(suite: str) -> Reference:
    """The stored reference of ``suite`` (``synthetic`` or ``1Lbb``).

    Raises:
        SiteConfigError: the file is missing or invalid (the message says how to regenerate it).
    """
    resource = resources.files("faasctl.check") / "reference" / f"{suite.lower()}.json"
    try:
        reference = Reference.model_validate_json(resource.read_text())
    except (OSError, ValueError) as err:
        raise SiteConfigError(f"faasctl/reference/{suite.lower()}.json: unreadable reference ({err}); "
                              f"regenerate it with {REGENERATE}") from err
    if reference.schema_ != REFERENCE_SCHEMA:
        raise SiteConfigError(f"faasctl/reference/{suite.lower()}.json: schema {reference.schema_!r} is not "
                              f"{REFERENCE_SCHEMA!r}; regenerate it with {REGENERATE}")
    return reference


def synthetic_reference_pallet(reference: Reference) -> Pallet:
    """The pallet a self-contained reference (``synthetic``) carries."""
    assert reference.background is not None
    patches = {f.patch: Patch(f.patch, tuple(f.values), f.operations or []) for f in reference.fits}
    return Pallet(source=f"faasctl:reference/{reference.suite.lower()}", background=reference.background,
                  patches=patches, labels=list(reference.labels), digest=reference.digest,
                  background_file=f"faasctl/reference/{reference.suite.lower()}.json",
                  patchset_file=f"faasctl/reference/{reference.suite.lower()}.json")


def pallet_search_path() -> list[Path]:
    """Folders searched for real pallets: ``$FAASCTL_PALLETS``, ``../shared/pallets``, the checkout's."""
    paths = [Path(p) for p in [os.environ.get("FAASCTL_PALLETS")] if p]
    paths.append(Path.cwd().parent / "shared" / "pallets")
    paths.append(Path(__file__).resolve().parents[3] / "shared" / "pallets")
    return list(dict.fromkeys(paths))


def find_pallet(name: str) -> Path | None:
    """The first folder called ``name`` on `pallet_search_path`, or None."""
    return next((p / name for p in pallet_search_path() if (p / name).is_dir()), None)


# --- building the synthetic suite (regeneration only) ----------------------------------------


def build_synthetic() -> tuple[dict[str, Any], dict[str, Patch]]:
    """The synthetic suite: a background-only workspace and three signal patches.

    The samples come from ``pyhf.simplemodels.uncorrelated_background``; the background gets
    a normsys and a histosys so the check covers the study's interpolation codes.
    """
    import pyhf

    bkg = [52.0, 38.0, 12.0]
    observed = [55.0, 36.0, 15.0]
    signals = {"weak": [1.0, 1.5, 1.0], "medium": [5.0, 6.0, 4.5], "strong": [16.0, 18.0, 12.0]}
    channels = None
    samples: dict[str, dict[str, Any]] = {}
    for name, signal in signals.items():
        spec = pyhf.simplemodels.uncorrelated_background(signal=signal, bkg=bkg, bkg_uncertainty=[4.0, 3.5, 2.5]).spec
        channel = spec["channels"][0]
        samples[name] = next(s for s in channel["samples"] if s["name"] == "signal")
        channels = [{**channel, "samples": [s for s in channel["samples"] if s["name"] != "signal"]}]
    assert channels is not None
    channels[0]["samples"][0]["modifiers"] += [
        {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.06, "lo": 0.95}},
        {"name": "bkg_shape", "type": "histosys",
         "data": {"hi_data": [54.0, 38.5, 11.0], "lo_data": [50.5, 37.0, 13.0]}},
    ]
    background = {
        "channels": channels,
        "observations": [{"name": channels[0]["name"], "data": observed}],
        "measurements": [{"name": "health_check", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    patches = {
        f"synthetic_{name}": Patch(f"synthetic_{name}", (float(i),),
                                   [{"op": "add", "path": "/channels/0/samples/0", "value": sample}])
        for i, (name, sample) in enumerate(samples.items())
    }
    return background, patches


# --- results -----------------------------------------------------------------------------------

Status = Literal["pass", "fail", "timeout", "error", "skipped"]


class CheckResult(BaseModel):
    """The outcome of one check."""

    name: str
    suite: str
    status: Status
    message: str
    seconds: float | None = Field(default=None, description="from the start of the check until this answer")
    fit_time: float | None = Field(default=None, description="seconds the fit took on the worker")
    worker: str | None = None
    cls_obs: float | None = None
    cls_exp: list[float] | None = None
    expected_cls_obs: float | None = None
    expected_cls_exp: list[float] | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "timeout", "error")


class CheckReport(BaseModel):
    """What ``faasctl check`` found."""

    schema_: str = Field(default="faasctl/check/1.0.0", alias="schema")
    target: str
    suite: str
    backend: str
    timeout: float
    start_timeout: float | None = None
    healthy: bool
    elapsed: float
    worker: dict[str, Any] | None = Field(default=None, description="faasctl.scan.worker.worker_info of one worker")
    checks: list[CheckResult]

    model_config = ConfigDict(populate_by_name=True)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed]

    def raise_for_status(self) -> None:
        """Raise `EndpointUnhealthy` naming each failed check, when there is one."""
        failures = self.failures
        if failures:
            details = "; ".join(f"{c.name}: {c.status}: {c.message}" for c in failures)
            raise EndpointUnhealthy(f"{self.target}: {len(failures)} of {len(self.checks)} checks failed: {details}")


def compare(result: PatchResult, fit: ReferenceFit, suite: str, *, seconds: float) -> CheckResult:
    """Judge one answer against its reference values."""
    common = dict(name=fit.patch, suite=suite, seconds=round(seconds, 3), fit_time=result.fit_time,
                  worker=result.worker, expected_cls_obs=fit.cls_obs, expected_cls_exp=fit.cls_exp)
    if not result.ok:
        error = result.error or "failed without an error message"
        status: Status = "timeout" if error.startswith("TimeoutError") else "error"
        return CheckResult(status=status, message=error, **common)
    assert result.cls_obs is not None and result.cls_exp is not None
    got = [result.cls_obs, *result.cls_exp]
    want = [fit.cls_obs, *fit.cls_exp]
    names = ["CLs_obs", *(f"CLs_exp({label})" for label in EXPECTED_LABELS)]
    wrong = [f"{n} {g:.6g} != {w:.6g}" for n, g, w in zip(names, got, want)
             if not math.isclose(g, w, rel_tol=REL_TOL, abs_tol=ABS_TOL)]
    if len(got) != len(want):
        wrong.append(f"{len(got) - 1} expected CLs values instead of 5")
    common.update(cls_obs=result.cls_obs, cls_exp=result.cls_exp)
    if wrong:
        return CheckResult(status="fail", message="; ".join(wrong) + " (reference)", **common)
    return CheckResult(status="pass", message=f"CLs_obs {result.cls_obs:.4g}, agrees with pyhf", **common)


# --- running -----------------------------------------------------------------------------------


def _suite_pallet(name: str, reference: Reference) -> tuple[Pallet | None, list[CheckResult]]:
    """The pallet of a suite, or rows explaining why it cannot run."""
    if reference.background is not None:
        return synthetic_reference_pallet(reference), []
    assert reference.pallet is not None
    folder = find_pallet(reference.pallet)
    if folder is None:
        where = ", ".join(str(p) for p in pallet_search_path())
        message = f"pallet {reference.pallet} not found in {where} (set FAASCTL_PALLETS)"
        log.warning("suite %s skipped: %s", name, message)
        return None, [CheckResult(name=f.patch, suite=name, status="skipped", message=message) for f in reference.fits]
    try:
        pallet = load_pallet(folder)
    except PalletError as err:
        return None, [CheckResult(name=f.patch, suite=name, status="error", message=str(err)) for f in reference.fits]
    if pallet.digest != reference.digest:
        message = (f"{folder}: background digest {pallet.digest[:12]}… is not the reference's "
                   f"{reference.digest[:12]}… (another version of the pallet?)")
        return None, [CheckResult(name=f.patch, suite=name, status="error", message=message) for f in reference.fits]
    return pallet, []


def run_check(
    executor: cf.Executor,
    *,
    target: str,
    suite: str = "quick",
    timeout: float = 120.0,
    start_timeout: float = 300.0,
    backend: str = "numpy",
) -> CheckReport:
    """Run a suite of reference fits on ``executor`` and judge the answers.

    First one worker is asked for its versions (`faasctl.scan.worker.worker_info`): that waits up
    to ``start_timeout`` for workers to start. Then the fits are sent, each allowed
    ``timeout`` seconds.

    Args:
        executor: where the fits run (any `concurrent.futures.Executor`, as `FitClient`).
        target: what ``executor`` is, for the report (``site local``, ``endpoint <uuid>``).
        suite: ``quick`` or ``full`` (see the module docstring).
        timeout: seconds each fit may take.
        start_timeout: seconds to wait for the first answer (workers starting, blocks queued).
        backend: the fit backend on the workers; the references are plain pyhf.

    Returns:
        The report; call `CheckReport.raise_for_status` to turn failures into an error.

    Raises:
        EndpointUnhealthy: the executor refuses tasks.
    """
    from faasctl.scan.client import FitClient
    from faasctl.exceptions import ScanError

    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    start = time.monotonic()
    info, info_check = _worker_info(executor, target, start, start_timeout)
    checks: list[CheckResult] = [info_check]
    for name in SUITES[suite]:
        reference = load_reference(name)
        if info_check.status in ("timeout", "fail"):
            why = "no worker answered" if info_check.status == "timeout" else "the worker's versions differ"
            checks += [CheckResult(name=f.patch, suite=name, status="skipped", message=f"not sent: {why}")
                       for f in reference.fits]
            continue
        pallet, rows = _suite_pallet(name, reference)
        checks += rows
        if pallet is None:
            continue
        fits = {f.patch: f for f in reference.fits}
        answers: dict[str, CheckResult] = {}
        client = FitClient(executor, backend=backend, timeout=timeout, retries=1, check_stack=False)  # compared above
        try:
            for result in client.scan(pallet, list(fits)):
                answers[result.patch] = compare(result, fits[result.patch], name, seconds=time.monotonic() - start)
        except ScanError as err:
            raise EndpointUnhealthy(f"{target}: {err}") from err
        checks += [answers[f] for f in fits]  # in the reference's order
        log.info("suite %s: %d fits in %.1f s", name, len(fits), time.monotonic() - start)
    return CheckReport(
        target=target, suite=suite, backend=backend, timeout=timeout, start_timeout=start_timeout, worker=info,
        checks=checks,
        elapsed=round(time.monotonic() - start, 3), healthy=not any(c.failed for c in checks),
    )


def _worker_info(
    executor: cf.Executor, target: str, start: float, start_timeout: float
) -> tuple[dict[str, Any] | None, CheckResult]:
    from faasctl.scan.client import error_text
    from faasctl.scan.worker import worker_info

    def row(status: Status, message: str, worker: str | None = None) -> CheckResult:
        return CheckResult(name="worker_info", suite="worker", status=status, message=message, worker=worker,
                           seconds=round(time.monotonic() - start, 3))

    try:
        future = executor.submit(worker_info)
    except Exception as err:  # noqa: BLE001 - shut down, not connected, refused
        raise EndpointUnhealthy(f"{target}: refused the first task: {error_text(err)}") from err
    try:
        info = future.result(timeout=start_timeout)
    except cf.TimeoutError:
        with contextlib.suppress(Exception):
            future.cancel()
        return None, row("timeout", f"TimeoutError: no worker answered within {start_timeout:g} s")
    except Exception as err:  # noqa: BLE001 - reported as a failed check
        return None, row("error", error_text(err))
    versions = ", ".join(f"{k} {info.get(k) or '-'}" for k in ("python", "pyhf", "numpy", "scipy", "jax", "faasctl"))
    from faasctl.stack import compare, environment

    errors, warnings = compare(info, environment())
    if errors:  # the fits would not be comparable with the reference: do not send them
        return info, row("fail", "worker and client differ: " + "; ".join(errors + warnings), info.get("worker"))
    return info, row("pass", "; ".join([versions, *warnings]), info.get("worker"))


# --- targets -----------------------------------------------------------------------------------


def check_target(
    *, endpoint: str | None = None, site: str = "local", suite: str = "quick", timeout: float = 120.0,
    start_timeout: float = 300.0, backend: str = "numpy",
) -> CheckReport:
    """Open the target's executor, run the suite and return the report (what ``faasctl check`` does)."""
    target = f"endpoint {endpoint}" if endpoint else f"site {site}"
    with open_executor(endpoint=endpoint, site=site, workers=2, wait_on_exit=False) as executor:
        return run_check(executor, target=target, suite=suite, timeout=timeout, start_timeout=start_timeout,
                         backend=backend)


# --- regeneration ------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    import platform
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("pyhf", "numpy", "scipy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _reference_fits(pallet: Pallet, names: Sequence[str], *, carry_operations: bool) -> list[ReferenceFit]:
    import pyhf

    from faasctl.study import pyhf_hypotest

    pyhf.set_backend("numpy")  # pyhf's defaults: numpy tensors, scipy's SLSQP
    fits = []
    for name in names:
        patch = pallet.patches[name]
        start = time.perf_counter()
        cls_obs, cls_exp = pyhf_hypotest(pallet.workspace_spec(patch))
        log.info("%s: CLs_obs %.6g (%.1f s)", name, cls_obs, time.perf_counter() - start)
        fits.append(ReferenceFit(patch=name, values=list(patch.values), cls_obs=cls_obs, cls_exp=cls_exp,
                                 operations=patch.operations if carry_operations else None))
    return fits


def regenerate(suite: str = "quick", *, out_dir: Path | None = None) -> list[Path]:
    """Recompute the reference files of ``suite`` with plain pyhf and write them.

    Args:
        suite: ``quick`` (synthetic) or ``full`` (synthetic and 1Lbb; needs the pallet).
        out_dir: where to write (default: the package's ``reference`` folder).

    Returns:
        The files written.

    Raises:
        PalletError: the 1Lbb pallet is not found.
    """
    hypotest = (f"pyhf.infer.hypotest(1.0, data, model, test_stat='qtilde', return_expected_set=True), "
                f"modifier_settings={MODIFIER_SETTINGS}")
    common = dict(schema=REFERENCE_SCHEMA, generated_by=f"{REGENERATE} --suite {suite}",
                  generated_with=_versions(), hypotest=hypotest)
    written = []
    for name in SUITES[suite]:
        if name == "synthetic":
            background, patches = build_synthetic()
            pallet = Pallet(source="synthetic", background=background, patches=patches, labels=["signal_index"],
                            digest=workspace_digest(background))
            reference = Reference(
                suite=name, description="pyhf.simplemodels.uncorrelated_background with a normsys and a histosys; "
                "three signal strengths", digest=pallet.digest, labels=pallet.labels, background=background,
                fits=_reference_fits(pallet, list(patches), carry_operations=True), **common)
        else:
            folder = find_pallet(name)
            if folder is None:
                raise PalletError(f"pallet {name} not found in {', '.join(map(str, pallet_search_path()))}")
            pallet = load_pallet(folder)
            reference = Reference(
                suite=name, description=f"real patches of the ATLAS {name} pallet", digest=pallet.digest,
                labels=pallet.labels, pallet=name, fits=_reference_fits(pallet, LBB_PATCHES, carry_operations=False),
                **common)
        path = (out_dir or reference_path(name).parent) / f"{name.lower()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(reference.model_dump(by_alias=True, exclude_none=True), indent=1) + "\n")
        written.append(path)
        log.info("wrote %s", path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m faasctl.check --regenerate [--suite quick|full]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m faasctl.check.core", description=__doc__.split("\n\n")[0])
    parser.add_argument("--regenerate", action="store_true", required=True,
                        help="recompute the reference CLs with plain pyhf and rewrite faasctl/reference/*.json")
    parser.add_argument("--suite", choices=list(SUITES), default="quick")
    parser.add_argument("--out-dir", type=Path, default=None, help="write here instead of the package")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    regenerate(args.suite, out_dir=args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
