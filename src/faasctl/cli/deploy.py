"""``faasctl deploy``, ``faasctl status``, ``faasctl teardown``: a site's Globus Compute endpoint.

Kubernetes sites become a Helm release of ``helm/faasctl-endpoint``; Slurm, PBS Pro and local
sites an endpoint folder in ``~/.globus_compute/NAME`` started on this (login) node. The
commands only parse options and print; `faasctl.deploy` does the work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console

from faasctl.cli import options
from faasctl.cli.options import SetValues, SiteFile, SiteName, resolve_site

if TYPE_CHECKING:
    from faasctl.deploy import Action, Deployer

app = typer.Typer()
console = Console()

DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the exact actions (commands, files and their content) and do nothing.")]
Secret = Annotated[
    Optional[str],
    typer.Option(
        "--secret",
        help="Kubernetes: the existing Secret with GLOBUS_COMPUTE_CLIENT_ID/SECRET \\[default: <site>-globus-compute].",
        show_default=False,
    ),
]
Values = Annotated[
    Optional[Path],
    typer.Option(
        "--values",
        help="Kubernetes: a YAML file of further chart values (resources, nodeSelector, ...), merged over faasctl's and checked against the chart's schema.",
        show_default=False,
    ),
]

DEPLOY_HELP = (
    "Exit status: 0 done (or planned, with --dry-run); 2 invalid site record or endpoint config; "
    "1 chart values refused, or a command failed."
)
STATUS_HELP = "Exit status: 0 the endpoint is running (helm: the release is deployed); 1 it is not, or the query failed."


def _deployer(site: str | None, site_file: Path | None, set_: list[str] | None, secret: str | None = None,
              values: Path | None = None) -> Deployer:
    from faasctl.deploy import deployer_for

    record = resolve_site(site, site_file, set_)
    chart_values: dict[str, Any] = {}
    if values is not None:
        chart_values = _read_values(values)
    if secret:
        chart_values.setdefault("endpoint", {}).setdefault("credentials", {})["secretName"] = secret
    if record.provider.type == "KubernetesProvider":
        return deployer_for(record, values=chart_values)
    if chart_values:
        raise typer.BadParameter(f"site {record.name!r} runs on {record.provider.type}: --secret/--values are for Kubernetes sites")
    return deployer_for(record)


def _read_values(path: Path) -> dict[str, Any]:
    import yaml

    from faasctl.exceptions import DeployError

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DeployError(f"--values {path}: cannot read it: {err}") from err
    if not isinstance(data, dict):
        raise DeployError(f"--values {path}: expected a mapping of chart values")
    return data


def _print_plan(title: str, actions: list[Action], *, contents: bool) -> None:
    from faasctl.deploy import Notice, WriteFiles

    console.print(f"[bold]{title}[/]", highlight=False)
    for i, action in enumerate(actions, 1):
        style = "yellow" if isinstance(action, Notice) else "default"
        console.print(f"  {i}. [{style}]{action.describe()}[/]", highlight=False, soft_wrap=True)
    if contents:
        for action in actions:
            if isinstance(action, WriteFiles):
                for name, text in action.files.items():
                    console.rule(str(action.directory / name), align="left")
                    console.out(text, highlight=False, end="" if text.endswith("\n") else "\n")


@app.command(epilog=DEPLOY_HELP)
def deploy(
    site: SiteName = None,
    site_file: SiteFile = None,
    set_: SetValues = None,
    dry_run: DryRun = False,
    secret: Secret = None,
    values: Values = None,
) -> None:
    """Deploy a site's Globus Compute endpoint, configured by `faasctl render`.

    Kubernetes sites: `helm upgrade --install SITE helm/faasctl-endpoint` in the provider's
    namespace, with the rendered endpoint folder as chart values (checked against the
    chart's values.schema.json first). Slurm/PBS/local sites: the rendered folder goes to
    $GLOBUS_COMPUTE_USER_DIR/SITE (~/.globus_compute/SITE) and `globus-compute-endpoint
    start SITE --detach` runs; without Globus credentials the command is printed instead.

    Examples:

      faasctl deploy --site river --dry-run

      faasctl deploy --site kubernetes --secret gc-client --dry-run

      faasctl deploy --site slurm --set provider.partition=short
    """
    deployer = _deployer(site, site_file, set_, secret, values)
    actions = deployer.plan()
    if dry_run:
        _print_plan(f"Would deploy site {deployer.name} ({deployer.kind}):", actions, contents=True)
        return
    _print_plan(f"Deploying site {deployer.name} ({deployer.kind}):", actions, contents=False)
    deployer.apply(actions)
    console.print(f"[green]done[/]: faasctl status --site {deployer.name}", highlight=False)


@app.command(epilog=STATUS_HELP)
def status(
    site: SiteName = None,
    site_file: SiteFile = None,
    set_: SetValues = None,
    json_: options.Json = False,
) -> None:
    """Show where a site's endpoint stands: installed, running (pid file), endpoint id; helm release state.

    Examples:

      faasctl status --site river

      faasctl status --site kubernetes --json
    """
    result = _deployer(site, site_file, set_).status()
    if json_:
        typer.echo(json.dumps({"site": result.site, "kind": result.kind, "state": result.state, **result.details}, indent=2))
    else:
        color = "green" if result.healthy else "yellow"
        console.print(f"{result.site} ({result.kind}): [{color}]{result.state}[/]", highlight=False)
        for key, value in result.details.items():
            console.print(f"  {key}: {value}", highlight=False, soft_wrap=True)
    if not result.healthy:
        raise typer.Exit(1)


@app.command(epilog=DEPLOY_HELP)
def teardown(
    site: SiteName = None,
    site_file: SiteFile = None,
    set_: SetValues = None,
    dry_run: DryRun = False,
) -> None:
    """Stop and remove a site's endpoint: `helm uninstall`, or `globus-compute-endpoint stop` and its folder.

    Examples:

      faasctl teardown --site river --dry-run

      faasctl teardown --site kubernetes
    """
    deployer = _deployer(site, site_file, set_)
    actions = deployer.teardown_plan()
    if dry_run:
        _print_plan(f"Would tear down site {deployer.name} ({deployer.kind}):", actions, contents=False)
        return
    _print_plan(f"Tearing down site {deployer.name} ({deployer.kind}):", actions, contents=False)
    deployer.apply(actions)
    console.print("[green]done[/]", highlight=False)
