"""One pinned stack: the versions client, endpoint and worker image must share, and the check.

A fit travels as a dill-pickled function from the client (``FitClient``, the Globus Compute
SDK) to a worker (the endpoint's parsl workers, often in the worker image). Globus Compute
turns parsl's own version check off, so a mismatch fails late and obscurely: a pickle that
will not load, a ``ManagerLost``, or worse, CLs from another pyhf. The versions are pinned
here, once:

* ``pyproject.toml`` pins the same versions (``tests/test_stack.py`` checks it);
* the worker images' locks (``images/*/requirements.lock``) hold them and the images use
  Python `PYTHON` (the same test checks the locks, ``requirements.in`` and the Dockerfiles);
* the shipped sites' worker images are tagged with `PINS` ``faasctl`` (the same test).

Before fitting, `faasctl check` and `faasctl.scan.client.FitClient` ask one worker for
`environment` (through `faasctl.scan.worker.worker_info`) and `compare` it with the client's.

Example:
    >>> errors, warnings = compare(environment(), environment())
    >>> errors, warnings
    ([], [])
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from faasctl import __version__
from faasctl.exceptions import StackMismatch

log = logging.getLogger(__name__)

__all__ = ["PYTHON", "PINS", "BREAKING", "environment", "compare", "check_worker", "WORKER_VERSION_ENV"]

#: The Python minor of the worker images (their base, python:3.11-slim); client and workers must share it.
PYTHON = "3.11"

#: distribution -> the version every part of a deployment runs
PINS: dict[str, str] = {
    "parsl": "2026.10.26",
    "globus-compute-endpoint": "4.19.0",
    "globus-compute-sdk": "4.19.0",
    "dill": "0.3.9",
    "pyhf": "0.7.6",
    "jax": "0.10.2",
    "faasctl": __version__,
}

#: Differences that break results, not only plumbing: the pickle format (Python minor and dill)
#: decides whether a task loads at all, pyhf computes the CLs, faasctl defines tasks and results.
BREAKING: dict[str, str] = {
    "python": "tasks are pickled (dill) and pickles do not cross Python minors",
    "dill": "the serialiser of tasks and results",
    "pyhf": "computes the CLs: another version may give other numbers",
    "faasctl": "defines the task and result records",
}

#: For tests and rehearsals: a worker whose environment has this variable reports it as its
#: faasctl version (so a mismatch can be staged on any executor without a second install).
WORKER_VERSION_ENV = "FAASCTL_WORKER_REPORTS_VERSION"


def _python_minor(version: str | None) -> str | None:
    return ".".join(version.split(".")[:2]) if version else None


def environment(*, worker: bool = False) -> dict[str, Any]:
    """The versions this process runs: ``python`` (full), each of `PINS`, numpy and scipy (None: absent).

    Args:
        worker: report as a worker does, honouring `WORKER_VERSION_ENV`.
    """
    info: dict[str, Any] = {"python": platform.python_version()}
    for dist in (*PINS, "numpy", "scipy"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    info["faasctl"] = info["faasctl"] or __version__
    if worker and os.environ.get(WORKER_VERSION_ENV):
        info["faasctl"] = os.environ[WORKER_VERSION_ENV]
    return info


def compare(worker: Mapping[str, Any], client: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """What differs between a worker's environment and the client's.

    Args:
        worker: `environment` as a worker reported it (`faasctl.scan.worker.worker_info`).
        client: `environment` of this process.

    Returns:
        ``(errors, warnings)``: one line per difference. Errors are those in `BREAKING`
        (Python minor, dill, pyhf, faasctl); the other pinned packages only warn, as does a
        key the worker did not report (an older faasctl on the worker).
    """
    errors: list[str] = []
    warnings: list[str] = []
    for key in ("python", *PINS):
        if key not in worker:
            warnings.append(f"{key}: not reported by the worker (faasctl there predates the stack check)")
            continue
        theirs, ours = worker[key], client.get(key)
        if key == "python":
            theirs, ours = _python_minor(theirs), _python_minor(ours)
        if theirs == ours:
            continue
        line = f"{key} {theirs or 'missing'} on the worker, {ours or 'missing'} here"
        if key in BREAKING:
            errors.append(f"{line} ({BREAKING[key]})")
        else:
            pinned = f"; the stack pins {PINS[key]}" if key in PINS else ""
            warnings.append(line + pinned)
    return errors, warnings


def check_worker(executor: cf.Executor, timeout: float | None = None) -> list[str]:
    """Ask one worker of ``executor`` for its environment and `compare` it with this process's.

    A worker that cannot answer (lost, no faasctl, not within ``timeout`` seconds) is logged
    and let through: the fits that follow meet the same problem and report it per patch.

    Returns:
        The warnings (also logged).

    Raises:
        StackMismatch: naming each difference that breaks results.
    """
    from faasctl.scan.worker import worker_info

    future: cf.Future[Any] | None = None
    try:
        future = executor.submit(worker_info)
        info = future.result(timeout=timeout)
    except Exception as err:  # noqa: BLE001 - the fits will surface it
        if future is not None:
            future.cancel()
        log.warning("could not ask a worker for its versions (%s: %s); fitting without the check", type(err).__name__, err)
        return []
    errors, warnings = compare(info, environment())
    if errors:
        raise StackMismatch(
            f"worker {info.get('worker', '?')} runs another stack than this client: " + "; ".join(errors)
            + " (install the pinned versions, faasctl.stack.PINS, on both sides)"
        )
    for line in warnings:
        log.warning("worker %s: %s", info.get("worker", "?"), line)
    return warnings
