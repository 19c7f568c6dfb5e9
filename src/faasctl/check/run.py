"""Health-check fits: does an endpoint still compute the right CLs after an upgrade?

A suite of reference fits (`faasctl.check.reference`) is sent to an endpoint or site as ordinary
patch fits (`faasctl.scan.client.FitClient` with `faasctl.scan.worker.fit_patch`), and each answer
is compared with the CLs values plain pyhf computed for it:

``quick``
    ``synthetic``: three patches on a three-bin model with a shapesys, a normsys and a histosys
    (the study's code4/code4p interpolation). Seconds on any worker.
``full``
    ``quick`` plus ``1Lbb``: three real patches of the ATLAS 1Lbb pallet (an excluded point,
    one near the CLs = 0.05 contour, one not excluded), when the pallet is found in the folder
    of pallets given (``pallets``, default ``$FAASCTL_PALLETS``). About 30 s per fit with numpy.

First one worker is asked for its versions (`faasctl.scan.worker.worker_info`, reported with the
results), allowing ``start_timeout`` for workers to start; then the fits are sent, each
allowed ``timeout``. A check passes when CLs_obs and the five CLs_exp agree with the
reference within the study's tolerance (`faasctl.study.agrees`). `CheckReport.raise_for_status`
raises `EndpointUnhealthy` when any check fails, errs or times out, so ``faasctl check`` exits
non-zero for cron and CI.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from faasctl.check.reference import SUITES, Reference, ReferenceFit, find_pallet, load_reference, pallets_folder
from faasctl.check.reference import synthetic_reference_pallet
from faasctl.exceptions import EndpointUnhealthy, PalletError
from faasctl.executors import open_executor
from faasctl.pallets.load import Pallet, load_pallet
from faasctl.scan.results import PatchResult
from faasctl.study import agrees

__all__ = ["CheckResult", "CheckReport", "compare", "run_check", "check_target"]

log = logging.getLogger(__name__)

EXPECTED_LABELS = ("-2σ", "-1σ", "median", "+1σ", "+2σ")


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
    wrong = [f"{n} {g:.6g} != {w:.6g}" for n, g, w in zip(names, got, want) if not agrees(g, w)]
    if len(got) != len(want):
        wrong.append(f"{len(got) - 1} expected CLs values instead of 5")
    common.update(cls_obs=result.cls_obs, cls_exp=result.cls_exp)
    if wrong:
        return CheckResult(status="fail", message="; ".join(wrong) + " (reference)", **common)
    return CheckResult(status="pass", message=f"CLs_obs {result.cls_obs:.4g}, agrees with pyhf", **common)


# --- running -----------------------------------------------------------------------------------


def _suite_pallet(
    name: str, reference: Reference, pallets: str | Path | None
) -> tuple[Pallet | None, list[CheckResult]]:
    """The pallet of a suite, or rows explaining why it cannot run."""
    if reference.background is not None:
        return synthetic_reference_pallet(reference), []
    assert reference.pallet is not None
    folder = find_pallet(reference.pallet, pallets)
    if folder is None:
        searched = pallets_folder(pallets)
        where = f"in {searched}" if searched is not None else "(no folder of pallets given; set FAASCTL_PALLETS)"
        message = f"pallet {reference.pallet} not found {where}"
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
    pallets: str | Path | None = None,
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
        pallets: the folder holding the real pallets of the ``full`` suite (``<pallets>/1Lbb``);
            default ``$FAASCTL_PALLETS``. Without it those checks are ``skipped``.

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
        pallet, rows = _suite_pallet(name, reference, pallets)
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
    from faasctl.exceptions import error_text
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
    start_timeout: float = 300.0, backend: str = "numpy", pallets: str | Path | None = None,
) -> CheckReport:
    """Open the target's executor, run the suite and return the report (what ``faasctl check`` does).

    The arguments are those of `run_check`; ``endpoint`` (a Globus Compute endpoint id) or ``site``
    (a site of the registry, ``local`` for this machine) choose the executor (`open_executor`).
    """
    target = f"endpoint {endpoint}" if endpoint else f"site {site}"
    with open_executor(endpoint=endpoint, site=site, workers=2, wait_on_exit=False) as executor:
        return run_check(executor, target=target, suite=suite, timeout=timeout, start_timeout=start_timeout,
                         backend=backend, pallets=pallets)
