"""What runs on a worker: one patch's fit, as a plain function any executor can ship.

Tasks carry the background workspace only until the worker has it: each worker keeps the
`MAX_BACKGROUNDS` backgrounds it used last, keyed by digest, so a scan ships the (often
MB-sized) background once per worker instead of once per patch, and a long-lived endpoint
worker does not keep every background it has seen. A task that reaches a worker without
it comes back as ``{"status": "need-background"}`` and the client resends it with the
background. A background too large for a task is read from the chunks staged on the worker's
node instead (`faasctl.scan.staging`).

A patch's record has ``status`` ``"ok"`` (with its CLs), ``"no_sensitivity"`` (no CLs, and
the reason in ``error``: `faasctl.study.no_sensitivity` decides it, the same for every
backend) or ``"failed"``. Fits that raise are caught and returned as failed records: only
lost workers and tasks (infrastructure) surface as exceptions, which executors may retry.

Each record carries the worker's side of the task's timing (``timing``: when it started and
finished on the worker's clock, when the worker process started and got ready, the seconds
spent importing the backend, whether the fit compiled the engine); the client adds its side
(`faasctl.scan.client`). The jax backend keeps the engine it compiles for a model layout in the
user's cache folder (`faasctl.backends.jax.engine_cache_dir`), so a worker compiles each layout
once per machine and JAX version instead of once per process.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["fit_patch", "freeze_heap", "noop", "worker_info", "warm_up", "mark_ready", "process_start_time",
           "NEED_BACKGROUND", "MAX_BACKGROUNDS"]

log = logging.getLogger(__name__)

NEED_BACKGROUND = "need-background"
#: Backgrounds a worker keeps (the ones used last); a scan needs one.
MAX_BACKGROUNDS = 4

# this process: when it started and got ready (initializer of the local engine), wall clock
_PROCESS: dict[str, float | None] = {"start": None, "ready": None, "released": None, "frozen": None}

# digest -> background spec, least recently used first
_BACKGROUNDS: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()


def _background(digest: str, background: dict[str, Any] | bytes | None) -> dict[str, Any] | None:
    """The background of ``digest``: the one kept, else ``background`` (then kept), else None.

    ``background`` may come pickled (bytes, as `FitClient` sends it): unpickled only if not kept yet.
    """
    kept = _BACKGROUNDS.get(digest)
    if kept is None:
        if background is None:
            return None
        if isinstance(background, bytes):
            import pickle

            background = pickle.loads(background)  # noqa: S301 - the client's own task
        # keep the first copy: backends cache work per background object and digest
        kept = _BACKGROUNDS[digest] = background
        while len(_BACKGROUNDS) > MAX_BACKGROUNDS:
            _BACKGROUNDS.popitem(last=False)
    _BACKGROUNDS.move_to_end(digest)
    return kept


def _staged_background(digest: str, count: int) -> dict[str, Any] | None:
    """The background ``digest`` assembled from the chunks staged on this node (then kept), or None."""
    from faasctl.scan.staging import load_staged

    spec = load_staged(digest, count)
    return None if spec is None else _background(digest, spec)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process_start_time() -> float | None:
    """When this process started, as a ``time.time()`` value (None where it cannot be told).

    On Linux from ``/proc/self/stat`` against the boot-time clock (to the clock tick, unlike
    psutil's, which counts from a boot time rounded to the second).
    """
    if _PROCESS["start"] is None:
        try:
            fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(fields[19])  # field 22: starttime, in clock ticks since boot
            since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
            _PROCESS["start"] = time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))
        except (OSError, ValueError, IndexError, AttributeError):
            try:
                import psutil

                _PROCESS["start"] = psutil.Process().create_time()
            except Exception:  # noqa: BLE001 - no /proc, no psutil
                return None
    return _PROCESS["start"]


def mark_ready(released: float | None = None) -> None:
    """Record that this worker process is set up (the local engine's initializer calls it); ``released``:
    when it stopped waiting for the first task and began its imports, if it waited."""
    _PROCESS["ready"] = time.time()
    _PROCESS["released"] = released


def warm_up(backend: str) -> None:
    """Import ``backend`` and start its runtime, so the first task does not pay for it; the jax
    backend also loads the engine this machine used last (`faasctl.backends.jax.preload_engine`).
    The objects all that leaves are frozen (`freeze_heap`): the first task's freeze then walks only
    its own (1Lbb: 0.10-0.13 s of the first task → 0.03 s)."""
    from faasctl.backends import get_backend

    try:
        # the jax backend starts JAX's runtime (`faasctl.backends.jax.start_runtime`)
        if get_backend(backend).name == "jax":
            from faasctl.backends.jax import preload_engine

            preload_engine()
    except Exception as err:  # noqa: BLE001 - the first task reports it as a failed fit
        log.warning("warming up backend %s failed: %s", backend, err)
    freeze_heap()


def _engines() -> int:
    """Engines the jax backend compiled or loaded compiled in this process."""
    import sys

    module = sys.modules.get("faasctl.backends.jax")  # maybe still being imported by another thread
    return sum(getattr(module, "TRACES", {}).values()) + sum(getattr(module, "LOADS", {}).values())


def fit_patch(task: dict[str, Any]) -> dict[str, Any]:
    """Fit one patch.

    Args:
        task: ``{"digest", "background" (or None; a dict, or pickled), "staged" (the number of chunks of a staged
            background, or None), "patch": {"name", "values", "packed" (`pack_operations`) or "operations"},
            "backend"}``.

    Returns:
        A result record (see `faasctl.scan.results.PatchResult`) as a plain dict.
    """
    started = time.time()
    from faasctl.backends import get_backend
    from faasctl.pallets.load import Patch, unpack_operations

    digest = task["digest"]
    patch_info = task["patch"]
    record: dict[str, Any] = {
        "patch": patch_info["name"],
        "values": list(patch_info["values"]),
        "backend": task["backend"],
        "worker": worker_id(),
    }
    timing: dict[str, Any] = {"started": started, "worker_start": process_start_time(), "worker_ready": _PROCESS["ready"],
                              "worker_released": _PROCESS["released"]}
    background = _background(digest, task.get("background"))
    if background is None and task.get("staged"):
        try:
            background = _staged_background(digest, task["staged"])
        except ValueError as err:  # corrupt chunks: a failed fit, not a lost worker
            return {**record, "status": "failed", "error": f"staged background: {err}", "timing": {**timing, "finished": time.time()}}
    if background is None:
        return {**record, "status": NEED_BACKGROUND, "staged": bool(task.get("staged")),
                "timing": {**timing, "finished": time.time()}}

    engines = _engines()
    start = time.perf_counter()
    try:
        backend = get_backend(task["backend"])
        timing["setup"] = time.perf_counter() - start  # imports, on a worker's first task
        start = time.perf_counter()
        record["backend"] = backend.name
        operations = patch_info["operations"] if "operations" in patch_info else unpack_operations(patch_info["packed"])
        patch = Patch(patch_info["name"], tuple(patch_info["values"]), operations)
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
    timing["compiled"] = _engines() > engines
    if timing["compiled"] or not _PROCESS.get("frozen"):
        freeze_heap()
        _PROCESS["frozen"] = time.time()
    record["timing"] = {**timing, "finished": time.time()}
    return record


def freeze_heap() -> None:
    """Keep the objects alive now out of Python's cyclic garbage collector from here on (``gc.freeze``).

    Imports and a compilation leave ~10^5 long-lived objects, which each collection walks
    again: collections that the decode of one patch triggers took 13 of its 14 ms (1Lbb, in
    a worker with JAX loaded). They hold no garbage to collect.
    """
    import gc

    gc.collect()
    gc.freeze()


def noop(x: Any = None) -> Any:
    """A task that does nothing: measures the orchestration overhead."""
    return x


def worker_info() -> dict[str, Any]:
    """Versions of what fits run on, as a worker sees them (`faasctl.stack.environment`)."""
    from faasctl.stack import environment

    return {"worker": worker_id(), **environment(worker=True)}
