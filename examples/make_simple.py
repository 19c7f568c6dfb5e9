"""Generate examples/simple: a small pallet shaped like an ATLAS SUSY search.

Two control regions and two signal regions, three backgrounds with normalisation factors,
normsys/histosys/staterror/lumi modifiers, and a 4x4 grid of signal points (m1, m2) whose
yield falls with mass. Deterministic: `python examples/make_simple.py` rewrites the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyhf

HERE = Path(__file__).parent / "simple"
rng = np.random.default_rng(20200691)

CHANNELS = {"CR_top": 2, "CR_W": 2, "SR_low": 3, "SR_high": 3}
BACKGROUNDS = {"ttbar": ("mu_ttbar", 1.0), "wjets": ("mu_W", 0.6), "other": (None, 0.3)}


def background_sample(name: str, channel: str, nbins: int) -> dict:
    scale = {"CR_top": 120.0, "CR_W": 90.0, "SR_low": 12.0, "SR_high": 4.0}[channel]
    share = BACKGROUNDS[name][1]
    if channel == "CR_top" and name == "wjets" or channel == "CR_W" and name == "ttbar":
        share *= 0.25
    data = (scale * share * rng.uniform(0.7, 1.3, nbins)).round(3).tolist()
    modifiers = [
        {"name": "lumi", "type": "lumi", "data": None},
        {"name": f"staterror_{channel}", "type": "staterror", "data": [round(0.08 * d, 3) for d in data]},
        {"name": "jes", "type": "histosys", "data": {
            "hi_data": [round(d * 1.05, 3) for d in data], "lo_data": [round(d * 0.96, 3) for d in data]}},
        {"name": f"theory_{name}", "type": "normsys", "data": {"hi": 1.08, "lo": 0.93}},
    ]
    if BACKGROUNDS[name][0]:
        modifiers.append({"name": BACKGROUNDS[name][0], "type": "normfactor", "data": None})
    return {"name": name, "data": data, "modifiers": modifiers}


def main() -> None:
    channels = [
        {"name": ch, "samples": [background_sample(b, ch, n) for b in BACKGROUNDS]} for ch, n in CHANNELS.items()
    ]
    observations = []
    for ch in channels:
        total = np.sum([s["data"] for s in ch["samples"]], axis=0)
        observations.append({"name": ch["name"], "data": rng.poisson(total).astype(float).tolist()})
    parameters = [
        {"name": "lumi", "auxdata": [1.0], "sigmas": [0.017], "bounds": [[0.915, 1.085]], "inits": [1.0]},
        {"name": "mu_ttbar", "bounds": [[0.0, 5.0]], "inits": [1.0]},
        {"name": "mu_W", "bounds": [[0.0, 5.0]], "inits": [1.0]},
        {"name": "mu_SIG", "bounds": [[0.0, 10.0]], "inits": [1.0]},
    ]
    workspace = {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "NormalMeasurement", "config": {"poi": "mu_SIG", "parameters": parameters}}],
        "version": "1.0.0",
    }
    pyhf.Workspace(workspace)  # validates

    patches = []
    for m1 in (300, 400, 500, 600):
        for m2 in (0, 100, 200):
            strength = 250.0 * np.exp(-(m1 - 300) / 110.0) * (1 - m2 / (m1 + 100))
            ops = []
            for i, (ch, nbins) in enumerate(CHANNELS.items()):
                frac = {"CR_top": 0.01, "CR_W": 0.01, "SR_low": 0.25, "SR_high": 0.12}[ch]
                shape = np.linspace(1.0, 0.5 + m1 / 600, nbins)
                data = (strength * frac * shape / shape.sum()).round(4).tolist()
                ops.append({"op": "add", "path": f"/channels/{i}/samples/{len(BACKGROUNDS)}", "value": {
                    "name": f"signal_{m1}_{m2}", "data": data, "modifiers": [
                        {"name": "mu_SIG", "type": "normfactor", "data": None},
                        {"name": "lumi", "type": "lumi", "data": None},
                        {"name": f"staterror_{ch}", "type": "staterror", "data": [round(0.1 * d, 4) for d in data]},
                        {"name": "sig_xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                    ]}})
            patches.append({"metadata": {"name": f"grid_{m1}_{m2}", "values": [m1, m2]}, "patch": ops})
    patchset = {
        "metadata": {
            "description": "faasctl example: a small SUSY-like grid",
            "digests": {"sha256": pyhf.utils.digest(workspace)},
            "labels": ["m1", "m2"],
            "references": {"hepdata": "ins0000000"},  # schema requires one; this example is synthetic
        },
        "patches": patches,
        "version": "1.0.0",
    }
    pyhf.PatchSet(patchset)  # validates
    HERE.mkdir(exist_ok=True)
    (HERE / "BkgOnly.json").write_text(json.dumps(workspace, indent=1) + "\n")
    (HERE / "patchset.json").write_text(json.dumps(patchset, indent=1) + "\n")


if __name__ == "__main__":
    main()
