"""``faasctl fit``: scan a pallet."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from faasctl.cli import options
from faasctl.study import DEFAULT_TIMEOUT

#: the default --timeout in direct mode: a site's blocks may wait in the batch queue first
DIRECT_TIMEOUT = 3600.0

app = typer.Typer()
console = Console()

EXIT_HELP = ("Exit status: 0 every patch fitted (ok, or no sensitivity); 1 some patches failed (recorded with their "
             "error); 2 bad input; 130 interrupted.")


def _check_timeout(value: Optional[float]) -> Optional[float]:
    if value is not None and not 0 < value < math.inf:
        raise typer.BadParameter(f"must be a positive, finite number of seconds, not {value}")
    return value


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP stop the scan as Ctrl-C does: once; later ones do not cut the cleanup short."""
    received: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _cores() -> int:
    # parsl's worker pool starts at most this many workers on a node (cores_per_worker=1)
    return os.cpu_count() or 1


@app.command(epilog=EXIT_HELP)
def fit(
    pallet: options.Pallet,
    site: Annotated[str, typer.Option(help="Where to fit: 'local' runs the embedded engine on this machine; a site name needs --direct.")] = "local",
    direct: Annotated[bool, typer.Option("--direct", help="Submit the site's own worker blocks (Slurm/PBS jobs) from this login node: no Globus Compute cloud.")] = False,
    site_file: options.SiteFile = None,
    set_: options.SetValues = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", min=1, help="Local worker processes, at most one per core \\[default: number of cores].")] = None,
    backend: options.Backend = options.BackendName.auto,
    patch: Annotated[Optional[List[str]], typer.Option("--patch", "-p", help="Fit only this patch (repeatable).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder \\[default: ./results/<pallet>].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Refit patches already in --out instead of resuming.")] = False,
    region: options.Region = None,
    ignore_digest: options.IgnoreDigest = False,
    labels: options.Labels = None,
    timeout: Annotated[Optional[float], typer.Option(
        callback=_check_timeout, show_default=False,
        help=f"Seconds a patch may run with no other patch finishing before it is recorded as failed "
             f"\\[default: {DEFAULT_TIMEOUT:g}; {DIRECT_TIMEOUT:g} with --direct, where blocks may wait in the queue].",
    )] = None,
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw exclusion.png in --out.")] = True,
    timeline: Annotated[bool, typer.Option("--timeline", help="Draw timeline.png (and timeline.json) in --out: where the time went, per worker.")] = False,
) -> None:
    """Fit every signal patch of a pallet: one CLs hypothesis test per patch.

    Each patch gets pyhf's hypotest(mu=1, test_stat="qtilde") with normsys code4 and histosys
    code4p, as in the published study. Results are recorded in --out as each patch finishes
    (results.sqlite, exported to results.json and results.csv); a rerun with the same --out
    resumes where it stopped, and refits patches whose content or settings changed.

    Examples:

      faasctl fit examples/simple

      faasctl fit ../shared/pallets/1Lbb --patch C1N2_Wh_hbb_1000_0 --workers 2

      faasctl fit SUSY-2018-04_likelihoods.tar.gz --region Region-combined --backend jax

      faasctl fit examples/simple --site river --direct

      faasctl fit examples/simple --timeline
    """
    from faasctl.exceptions import SiteConfigError
    from faasctl.executors import describe_target, open_executor
    from faasctl.scan.timeline import Phases, process_start
    from faasctl.scan.worker import freeze_heap

    phases = Phases()
    phases.mark("imports", process_start())

    if direct == (site == "local" and site_file is None):
        raise SiteConfigError(f"site {site!r}: use --site NAME --direct for a site's own blocks, or the default 'local' without --direct")
    site_record = options.resolve_site(site, site_file, set_) if direct else None
    if out is not None:
        options.check_out_folder(out)
    if workers is not None and workers > _cores() and site_record is None:
        console.print(f"[yellow]warning:[/] --workers {workers} is more than the {_cores()} cores here; "
                      f"running {_cores()} workers.", highlight=False)
        workers = _cores()
    if timeout is None:
        timeout = DIRECT_TIMEOUT if direct else DEFAULT_TIMEOUT

    target = site_record if site_record is not None else "local"
    engine, where = open_executor(site=target, workers=workers), describe_target(site=target, workers=workers)
    scan = None
    with _interrupts():
        try:
            with contextlib.ExitStack() as stack:
                executor = None
                if site_record is None:  # local workers start (imports, JAX) while the pallet is read
                    with phases("engine start"):
                        executor = stack.enter_context(engine)
                with console.status(f"Reading {escape(str(pallet))} …"), phases("read pallet"):
                    scan = _open_scan(pallet, out, patches=patch, force=force, backend=backend.value, region=region,
                                      ignore_digest=ignore_digest, labels=labels)
                stack.enter_context(scan)
                freeze_heap()  # the CLI's modules and the pallet: no garbage, walked by every collection
                failed = _fit(scan, lambda: stack.enter_context(engine), executor, where, timeout, backend.value,
                              plot=plot, timeline=timeline, phases=phases, title=f"faasctl fit {pallet}")
        except KeyboardInterrupt:
            safe = len(scan.store.done()) if scan is not None else 0
            where = f" in {escape(str(scan.out))}" if scan is not None else ""
            console.print(f"Interrupted; {safe} results are safe{where}; run the same command again to resume.",
                          highlight=False)
            raise typer.Exit(130) from None
    if failed:
        raise typer.Exit(1)


