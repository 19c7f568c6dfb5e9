"""What runs on a worker: one patch's fit, as a plain function any executor can ship.

Tasks carry the background workspace only until the worker has it: each worker keeps the
backgrounds it has seen, keyed by digest, so a scan ships the (often MB-sized) background
once per worker instead of once per patch. A task that reaches a worker without it comes
back as ``{"status": "need-background"}`` and the client resends it with the background.

Fits that raise are caught and returned as ``status: "failed"`` records: only lost workers
and tasks (infrastructure) surface as exceptions, which executors may retry.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from typing import Any

__all__ = ["fit_patch", "noop", "worker_info", "NEED_BACKGROUND"]

NEED_BACKGROUND = "need-background"

# digest -> background spec; lives as long as the worker process
_BACKGROUNDS: dict[str, dict[str, Any]] = {}


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
    if task.get("background") is not None:
        # keep the first copy: backends cache work per background object/digest
        _BACKGROUNDS.setdefault(digest, task["background"])
    patch_info = task["patch"]
    record: dict[str, Any] = {
        "patch": patch_info["name"],
        "values": list(patch_info["values"]),
        "backend": task["backend"],
        "worker": worker_id(),
    }
    background = _BACKGROUNDS.get(digest)
    if background is None:
        return {**record, "status": NEED_BACKGROUND}

    start = time.perf_counter()
    try:
        backend = get_backend(task["backend"])
        record["backend"] = backend.name
        patch = Patch(patch_info["name"], tuple(patch_info["values"]), patch_info["operations"])
        cls_obs, cls_exp = backend.hypotest(background, digest, patch)
        values = [cls_obs, *cls_exp]
        if not all(math.isfinite(v) for v in values):
            raise FloatingPointError(f"CLs is not finite: obs={cls_obs}, exp={cls_exp}")
        record.update(status="ok", cls_obs=cls_obs, cls_exp=cls_exp)
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
