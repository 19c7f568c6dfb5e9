"""Where a scan's time went: a timeline picture and a breakdown of the fixed costs and the fits.

Made from what every result records (`faasctl.scan.results.TaskTiming`) and, for the client,
the `Phases` the caller marked (``faasctl fit --timeline`` marks its own: imports, pallet read,
engine start, scan, plot). Times are ``time.time()`` values; on one machine the client's and
the workers' clocks are the same, on a cluster they differ by the nodes' clock offset.

``timeline.png``: one lane for the client and one per worker. A worker's lane starts when
its process started (the local engine's last worker waits for the first task: its lane starts
then); the time until it was ready (set up by the local engine: imports, JAX) or, elsewhere,
until its first task started, is drawn as *start + imports*; then each task
is a bar: *compile* for a fit that compiled the engine (or loaded it compiled: the worker's first
of a model layout), *fit* for the others.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pydantic and the results' models: not before the CLI has started its workers
    from faasctl.scan.results import PatchResult

__all__ = ["Phases", "breakdown", "timeline_plot", "write_timeline"]

COLORS = {
    "imports": "#bbbbbb",
    "read pallet": "#8da0cb",
    "engine start": "#e78ac3",
    "scan": "#e5f5e0",
    "plot": "#a6d854",
    "start + imports": "#bbbbbb",
    "compile": "#fc8d62",
    "fit": "#4a7fb5",
    "failed": "#d62728",
}


def process_start() -> float:
    """When this process started (``time.time()``), for the client's *imports* phase."""
    from faasctl.scan.worker import process_start_time

    return process_start_time() or time.time()


@dataclass
class Phases:
    """The client's phases of a scan: name -> (start, end), in ``time.time()``.

    Example:
        >>> phases = Phases()
        >>> with phases("read pallet"):  # doctest: +SKIP
        ...     pallet = load_pallet(path)
    """

    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    def mark(self, name: str, start: float, end: float | None = None) -> None:
        self.spans[name] = (start, time.time() if end is None else end)

    def __call__(self, name: str) -> Any:
        import contextlib

        @contextlib.contextmanager
        def span() -> Any:
            start = time.time()
            try:
                yield
            finally:
                self.mark(name, start)

        return span()


def _workers(results: Sequence[PatchResult]) -> dict[str, list[PatchResult]]:
    lanes: dict[str, list[PatchResult]] = {}
    for r in results:
        if r.timing is not None and r.timing.started is not None and r.timing.finished is not None:
            lanes.setdefault(r.worker or "?", []).append(r)
    for tasks in lanes.values():
        tasks.sort(key=lambda r: r.timing.started)  # type: ignore[union-attr]
    return dict(sorted(lanes.items(), key=lambda kv: kv[1][0].timing.started))  # type: ignore[union-attr]


def _worker_setup(tasks: list[PatchResult]) -> tuple[float, float] | None:
    """(start, ready) of a worker: its process's start (or, if it waited for the first task, when it
    stopped waiting), and the engine's mark, else its first task's start."""
    first = tasks[0].timing
    assert first is not None
    if first.worker_start is None:
        return None
    start = max(first.worker_start, first.worker_released or first.worker_start)
    ready = first.worker_ready if first.worker_ready is not None else first.started
    return start, max(start, ready or start)


def breakdown(results: Sequence[PatchResult], phases: Phases | None = None) -> dict[str, float | int | None]:
    """Where the time went, in seconds: the fixed costs, the fits and the tail.

    ``wall`` runs from the first phase (or the first submission) to the last phase's end (or
    the last result); ``first_result`` from that start to the first result received.
    ``engine_start``: from the engine's start to the first worker process; ``worker_import``:
    a worker process's start to ready (median); ``compile``: the fits that compiled (or loaded
    the compiled engine), less a plain fit (median); ``fit``: a plain fit (median); ``fits``: the
    seconds of fitting on all workers, compilation not counted; ``tail``: from the last result to
    the end; ``overhead``: median round trip less the time on the worker (mostly the wait in the
    executor's queue: `FitClient` queues tasks ahead of the workers on purpose).
    """
    spans = phases.spans if phases is not None else {}
    timed = [r for r in results if r.timing is not None and r.timing.received is not None]
    starts = [s for s, _ in spans.values()] or [r.timing.submitted for r in timed if r.timing.submitted]  # type: ignore[union-attr]
    received = [r.timing.received for r in timed]  # type: ignore[union-attr]
    origin = min(starts) if starts else None
    end = max([e for _, e in spans.values()] + received) if (spans or received) else None
    lanes = _workers(results)
    setups = [s for s in (_worker_setup(t) for t in lanes.values()) if s is not None]
    plain = [r.fit_time for r in results if r.fit_time is not None and r.timing and r.timing.compiled is False]
    compiling = [r.fit_time for r in results if r.fit_time is not None and r.timing and r.timing.compiled]
    fit = statistics.median(plain) if plain else None
    overheads = [r.timing.overhead for r in timed if r.timing.overhead is not None]  # type: ignore[union-attr]
    engine = spans.get("engine start")

    def since(t: float | None) -> float | None:
        return None if t is None or origin is None else t - origin

    return {
        "wall": since(end),
        "first_result": since(min(received)) if received else None,
        "imports": _length(spans.get("imports")),
        "pallet_read": _length(spans.get("read pallet")),
        "engine_start": (min(s for s, _ in setups) - engine[0]) if engine and setups else None,
        "worker_import": statistics.median(r - s for s, r in setups) if setups else None,
        "compile": (statistics.median(compiling) - (fit or 0.0)) if compiling else None,
        "fit": fit,
        "fits": sum(plain) + len(compiling) * (fit or 0.0),
        "workers": len(lanes),
        "patches": len(results),
        "overhead": statistics.median(overheads) if overheads else None,
        "tail": (end - max(received)) if received and end is not None else None,
        "plot": _length(spans.get("plot")),
    }