def _open_scan(pallet: Path, out: Optional[Path], **kwargs: Any) -> Any:
    """`Scan`, with the library's advice in its errors put in flag terms."""
    from faasctl.exceptions import ResultsError
    from faasctl.scan.runner import Scan

    try:
        return Scan(pallet, out, **kwargs)
    except ResultsError as err:
        raise ResultsError(str(err).replace("force=True", "--force").replace("another out folder", "another --out")) from None


def _fit(
    scan: Any, start_engine: Any, executor: Any, where: str, timeout: float, backend: str, *, plot: bool,
    timeline: bool, phases: Any, title: str,
) -> int:
    """Fit what ``scan`` has to do on ``executor`` (started by ``start_engine()`` if None), print the table;
    the number of failed patches."""
    store = scan.store
    if scan.changed:
        console.print(f"{len(scan.changed)} patches changed since the last run; refitting them "
                      f"({escape('; '.join(sorted(set(scan.changed.values()))))}).", highlight=False)
    if scan.skipped:
        console.print(f"Resuming: {len(scan.skipped)} patches already in {escape(str(scan.out))}, {len(scan.todo)} to fit.",
                      highlight=False)

    done: list = []  # this run's results, for the timeline (only then: 10^5 of them with timing are ~0.5 GB)
    start = time.perf_counter()
    if scan.todo:
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("[red]{task.fields[failed]}"), console=console, transient=False,
        ) as progress:
            bar = progress.add_task(f"Fitting on {escape(where)}", total=len(scan.todo), rate="", failed="")
            progress.update(bar, description="Starting workers")
            failed = 0
            if executor is None:
                with phases("engine start"):
                    executor = start_engine()
            progress.update(bar, description=f"Fitting ({backend}, {escape(where)})")
            with phases("scan"):
                for i, result in enumerate(scan.run(executor, timeout=timeout), 1):
                    if i == 1 and (plot or timeline) and len(scan.todo) > 1:
                        from faasctl.scan.plot import preload

                        preload()  # while the workers fit: the plots then start at once
                    if timeline:
                        done.append(result)
                    failed += result.failed
                    elapsed = time.perf_counter() - start
                    progress.update(bar, advance=1, rate=f"{i / elapsed:.2f} patch/s",
                                    failed=f"{failed} failed" if failed else "")
    wall = time.perf_counter() - start
    store.export()

    results = scan.results
    _print_table(results, scan.pallet.labels)
    n_failed = sum(r.failed for r in results)
    n_none = sum(r.status == "no_sensitivity" for r in results)
    console.print(
        f"{len(results) - n_failed} fitted{f' ({n_none} without sensitivity)' if n_none else ''}, {n_failed} failed "
        f"in {wall:.1f} s → {escape(str(store.json_path))}, {escape(str(store.csv_path))}",
        highlight=False,
    )
    if plot:
        with phases("plot"):
            png = scan.plot()
        if png:
            console.print(f"Exclusion plot → {escape(str(png))}", highlight=False)
    if timeline:
        from faasctl.scan.timeline import write_timeline

        drawn = write_timeline(done, scan.out, phases=phases, title=f"{title} ({where})")
        if drawn:
            console.print(f"Timeline → {escape(str(drawn))}", highlight=False)
    for r in results:
        if r.failed:
            console.print(f"[red]failed[/] {escape(r.patch)}: {escape(r.error or '')}", highlight=False)
    return n_failed


def _print_table(results: list, labels: list[str], limit: int = 40) -> None:
    shown = sorted(results, key=lambda r: r.values)[:limit]
    # a test without sensitivity has no CLs: its reason (the same for every such patch) goes below
    reasons = sorted({r.error for r in shown if r.status == "no_sensitivity" and r.error})
    table = Table(title=None if len(results) <= limit else f"first {limit} of {len(results)} patches (all in results.csv)")
    table.add_column("patch")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("CLs obs", justify="right")
    table.add_column("CLs exp", justify="right")
    table.add_column("exp ±1σ", justify="right")
    table.add_column("fit s", justify="right")
    for r in shown:
        values = [f"{v:g}" for v in r.values[: len(labels)]]
        values += [""] * (len(labels) - len(values))
        fit_s = "" if r.fit_time is None else f"{r.fit_time:.2f}"
        if r.ok:
            exp = r.cls_exp or [float("nan")] * 5
            band = f"{min(exp[1], exp[3]):.3g} – {max(exp[1], exp[3]):.3g}"
            table.add_row(escape(r.patch), *values, f"{r.cls_obs:.3g}", f"{exp[2]:.3g}", band, fit_s)
        elif r.status == "no_sensitivity":
            table.add_row(escape(r.patch), *values, "[yellow]no sensitivity", "–", "–", fit_s)
        else:
            # the kind of error only: the whole message is printed below the table
            table.add_row(escape(r.patch), *values, "[red]failed", escape((r.error or "").split(":", 1)[0]), "", "")
    console.print(table)
    for reason in reasons:
        console.print(f"[yellow]{escape(reason)}", highlight=False)
