"""Options shared by several commands, defined once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

Pallet = Annotated[
    Path,
    typer.Argument(
        help="A folder with BkgOnly.json + patchset.json (plain or .gz), or the .tar.gz as downloaded from HEPData.",
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
    typer.Option(help="numpy: plain pyhf, the reference; jax: compiled once per model, fast; auto: jax where it can."),
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