def _length(span: tuple[float, float] | None) -> float | None:
    return None if span is None else span[1] - span[0]


def timeline_plot(results: Sequence[PatchResult], path: str | Path, *, phases: Phases | None = None,
                  title: str = "") -> Path | None:
    """Draw the timeline of ``results`` (and the client's ``phases``) to ``path``; None without timings."""
    lanes = _workers(results)
    spans = phases.spans if phases is not None else {}
    if not lanes and not spans:
        return None
    # a Figure of its own, as the exclusion plot (`faasctl.scan.plot`): no pyplot, no GUI backend
    from faasctl.scan.plot import matplotlib_ready

    matplotlib_ready()
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch as Swatch

    starts = [s for s, _ in spans.values()]
    for tasks in lanes.values():
        setup = _worker_setup(tasks)
        starts.append(setup[0] if setup else tasks[0].timing.started)  # type: ignore[union-attr]
    origin = min(starts)
    rows: list[tuple[str, list[tuple[float, float, str]]]] = []
    if spans:
        rows.append(("client", [(s - origin, e - s, name) for name, (s, e) in spans.items() if name != "scan"]))
    for i, (worker, tasks) in enumerate(lanes.items(), 1):
        bars = []
        setup = _worker_setup(tasks)
        if setup is not None:
            bars.append((setup[0] - origin, setup[1] - setup[0], "start + imports"))
        for r in tasks:
            t = r.timing
            assert t is not None and t.started is not None and t.finished is not None
            kind = "failed" if not r.ok else "compile" if t.compiled else "fit"
            bars.append((t.started - origin, max(t.finished - t.started, 1e-3), kind))
        rows.append((f"worker {i}\n{worker.rsplit(':', 1)[-1]}", bars))

    height = 1.2 + 0.45 * len(rows)
    fig = Figure(figsize=(10, height), layout="constrained")
    ax = fig.subplots()
    scan = spans.get("scan")
    if scan is not None:
        ax.axvspan(scan[0] - origin, scan[1] - origin, color=COLORS["scan"], zorder=0)
    used: dict[str, None] = {}
    for y, (_, bars) in enumerate(rows):
        for kind in ("start + imports", "imports", "read pallet", "engine start", "plot", "compile", "fit", "failed"):
            chosen = [(x, w) for x, w, k in bars if k == kind]
            if chosen:
                used[kind] = None
                ax.broken_barh(chosen, (y - 0.35, 0.7), facecolors=COLORS[kind],
                               edgecolor="white" if kind == "fit" else "none", linewidth=0.3, zorder=2)
    received = sorted(r.timing.received - origin for r in results if r.timing and r.timing.received)
    if received:
        ax.axvline(received[0], color="k", linestyle=":", linewidth=1, zorder=3)
        right = received[0] > 0.8 * max([x + w for _, bars in rows for x, w, _ in bars] + received)
        ax.text(received[0], -0.6, "first result " if right else " first result", fontsize=8, va="top",
                ha="right" if right else "left")
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.9)
    ax.set_xlim(0, None)
    ax.set_xlabel("seconds since the start")
    ax.grid(axis="x", alpha=0.3)
    handles = [Swatch(color=COLORS[k], label=k) for k in used]
    if scan is not None:
        handles.append(Swatch(color=COLORS["scan"], label="scan"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def write_timeline(results: Sequence[PatchResult], out_dir: str | Path, *, phases: Phases | None = None,
                   title: str = "") -> Path | None:
    """``timeline.png`` and ``timeline.json`` (the client's phases and the `breakdown`) in ``out_dir``."""
    out_dir = Path(out_dir)
    png = timeline_plot(results, out_dir / "timeline.png", phases=phases, title=title)
    doc = {"phases": phases.spans if phases is not None else {}, "breakdown": breakdown(results, phases)}
    (out_dir / "timeline.json").write_text(json.dumps(doc, indent=1) + "\n")
    return png
