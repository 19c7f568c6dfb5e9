"""Entry point: joins one typer app per topic, and turns faasctl errors into exit codes.

Each ``faasctl.cli.<topic>`` module owns a ``typer.Typer()``; this file only adds them.
"""

from __future__ import annotations

import logging
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from faasctl import __version__
from faasctl.cli import check
from faasctl.cli import deploy
from faasctl.cli import fit
from faasctl.cli import images
from faasctl.cli import pallet
from faasctl.cli import sites
from faasctl.exceptions import FaasctlError

err_console = Console(stderr=True)


class _Group(TyperGroup):
    """Prints a `FaasctlError` as one line and exits with its code, with no traceback.

    Statuses (docs/exit-codes.md): 0 done, 1 something failed, 2 bad input, 130 interrupted.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # click would print "Aborted!" and exit 1
            err_console.print("Interrupted.", highlight=False)
            raise typer.Exit(130) from None
        except FaasctlError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from err


app = typer.Typer(
    cls=_Group,
    name="faasctl",
    help=(
        "Fitting as a service for HEP facilities: scan pyhf pallets on local workers, Slurm/PBS/"
        "Kubernetes sites and Globus Compute (formerly funcX) endpoints, and run those endpoints.\n\n"
        "Start with: faasctl fit examples/simple"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"faasctl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens (parsl, fits) to stderr."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


app.add_typer(fit.app)
app.add_typer(check.app)
app.add_typer(images.app, name="image", help="Build and list the pyhf worker container images (CPU; CUDA with JAX).")
app.add_typer(sites.app, name="sites", help="The site registry: list and show the clusters faasctl can render endpoints for.")
app.add_typer(sites.render_app)
app.add_typer(deploy.app)
app.add_typer(pallet.app, name="pallet", help="Look into pallets: regions, layout, values, digest, model structure, patches that cannot build.")
