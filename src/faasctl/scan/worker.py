"""What runs on a worker: one patch's fit, as a plain function any executor can ship.

Tasks carry the background workspace only until the worker has it: each worker keeps the
`MAX_BACKGROUNDS` backgrounds it used last, keyed by digest, so a scan ships the (often
MB-sized) background once per worker instead of once per patch, and a long-lived endpoint
worker does not keep every background it has seen. A task that reaches a worker without
it comes back as ``{"status": "need-background"}`` and the client resends it with the
background.

A patch's record has ``status`` ``"ok"`` (with its CLs), ``"no_sensitivity"`` (no CLs, and
the reason in ``error``: `faasctl.study.no_sensitivity` decides it, the same for every
backend) or ``"failed"``. Fits that raise are caught and returned as failed records: only
lost workers and tasks (infrastructure) surface as exceptions, which executors may retry.
"""

from __future__ import annotations

import collections
import os
import socket
import time
import traceback
from typing import Any

__all__ = ["fit_patch", "noop", "worker_info", "NEED_BACKGROUND", "MAX_BACKGROUNDS"]

NEED_BACKGROUND = "need-background"
#: Backgrounds a worker keeps (the ones used last); a scan needs one.
MAX_BACKGROUNDS = 4

# digest -> background spec, least recently used first
_BACKGROUNDS: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()


def _background(digest: str, background: dict[str, Any] | None) -> dict[str, Any] | None:
    """The background of ``digest``: the one kept, else ``background`` (then kept), else None."""
    kept = _BACKGROUNDS.get(digest)
    if kept is None:
        if background is None:
            return None
        # keep the first copy: backends cache work per background object and digest
        kept = _BACKGROUNDS[digest] = background
        while len(_BACKGROUNDS) > MAX_BACKGROUNDS:
            _BACKGROUNDS.popitem(last=False)
    _BACKGROUNDS.move_to_end(digest)
    return kept


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fit_patch(task: dict[str, Any]) -> dict[str, Any]:
    """Fit one patch.

    Args:
        task: ``{"digest", "background" (or None), "patch": {"name", "values", "operations"},
            "backend"}``.

    Returns:
        A result record (see `faasctl.scan.results.PatchResult`) as a plain dict.
    """
    from faasctl.backends import get_backend
    from faasctl.pallets.load import Patch

    digest = task["digest"]
    patch_info = task["patch"]
    record: dict[str, Any] = {
        "patch": patch_info["name"],
        "values": list(patch_info["values"]),
        "backend": task["backend"],
        "worker": worker_id(),
    }
    background = _background(digest, task.get("background"))
    if background is None:
        return {**record, "status": NEED_BACKGROUND}

    start = time.perf_counter()
    try:
        backend = get_backend(task["backend"])
        record["backend"] = backend.name
        patch = Patch(patch_info["name"], tuple(patch_info["values"]), patch_info["operations"])
        result = backend.hypotest(background, digest, patch)
        record.update(backend=result.backend, fallback=result.fallback)
        reason = result.no_sensitivity
        if reason is None:
            record.update(status="ok", cls_obs=result.cls_obs, cls_exp=result.cls_exp)
        else:
            record.update(status="no_sensitivity", error=reason)
    except Exception as err:  # noqa: BLE001 - a failed fit is a result, not a crash
        record.update(status="failed", error=f"{type(err).__name__}: {err}".strip())
        record["traceback"] = traceback.format_exc(limit=4)
    record["fit_time"] = time.perf_counter() - start
    return record


def noop(x: Any = None) -> Any:
    """A task that does nothing: measures the orchestration overhead."""
    return x


def worker_info() -> dict[str, Any]:
    """Versions of what fits run on, as a worker sees them (`faasctl.stack.environment`)."""
    from faasctl.stack import environment

    return {"worker": worker_id(), **environment(worker=True)}
