"""``faasctl sites list|show`` and ``faasctl render``: the site registry and endpoint folders.

Two typer apps: ``app`` becomes the ``sites`` group, ``render_app`` adds ``render`` at the
top level. The site options every site command takes live in `faasctl.cli.options`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.console import Console

from faasctl.cli import options
from faasctl.cli.options import SetValues, SiteFile, SiteName, check_out_folder, resolve_site

if TYPE_CHECKING:
    pass

app = typer.Typer(no_args_is_help=True)
render_app = typer.Typer()
console = Console()

EXIT_HELP = "Exit status: 0 done; 2 the site record or the rendered endpoint config is invalid (nothing written)."

@app.command("list")
def list_(json_: options.Json = False) -> None:
    """List the known sites: the admin's folder ($FAASCTL_SITES_DIR or ~/.config/faasctl/sites) first, then the shipped ones."""
    from faasctl.exceptions import SiteConfigError
    from faasctl.sites import load_site, shipped_sites_dir, site_paths

    rows = []
    for name, path in site_paths().items():
        try:
            record = load_site(name)
            provider, description = record.provider.type, record.description
        except SiteConfigError as err:  # list every site, even one that does not validate
            provider, description = "invalid", str(err)
        origin = "shipped" if path.parent == shipped_sites_dir() else str(path)
        rows.append({"name": name, "provider": provider, "description": description, "source": origin})
    rows.sort(key=lambda row: row["name"])

    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not console.is_terminal:
        for row in rows:
            typer.echo(f"{row['name']}\t{row['provider']}\t{row['description']}")
        return
    from rich.table import Table

    table = Table("site", "provider", "description", "source")
    for row in rows:
        table.add_row(*(escape(str(row[k])) for k in ("name", "provider", "description", "source")))
    console.print(table)


@app.command(epilog=EXIT_HELP)
def show(
    name: Annotated[Optional[str], typer.Argument(help="Site name.", show_default=False)] = None,
    site_file: SiteFile = None,
    set_: SetValues = None,
    json_: options.Json = False,
) -> None:
    """Show one site record with every default filled in (after --set overrides), as YAML or --json.

    Examples:

      faasctl sites show river

      faasctl sites show river --set provider.max_blocks=8 --json
    """
    import yaml

    record = resolve_site(name, site_file, set_)
    data = record.model_dump(mode="json")
    if json_:
        typer.echo(json.dumps(data, indent=2))
        return
    text = f"# site {record.name} from {record.source}\n" + yaml.safe_dump(data, sort_keys=False, width=1 << 16)
    if console.is_terminal:
        from rich.syntax import Syntax

        console.print(Syntax(text, "yaml", background_color="default"))
    else:
        sys.stdout.write(text)


@render_app.command(epilog=EXIT_HELP)
def render(
    site: SiteName = None,
    site_file: SiteFile = None,
    set_: SetValues = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write the endpoint folder here, e.g. ~/.globus_compute/NAME.", show_default=False)
    ] = None,
    print_: Annotated[bool, typer.Option("--print", help="Print the files to stdout instead, for review.")] = False,
) -> None:
    """Render a site's Globus Compute endpoint folder: config.yaml, user_config_template.yaml.j2, user_config_schema.json.

    The files are checked first with Globus Compute's own loader (the user template rendered
    and the engine and provider built, never started); nothing is written if that fails.

    Examples:

      faasctl render --site river --out ~/.globus_compute/river

      faasctl render --site expanse --set provider.account=abc123 --print

      faasctl render --site-file mycluster.yaml --out ~/.globus_compute/mycluster
    """
    from faasctl.sites.render import PRIVILEGED_USER_DIR, render_endpoint, validate_endpoint, write_endpoint

    if (out is None) == (not print_):
        raise typer.BadParameter("give exactly one of --out DIR or --print", param_hint="--out/--print")
    if out is not None:
        check_out_folder(out)
    record = resolve_site(site, site_file, set_)
    # Where the folder will be installed: a privileged config.yaml names its mapping file there.
    install = out
    if out is not None and out.expanduser().resolve().parent.name != ".globus_compute":
        install = (PRIVILEGED_USER_DIR if record.endpoint.privileged else Path("~/.globus_compute")) / out.name
    files = render_endpoint(record, endpoint_dir=install)
    if print_:
        validate_endpoint(files)
        for name, text in files.items():
            typer.echo(f"# ==> {name} <==")
            typer.echo(text)
        return
    assert out is not None
    written = write_endpoint(files, out)
    console.print(f"Wrote {len(written)} files to {escape(str(out))} (checked with Globus Compute's loader).", highlight=False)
    if install != out:
        console.print(f"Install: copy the folder to {escape(str(install))}/", highlight=False)
    console.print(f"Start:   globus-compute-endpoint start {escape(out.name)}", highlight=False)
