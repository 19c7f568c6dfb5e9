"""A small pallet whose signals range from far too small to matter to clearly visible.

Made here from `pyhf.simplemodels.uncorrelated_background` (two bins, a shapesys background
uncertainty, observed counts off the background), so that its numbers are pyhf's own:

============  ===========  ======================================================================
patch         signal/bin   plain pyhf (numpy) and the compiled engine (jax)
============  ===========  ======================================================================
tiny          1e-6         q_mu,A ~ 0: pyhf CLs_obs finite (q_mu,A 7e-11), jax CLs_obs NaN (0)
small         1e-3         q_mu,A 3.5e-8: pyhf q_mu,A = 0 and CLs_obs NaN, jax CLs_obs 0.99985
below         0.1          q_mu,A 3.5e-4, below `QMU_A_MIN`: pyhf 6e-7 (not resolved)
above         0.3          q_mu,A 3.2e-3, just above `QMU_A_MIN`: both resolve it and agree
clear         5            q_mu,A ~ 0.8: an ordinary patch
============  ===========  ======================================================================
"""

from __future__ import annotations

import json
from pathlib import Path

import pyhf

from faasctl.pallets.load import workspace_digest

#: patch name -> signal per bin, and whether the test has sensitivity (`faasctl.study.QMU_A_MIN`)
SIGNALS = {"tiny": (1e-6, False), "small": (1e-3, False), "below": (0.1, False), "above": (0.3, True), "clear": (5.0, True)}


def weak_signal_pallet(folder: Path) -> Path:
    """Write the pallet (``BkgOnly.json``, ``patchset.json``) into ``folder`` and return it."""
    spec = pyhf.simplemodels.uncorrelated_background(signal=[1.0, 1.0], bkg=[50.0, 30.0], bkg_uncertainty=[5.0, 4.0]).spec
    (channel,) = spec["channels"]
    signal = next(s for s in channel["samples"] if s["name"] == "signal")
    background = {
        "channels": [{"name": channel["name"], "samples": [s for s in channel["samples"] if s is not signal]}],
        "observations": [{"name": channel["name"], "data": [53.0, 28.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    patches = [
        {"metadata": {"name": name, "values": [s, 0.0]},
         "patch": [{"op": "add", "path": "/channels/0/samples/0", "value": {**signal, "data": [s, s]}}]}
        for name, (s, _) in SIGNALS.items()
    ]
    patchset = {
        "metadata": {"description": "faasctl test: weak signals", "digests": {"sha256": workspace_digest(background)},
                     "labels": ["signal", "zero"], "references": {"hepdata": "ins0000000"}},
        "patches": patches,
        "version": "1.0.0",
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "BkgOnly.json").write_text(json.dumps(background, indent=1))
    (folder / "patchset.json").write_text(json.dumps(patchset, indent=1))
    return folder
