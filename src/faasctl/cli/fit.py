"""``faasctl fit``: scan a pallet."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from faasctl.cli import options

app = typer.Typer()
console = Console()

EXIT_HELP = "Exit status: 0 every patch fitted; 1 some patches failed (recorded with their error); 2 bad input."


@app.command(epilog=EXIT_HELP)
def fit(
    pallet: options.Pallet,
    site: Annotated[str, typer.Option(help="Where to fit: 'local' runs the embedded engine on this machine; a site name needs --direct.")] = "local",
    direct: Annotated[bool, typer.Option("--direct", help="Submit the site's own worker blocks (Slurm/PBS jobs) from this login node: no Globus Compute cloud.")] = False,
    site_file: options.SiteFile = None,
    set_: options.SetValues = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", min=1, help="Local worker processes \\[default: number of cores].")] = None,
    backend: options.Backend = options.BackendName.auto,
    patch: Annotated[Optional[List[str]], typer.Option("--patch", "-p", help="Fit only this patch (repeatable).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder \\[default: ./results/<pallet>].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Refit patches already in --out instead of resuming.")] = False,
    region: options.Region = None,
    ignore_digest: options.IgnoreDigest = False,
    labels: options.Labels = None,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds one patch may take before it is recorded as failed.")] = None,
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw exclusion.png in --out.")] = True,
    timeline: Annotated[bool, typer.Option("--timeline", help="Draw timeline.png (and timeline.json) in --out: where the time went, per worker.")] = False,
) -> None:
    """Fit every signal patch of a pallet: one CLs hypothesis test per patch.

    Each patch gets pyhf's hypotest(mu=1, test_stat="qtilde") with normsys code4 and histosys
    code4p, as in the published study. Results are written to --out as each patch finishes
    (results.json, results.csv); a rerun with the same --out resumes where it stopped.

    Examples:

      faasctl fit examples/simple

      faasctl fit ../shared/pallets/1Lbb --patch C1N2_Wh_hbb_1000_0 --workers 2

      faasctl fit SUSY-2018-04_likelihoods.tar.gz --region Region-combined --backend jax

      faasctl fit examples/simple --site river --direct
    """
    from faasctl.exceptions import SiteConfigError
    from faasctl.executors import describe_target, open_executor
    from faasctl.scan.runner import Scan
    from faasctl.scan.timeline import Phases, process_start

    phases = Phases()
    phases.mark("imports", process_start())
    if direct == (site == "local" and site_file is None):
        raise SiteConfigError(f"site {site!r}: use --site NAME --direct for a site's own blocks, or the default 'local' without --direct")
    site_record = options.resolve_site(site, site_file, set_) if direct else None

    target = site_record if site_record is not None else "local"
    engine, where = open_executor(site=target, workers=workers), describe_target(site=target, workers=workers)
    done: list = []
    with contextlib.ExitStack() as stack:
        executor = None
        if site_record is None:
            # local workers start (imports, JAX) while the pallet is read
            with phases("engine start"):
                executor = stack.enter_context(engine)
        with console.status(f"Reading {pallet} …"), phases("read pallet"):
            scan = Scan(pallet, out, patches=patch, force=force, region=region, ignore_digest=ignore_digest, labels=labels)
        store = scan.store
        if scan.skipped:
            console.print(f"Resuming: {len(scan.skipped)} patches already in {store.json_path}, {len(scan.todo)} to fit.")

        start = time.perf_counter()
        if scan.todo:
            with Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                TextColumn("[red]{task.fields[failed]}"), console=console, transient=False,
            ) as progress:
                bar = progress.add_task(f"Fitting on {where}", total=len(scan.todo), rate="", failed="")
                progress.update(bar, description="Starting workers")
                failed = 0
                try:
                    if executor is None:
                        with phases("engine start"):
                            executor = stack.enter_context(engine)
                    progress.update(bar, description=f"Fitting ({backend.value}, {where})")
                    with phases("scan"):
                        for i, result in enumerate(scan.run(executor, backend=backend.value, timeout=timeout), 1):
                            done.append(result)
                            failed += not result.ok
                            elapsed = time.perf_counter() - start
                            progress.update(bar, advance=1, rate=f"{i / elapsed:.2f} patch/s",
                                            failed=f"{failed} failed" if failed else "")
                except KeyboardInterrupt:
                    progress.stop()
                    console.print(f"Interrupted: {len(store.done())} results are safe in {store.json_path}; "
                                  "run the same command again to resume.")
                    raise typer.Exit(130) from None
    wall = time.perf_counter() - start

    results = scan.results
    _print_table(results, scan.pallet.labels)
    n_ok = sum(r.ok for r in results)
    n_failed = len(results) - n_ok
    console.print(
        f"{n_ok} fitted, {n_failed} failed in {wall:.1f} s → {store.json_path}, {store.csv_path}",
        highlight=False,
    )
    if plot:
        with phases("plot"):
            png = scan.plot()
        if png:
            console.print(f"Exclusion plot → {png}")
    if timeline:
        from faasctl.scan.timeline import write_timeline

        drawn = write_timeline(done, store.out_dir, phases=phases, title=f"faasctl fit {pallet} ({where})")
        if drawn:
            console.print(f"Timeline → {drawn}")
    if n_failed:
        for r in results:
            if not r.ok:
                console.print(f"[red]failed[/] {r.patch}: {r.error}", highlight=False)
        raise typer.Exit(1)


def _print_table(results: list, labels: list[str], limit: int = 40) -> None:
    table = Table(title=None if len(results) <= limit else f"first {limit} of {len(results)} patches (all in results.csv)")
    table.add_column("patch")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("CLs obs", justify="right")
    table.add_column("CLs exp", justify="right")
    table.add_column("exp ±1σ", justify="right")
    table.add_column("fit s", justify="right")
    for r in sorted(results, key=lambda r: r.values)[:limit]:
        values = [f"{v:g}" for v in r.values[: len(labels)]]
        values += [""] * (len(labels) - len(values))
        if r.ok:
            exp = r.cls_exp or [float("nan")] * 5
            band = f"{min(exp[1], exp[3]):.3g} – {max(exp[1], exp[3]):.3g}"
            table.add_row(r.patch, *values, f"{r.cls_obs:.3g}", f"{exp[2]:.3g}", band, f"{r.fit_time:.2f}")
        else:
            table.add_row(r.patch, *values, "[red]failed", r.error or "", "", "")
    console.print(table)
