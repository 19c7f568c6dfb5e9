"""Recompute the health checks' reference CLs with plain pyhf and rewrite src/faasctl/check/reference/*.json.

Run it only on purpose: after deciding that a new pyhf's answers are the right ones, or after
changing a suite (`faasctl.check.reference`); never to make a failing check pass. Review the diff.

    python tools/regenerate_check_references.py                # synthetic: seconds
    python tools/regenerate_check_references.py --suite full   # and 1Lbb: minutes (needs the pallet)
"""

from __future__ import annotations

import json
import logging
import os
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional, Sequence

import typer

from faasctl.check.reference import (
    LBB_PATCHES,
    REFERENCE_SCHEMA,
    REGENERATE,
    SUITES,
    Reference,
    ReferenceFit,
    build_synthetic,
    find_pallet,
)
from faasctl.exceptions import PalletError
from faasctl.pallets import Pallet, load_pallet, workspace_digest
from faasctl.scan.worker import worker_info
from faasctl.study import MODIFIER_SETTINGS, pyhf_hypotest

CHECKOUT = Path(__file__).resolve().parents[1]
log = logging.getLogger("regenerate")


class Suite(str, Enum):
    quick = "quick"
    full = "full"


def _versions() -> dict[str, str | None]:
    info = worker_info()
    return {name: info[name] for name in ("python", "pyhf", "numpy", "scipy")}


def _reference_fits(pallet: Pallet, names: Sequence[str], *, carry_operations: bool) -> list[ReferenceFit]:
    fits = []
    for name in names:
        patch = pallet.patches[name]
        start = time.perf_counter()
        cls_obs, cls_exp = pyhf_hypotest(pallet.workspace_spec(patch, shared=True))  # pyhf's default SLSQP
        log.info("%s: CLs_obs %.6g (%.1f s)", name, cls_obs, time.perf_counter() - start)
        fits.append(ReferenceFit(patch=name, values=list(patch.values), cls_obs=cls_obs, cls_exp=cls_exp,
                                 operations=patch.operations if carry_operations else None))
    return fits


def regenerate(suite: str, out_dir: Path, pallets: Path) -> list[Path]:
    """Recompute the reference files of ``suite`` and write them to ``out_dir``; return the files written."""
    hypotest = (f"pyhf.infer.hypotest(1.0, data, model, test_stat='qtilde', return_expected_set=True), "
                f"modifier_settings={MODIFIER_SETTINGS}")
    common = dict(schema=REFERENCE_SCHEMA, generated_by=f"{REGENERATE} --suite {suite}",
                  generated_with=_versions(), hypotest=hypotest)
    written = []
    for name in SUITES[suite]:
        if name == "synthetic":
            background, patches = build_synthetic()
            pallet = Pallet(source="synthetic", background=background, patches=patches, labels=["signal_index"],
                            digest=workspace_digest(background))
            reference = Reference(
                suite=name, description="pyhf.simplemodels.uncorrelated_background with a normsys and a histosys; "
                "three signal strengths", digest=pallet.digest, labels=pallet.labels, background=background,
                fits=_reference_fits(pallet, list(patches), carry_operations=True), **common)
        else:
            folder = find_pallet(name, pallets)
            if folder is None:
                raise PalletError(f"{pallets}: no pallet {name} here (give --pallets)")
            pallet = load_pallet(folder)
            reference = Reference(
                suite=name, description=f"real patches of the ATLAS {name} pallet", digest=pallet.digest,
                labels=pallet.labels, pallet=name, fits=_reference_fits(pallet, LBB_PATCHES, carry_operations=False),
                **common)
        path = out_dir / f"{name.lower()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(reference.model_dump(by_alias=True, exclude_none=True), indent=1) + "\n")
        written.append(path)
        log.info("wrote %s", path)
    return written


def main(
    suite: Annotated[Suite, typer.Option(help="quick: synthetic; full: synthetic and 1Lbb.")] = Suite.quick,
    out_dir: Annotated[Path, typer.Option(help="Where to write.")] = CHECKOUT / "src" / "faasctl" / "check" / "reference",
    pallets: Annotated[Optional[Path], typer.Option(
        help="The folder holding the 1Lbb pallet \\[default: $FAASCTL_PALLETS, else ../shared/pallets beside the checkout].",
        show_default=False)] = None,
) -> None:
    """Recompute the health checks' reference CLs with plain pyhf."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    folder = pallets or Path(os.environ.get("FAASCTL_PALLETS") or CHECKOUT.parent / "shared" / "pallets")
    for path in regenerate(suite.value, out_dir, folder):
        typer.echo(path)


if __name__ == "__main__":
    typer.run(main)
