"""``faasctl check``: health-check fits against an endpoint or site."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from faasctl.cli import options
from faasctl.exceptions import EndpointUnhealthy, FaasctlError, error_text

if TYPE_CHECKING:
    from faasctl.check import CheckReport

app = typer.Typer()
console = Console()
err_console = Console(stderr=True)

EXIT_HELP = (
    "Exit status: 0 every check passed; 1 a check failed, erred or timed out, or the endpoint "
    "cannot be reached; 2 bad usage or configuration (not logged in to Globus, unknown site)."
)


class Suite(str, Enum):
    """Health-check suites (see `faasctl.check.run`)."""

    quick = "quick"
    full = "full"


@app.command(epilog=EXIT_HELP)
def check(
    endpoint: Annotated[Optional[str], typer.Option(
        metavar="UUID", help="A Globus Compute endpoint to check (needs Globus credentials and the network).",
        show_default=False)] = None,
    site: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="A site to check: 'local' runs the embedded engine on this machine; other names "
        "reach a site in direct mode. \\[default: local]", show_default=False)] = None,
    suite: Annotated[Suite, typer.Option(
        help="quick: a synthetic model, seconds; full: also real 1Lbb patches, about a minute.")] = Suite.quick,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds each fit may take.")] = 120.0,
    start_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds to wait for the first worker to answer (workers starting, blocks queued).")] = 300.0,
    pallets: Annotated[Optional[Path], typer.Option(
        metavar="DIR", envvar="FAASCTL_PALLETS", help="The folder holding the real pallets of the full suite "
        "(DIR/1Lbb); without it those checks are skipped.", show_default=False)] = None,
    backend: options.Backend = options.BackendName.numpy,
    as_json: options.Json = False,
) -> None:
    """Fit reference patches on an endpoint and compare them with plain pyhf's CLs.

    Run it after every upgrade, from cron or CI: it exits non-zero when any fit fails,
    times out or disagrees with the stored reference values (rel 1e-3, abs 1e-5), and
    reports the worker's python, pyhf, numpy and jax versions.

    Examples:

      faasctl check --site local

      faasctl check --endpoint 2f9c4f1e-0b7a-4d0e-9a52-6f3c1d2e8b7a --suite full --json
    """
    from faasctl.check import check_target

    if endpoint and site:
        raise typer.BadParameter("give --endpoint or --site, not both", param_hint="--endpoint / --site")
    target = f"endpoint {endpoint}" if endpoint else f"site {site or 'local'}"
    start = time.monotonic()
    try:
        with err_console.status(f"Checking {escape(target)} ({suite.value} suite) …"):
            report = check_target(endpoint=endpoint, site=site or "local", suite=suite.value, timeout=timeout,
                                  start_timeout=start_timeout, backend=backend.value, pallets=pallets)
    except Exception as err:  # not logged in, unreachable service, engine that does not start
        failure = err if isinstance(err, FaasctlError) else EndpointUnhealthy(f"{target}: {error_text(err)}")
        if as_json:  # cron and CI read the report: write it, with the error in it
            from faasctl.check import CheckReport, CheckResult

            report = CheckReport(
                target=target, suite=suite.value, backend=backend.value, timeout=timeout, start_timeout=start_timeout,
                healthy=False, elapsed=round(time.monotonic() - start, 3),
                checks=[CheckResult(name="connect", suite=suite.value, status="error", message=str(failure))],
            )
            typer.echo(report.model_dump_json(indent=2, by_alias=True))
        if failure is err:
            raise
        raise failure from err
    if as_json:
        typer.echo(report.model_dump_json(indent=2, by_alias=True))
    else:
        _print_report(report)
    report.raise_for_status()


_STYLE = {"pass": "green", "fail": "bold red", "timeout": "bold red", "error": "bold red", "skipped": "yellow"}


def _print_report(report: CheckReport) -> None:
    """A rich table on a terminal; one tab-separated line per check when piped."""
    verdict = "healthy" if report.healthy else "UNHEALTHY"
    if not console.is_terminal:
        for c in report.checks:
            seconds = "" if c.seconds is None else f"{c.seconds:.1f}"
            typer.echo("\t".join([c.status.upper(), c.suite, c.name, seconds, c.message]))
        typer.echo(f"{report.target}: {verdict} ({report.suite} suite, {report.elapsed:.1f} s)")
        return
    from rich.table import Table

    table = Table(title=f"{escape(report.target)}: {report.suite} suite, backend {report.backend}")
    for column, justify in (("check", "left"), ("suite", "left"), ("result", "left"), ("s", "right"),
                            ("fit s", "right"), ("worker", "left"), ("details", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for c in report.checks:
        table.add_row(
            escape(c.name), c.suite, f"[{_STYLE[c.status]}]{c.status}[/]",
            "" if c.seconds is None else f"{c.seconds:.1f}", "" if c.fit_time is None else f"{c.fit_time:.2f}",
            escape(c.worker or ""), escape(c.message),
        )
    console.print(table)
    style = "green" if report.healthy else "bold red"
    console.print(f"[{style}]{verdict}[/] in {report.elapsed:.1f} s", highlight=False)
