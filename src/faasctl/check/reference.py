"""The health checks' reference data: suites, the stored CLs of plain pyhf, and the pallets they fit.

The references are package data, ``faasctl/check/reference/<suite>.json``, computed with plain pyhf
(`faasctl.study.pyhf_hypotest`) by ``tools/regenerate_check_references.py``, never typed in by hand.

``synthetic``
    Three patches on a three-bin model built from ``pyhf.simplemodels.uncorrelated_background``
    (`build_synthetic`); the file carries the workspace, so it needs no data on the client.
``1Lbb``
    Three real patches of the ATLAS 1Lbb pallet (`LBB_PATCHES`), read from a folder of pallets
    (`find_pallet`).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from faasctl.exceptions import SiteConfigError
from faasctl.pallets.load import Pallet, Patch

__all__ = [
    "SUITES",
    "LBB_PATCHES",
    "REFERENCE_SCHEMA",
    "REGENERATE",
    "Reference",
    "ReferenceFit",
    "load_reference",
    "synthetic_reference_pallet",
    "build_synthetic",
    "find_pallet",
    "pallets_folder",
]

#: The suites, and the references each one fits.
SUITES: dict[str, tuple[str, ...]] = {"quick": ("synthetic",), "full": ("synthetic", "1Lbb")}
REFERENCE_SCHEMA = "faasctl/check-reference/1.0.0"
REGENERATE = "python tools/regenerate_check_references.py"
#: The 1Lbb patches of the full suite: excluded, near the contour, not excluded.
LBB_PATCHES = ("C1N2_Wh_hbb_500_0", "C1N2_Wh_hbb_700_150", "C1N2_Wh_hbb_1000_0")


class ReferenceFit(BaseModel):
    """One reference fit: a patch and the CLs plain pyhf computed for it."""

    model_config = ConfigDict(extra="forbid")

    patch: str
    values: list[float]
    operations: list[dict[str, Any]] | None = Field(
        default=None, description="the JSON patch, for suites that carry their own pallet"
    )
    cls_obs: float
    cls_exp: list[float] = Field(min_length=5, max_length=5)


class Reference(BaseModel):
    """A reference file, ``faasctl/check/reference/<suite>.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(alias="schema")
    suite: str
    description: str
    generated_by: str
    generated_with: dict[str, str | None] = Field(description="versions of what computed the values")
    hypotest: str = Field(description="the test the values come from")
    digest: str = Field(description="sha256 of the background workspace")
    labels: list[str]
    pallet: str | None = Field(default=None, description="the pallet folder name, for suites read from disk")
    background: dict[str, Any] | None = Field(default=None, description="the background, for self-contained suites")
    fits: list[ReferenceFit]


def load_reference(suite: str) -> Reference:
    """The stored reference of ``suite`` (``synthetic`` or ``1Lbb``).

    Raises:
        SiteConfigError: the file is missing or invalid (the message says how to regenerate it).
    """
    name = f"faasctl/check/reference/{suite.lower()}.json"
    resource = resources.files("faasctl.check") / "reference" / f"{suite.lower()}.json"
    try:
        reference = Reference.model_validate_json(resource.read_text())
    except (OSError, ValueError) as err:
        raise SiteConfigError(f"{name}: unreadable reference ({err}); regenerate it with {REGENERATE}") from err
    if reference.schema_ != REFERENCE_SCHEMA:
        raise SiteConfigError(f"{name}: schema {reference.schema_!r} is not {REFERENCE_SCHEMA!r}; "
                              f"regenerate it with {REGENERATE}")
    return reference


def synthetic_reference_pallet(reference: Reference) -> Pallet:
    """The pallet a self-contained reference (``synthetic``) carries."""
    if reference.background is None:
        raise ValueError(f"the {reference.suite} reference carries no pallet; read {reference.pallet} from disk")
    where = f"faasctl/check/reference/{reference.suite.lower()}.json"
    patches = {f.patch: Patch(f.patch, tuple(f.values), f.operations or []) for f in reference.fits}
    return Pallet(source=where, background=reference.background, patches=patches, labels=list(reference.labels),
                  digest=reference.digest, background_file=where, patchset_file=where)


def pallets_folder(pallets: str | Path | None = None) -> Path | None:
    """The folder holding real pallets: ``pallets`` if given, else ``$FAASCTL_PALLETS``, else None."""
    folder = pallets if pallets is not None else os.environ.get("FAASCTL_PALLETS")
    return Path(folder) if folder else None


def find_pallet(name: str, pallets: str | Path | None = None) -> Path | None:
    """The pallet folder ``name`` (``1Lbb``) in `pallets_folder`, or None when it is not there."""
    folder = pallets_folder(pallets)
    return folder / name if folder is not None and (folder / name).is_dir() else None


def build_synthetic() -> tuple[dict[str, Any], dict[str, Patch]]:
    """The synthetic suite: a background-only workspace and three signal patches.

    The samples come from ``pyhf.simplemodels.uncorrelated_background``; the background gets
    a normsys and a histosys so the check covers the study's interpolation codes.
    """
    import pyhf

    bkg = [52.0, 38.0, 12.0]
    observed = [55.0, 36.0, 15.0]
    signals = {"weak": [1.0, 1.5, 1.0], "medium": [5.0, 6.0, 4.5], "strong": [16.0, 18.0, 12.0]}
    channels = None
    samples: dict[str, dict[str, Any]] = {}
    for name, signal in signals.items():
        spec = pyhf.simplemodels.uncorrelated_background(signal=signal, bkg=bkg, bkg_uncertainty=[4.0, 3.5, 2.5]).spec
        channel = spec["channels"][0]
        samples[name] = next(s for s in channel["samples"] if s["name"] == "signal")
        channels = [{**channel, "samples": [s for s in channel["samples"] if s["name"] != "signal"]}]
    assert channels is not None
    channels[0]["samples"][0]["modifiers"] += [
        {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.06, "lo": 0.95}},
        {"name": "bkg_shape", "type": "histosys",
         "data": {"hi_data": [54.0, 38.5, 11.0], "lo_data": [50.5, 37.0, 13.0]}},
    ]
    background = {
        "channels": channels,
        "observations": [{"name": channels[0]["name"], "data": observed}],
        "measurements": [{"name": "health_check", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    patches = {
        f"synthetic_{name}": Patch(f"synthetic_{name}", (float(i),),
                                   [{"op": "add", "path": "/channels/0/samples/0", "value": sample}])
        for i, (name, sample) in enumerate(samples.items())
    }
    return background, patches
