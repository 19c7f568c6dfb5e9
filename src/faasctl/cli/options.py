"""Options shared by several commands, defined once."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, List, Optional

import typer

if TYPE_CHECKING:
    from faasctl.sites import SiteRecord

Pallet = Annotated[
    Path,
    typer.Argument(
        help="A folder, or the .tar.gz/.zip as downloaded from HEPData: BkgOnly.json with patchset.json or one patch.NAME.json per point (plain or .gz), at the top or in region folders.",
        show_default=False,
    ),
]
Region = Annotated[
    Optional[str],
    typer.Option("--region", "-r", help="The region (sub-folder) to use when the pallet holds several."),
]
IgnoreDigest = Annotated[
    bool,
    typer.Option("--ignore-digest", help="Fit even if the patchset was made for a different background (digest mismatch)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class BackendName(str, Enum):
    """Fit backends (see `faasctl.backends`)."""

    numpy = "numpy"
    jax = "jax"
    auto = "auto"


Backend = Annotated[
    BackendName,
    typer.Option(help="auto: the compiled jax engine where JAX is installed, else plain pyhf; numpy: plain pyhf (the reference); jax: the compiled engine (patches it cannot fit fall back to pyhf)."),
]
Labels = Annotated[
    Optional[str],
    typer.Option(
        "--labels",
        help=(
            "Names of each patch's values, comma separated, e.g. m1,m2 (for tables and the exclusion plot). "
            "Default: the patchset's labels, or value0,value1,... for one patch.NAME.json file per point."
        ),
        show_default=False,
    ),
]


SiteName = Annotated[
    Optional[str],
    typer.Option("--site", "-s", help="Site name (see 'faasctl sites list'); may be left out with --site-file.", show_default=False),
]
SiteFile = Annotated[
    Optional[Path],
    typer.Option("--site-file", help="Read the site record from this YAML file instead of the registry.", show_default=False),
]
SetValues = Annotated[
    Optional[List[str]],
    typer.Option(
        "--set",
        help="Override a site value: dotted.key=VALUE, VALUE read as YAML (repeatable), e.g. provider.max_blocks=8.",
        show_default=False,
    ),
]


def resolve_site(site: str | None, site_file: Path | None, overrides: list[str] | None) -> SiteRecord:
    """The validated site record named by the shared --site / --site-file / --set options."""
    from faasctl.sites import load_site

    if not site and site_file is None:
        raise typer.BadParameter("name a site (--site NAME) or a site file (--site-file PATH)", param_hint="--site")
    return load_site(site or "", site_file=site_file, overrides=overrides or ())


def check_out_folder(path: Path, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that is a file, lies under a file, or cannot be written."""
    path = path.expanduser()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, which is not a folder"
        raise typer.BadParameter(f"{path} {where}", param_hint=flag)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"{path}: {existing} is not writable", param_hint=flag)
