"""The exclusion plot: CLs over the two mass parameters, with the CLs = 0.05 contours."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

from faasctl.scan.results import PatchResult

__all__ = ["exclusion_plot", "preload", "matplotlib_ready"]


_preloading: threading.Thread | None = None


def _import_matplotlib() -> None:
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.colors  # noqa: F401
        import matplotlib.figure  # noqa: F401
        import matplotlib.lines  # noqa: F401
        import matplotlib.patches  # noqa: F401
        import matplotlib.ticker  # noqa: F401
        import matplotlib.tri  # noqa: F401
    except Exception:  # noqa: BLE001 - the plot itself reports a broken matplotlib
        pass


def preload() -> None:
    """Import the plots' matplotlib modules in a thread (~0.6 s here), e.g. while the fits run.

    A scan's client mostly waits for results: imported then, matplotlib is not in the time
    between the last result and the exit. The plots wait for it (`matplotlib_ready`).
    """
    global _preloading
    if _preloading is None:
        _preloading = threading.Thread(target=_import_matplotlib, name="faasctl-preload-matplotlib")
        _preloading.start()


def matplotlib_ready() -> None:
    """Wait for a `preload` under way: two threads importing matplotlib at once can meet one of its
    circular imports half done (``ImportError: cannot import name ... partially initialized module``)."""
    if _preloading is not None:
        _preloading.join()


def exclusion_plot(results: Sequence[PatchResult], labels: Sequence[str], path: str | Path, *, title: str = "") -> Path | None:
    """Draw CLs_obs per point and the observed / expected (±1σ band) CLs = 0.05 contours.

    Points are the patches' first two ``values``. Contours need at least three points that
    are not on a line; with fewer only the points are drawn. Patches without sensitivity
    (no CLs) are drawn as grey crosses and left out of the contours; failed ones are not
    drawn. Returns None when there are no two-dimensional points to draw.
    """
    # a Figure of its own, not pyplot: no GUI backend or global figure state, and ~0.4 s less to import.
    # Plain text, no $mathtext$ (also not in the colour bar's ticks): its parser took ~0.7 s of ~1.5.
    matplotlib_ready()
    import matplotlib.colors
    import matplotlib.ticker
    import matplotlib.tri as mtri
    import numpy as np
    from matplotlib.figure import Figure

    ok = [r for r in results if r.ok and len(r.values) >= 2 and r.cls_exp]
    blind = [r for r in results if r.status == "no_sensitivity" and len(r.values) >= 2]
    if not ok and not blind:
        return None
    x = np.array([r.values[0] for r in ok])
    y = np.array([r.values[1] for r in ok])
    obs = np.array([r.cls_obs for r in ok])
    exp = np.array([r.cls_exp for r in ok]).reshape(-1, 5)

    fig = Figure(figsize=(7, 5.5), layout="constrained")
    ax = fig.subplots()
    if ok:
        sc = ax.scatter(x, y, c=obs, cmap="viridis_r", norm=matplotlib.colors.LogNorm(vmin=max(obs.min(), 1e-6), vmax=1),
                        s=28, edgecolors="k", linewidths=0.3, zorder=3)
        bar = fig.colorbar(sc, ax=ax, label="CLs observed")
        bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        bar.ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if blind:
        ax.scatter([r.values[0] for r in blind], [r.values[1] for r in blind], marker="x", c="grey", s=28,
                   linewidths=1, zorder=3)
    try:
        tri = mtri.Triangulation(x, y)
        # tricontour needs values on both sides of the level; matplotlib warns otherwise.
        def contour(z: np.ndarray, **kw: object) -> None:
            if z.min() < 0.05 < z.max():
                ax.tricontour(tri, z, levels=[0.05], **kw)

        # ±1σ band: excluded by the -1σ expectation but not by the +1σ one
        if exp[:, 1].min() < 0.05:
            ax.tricontourf(tri, exp[:, 1], levels=[0, 0.05], colors=["gold"], alpha=0.5, zorder=1)
        if exp[:, 3].min() < 0.05:
            ax.tricontourf(tri, exp[:, 3], levels=[0, 0.05], colors=["white"], zorder=1.5)
        contour(exp[:, 2], colors="k", linestyles="--", linewidths=1.5)
        contour(obs, colors="firebrick", linewidths=2)
    except (ValueError, RuntimeError):
        pass  # too few or collinear points for contours: the points alone are drawn
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch as Box

    handles = [
        Line2D([], [], color="firebrick", lw=2, label="Observed CLs = 0.05"),
        Line2D([], [], color="k", ls="--", lw=1.5, label="Expected CLs = 0.05"),
        Box(facecolor="gold", alpha=0.5, label="Expected ±1σ"),
    ]
    if blind:
        handles.append(Line2D([], [], color="grey", marker="x", ls="", label="No sensitivity (no CLs)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2 if len(handles) > 3 else 3, frameon=False)  # off the points
    ax.use_sticky_edges = False  # the filled band would pin the axes to the outermost points, cutting them in half
    ax.margins(0.04)
    ax.set_xlabel(labels[0] if len(labels) > 0 else "value 0")
    ax.set_ylabel(labels[1] if len(labels) > 1 else "value 1")
    ax.set_title(title or f"{len(ok)} points" + (f", {len(blind)} without sensitivity" if blind else ""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
