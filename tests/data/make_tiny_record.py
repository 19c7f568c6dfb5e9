"""Write ``tiny_record/``: a small likelihood record laid out as HEPData publishes older ones.

Two regions, each a ``BkgOnly.json`` with one ``patch.NAME.json`` per signal point (a plain
JSON Patch list, the values only in the file name), like ATLAS SUSY-2018-04 (staus):

``RegionA``
    Two channels (SR: 2 bins, CR: 1 bin), four signal points. The 400_200 point has no
    ``sig_jes`` systematic (pruned, as in real records), so the patches have two structures.
``RegionB``
    One 1-bin channel, and besides two good points two crafted broken ones:

    - ``sig_500_100`` adds the signal sample and removes it again, so the POI ``mu_SIG``
      is nowhere in the model: pyhf cannot build it (as a published sbottom patch does);
    - ``sig_600_100`` builds, but its CLs is NaN: a huge signal on a huge background with
      nothing observed makes both CLs+b and CLb underflow to 0.

Run ``python tests/data/make_tiny_record.py`` to rewrite the files; the output is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "tiny_record"

LUMI = {"name": "lumi", "auxdata": [1.0], "sigmas": [0.017], "bounds": [[0.915, 1.085]], "inits": [1.0]}


def _measurement() -> list[dict[str, Any]]:
    return [{"name": "NormalMeasurement", "config": {"poi": "mu_SIG", "parameters": [LUMI]}}]


def region_a() -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    background = {
        "version": "1.0.0",
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "ttbar",
                        "data": [30.0, 12.0],
                        "modifiers": [
                            {"name": "lumi", "type": "lumi", "data": None},
                            {"name": "ttbar_xsec", "type": "normsys", "data": {"hi": 1.08, "lo": 0.93}},
                            {"name": "jes", "type": "histosys", "data": {"hi_data": [32.0, 13.5], "lo_data": [28.5, 10.8]}},
                            {"name": "staterror_SR", "type": "staterror", "data": [2.0, 1.5]},
                        ],
                    },
                    {
                        "name": "wjets",
                        "data": [20.0, 9.0],
                        "modifiers": [
                            {"name": "lumi", "type": "lumi", "data": None},
                            {"name": "mu_W", "type": "normfactor", "data": None},
                            {"name": "staterror_SR", "type": "staterror", "data": [1.8, 1.2]},
                        ],
                    },
                ],
            },
            {
                "name": "CR",
                "samples": [
                    {
                        "name": "ttbar",
                        "data": [40.0],
                        "modifiers": [
                            {"name": "lumi", "type": "lumi", "data": None},
                            {"name": "ttbar_xsec", "type": "normsys", "data": {"hi": 1.08, "lo": 0.93}},
                            {"name": "staterror_CR", "type": "staterror", "data": [3.0]},
                        ],
                    },
                    {
                        "name": "wjets",
                        "data": [160.0],
                        "modifiers": [
                            {"name": "lumi", "type": "lumi", "data": None},
                            {"name": "mu_W", "type": "normfactor", "data": None},
                            {"name": "staterror_CR", "type": "staterror", "data": [6.0]},
                        ],
                    },
                ],
            },
        ],
        "observations": [{"name": "SR", "data": [53.0, 22.0]}, {"name": "CR", "data": [203.0]}],
        "measurements": _measurement(),
    }
    patches = {}
    for m1, m2 in ((300, 100), (300, 200), (400, 100), (400, 200)):
        scale = (300 / m1) ** 3 * (1.0 if m2 == 100 else 0.7)
        sr = [round(9.0 * scale, 3), round(6.0 * scale, 3)]
        cr = [round(1.5 * scale, 3)]
        name = f"sig_{m1}_{m2}"
        ops = []
        for channel, data in ((0, sr), (1, cr)):
            modifiers: list[dict[str, Any]] = [
                {"name": "mu_SIG", "type": "normfactor", "data": None},
                {"name": "lumi", "type": "lumi", "data": None},
                {"name": "sig_xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
            ]
            if channel == 0 and (m1, m2) != (400, 200):  # pruned at 400_200
                modifiers.append(
                    {"name": "jes", "type": "histosys", "data": {"hi_data": [round(d * 1.05, 4) for d in data], "lo_data": [round(d * 0.95, 4) for d in data]}}
                )
            ops.append({"op": "add", "path": f"/channels/{channel}/samples/0", "value": {"name": name, "data": data, "modifiers": modifiers}})
        patches[name] = ops
    return background, patches


def region_b() -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    background = {
        "version": "1.0.0",
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [50.0],
                        "modifiers": [{"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.01, "lo": 0.99}}],
                    }
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [52.0]}],
        "measurements": [{"name": "NormalMeasurement", "config": {"poi": "mu_SIG", "parameters": []}}],
    }

    def signal(name: str, data: list[float]) -> dict[str, Any]:
        return {"name": name, "data": data, "modifiers": [{"name": "mu_SIG", "type": "normfactor", "data": None}]}

    patches = {
        "sig_300_100": [{"op": "add", "path": "/channels/0/samples/1", "value": signal("sig_300_100", [20.0])}],
        "sig_400_100": [{"op": "add", "path": "/channels/0/samples/1", "value": signal("sig_400_100", [8.0])}],
        # adds the signal and removes it again: no mu_SIG anywhere, pyhf cannot build the model
        "sig_500_100": [
            {"op": "add", "path": "/channels/0/samples/1", "value": signal("sig_500_100", [3.0])},
            {"op": "remove", "path": "/channels/0/samples/1"},
        ],
        # builds, but CLs_obs = 0/0 = NaN: CLs+b and CLb both underflow
        "sig_600_100": [
            {"op": "replace", "path": "/channels/0/samples/0/data", "value": [5000.0]},
            {"op": "replace", "path": "/observations/0/data", "value": [0.0]},
            {"op": "add", "path": "/channels/0/samples/1", "value": signal("sig_600_100", [5000.0])},
        ],
    }
    return background, patches


README = """# JSON likelihoods for a tiny test analysis

Made by `tests/data/make_tiny_record.py` for faasctl's tests, laid out like ATLAS
SUSY-2018-04: `$region/BkgOnly.json` and one `$region/patch.sig_m1_m2.json` per signal point.

    pyhf cls RegionA/BkgOnly.json -p RegionA/patch.sig_300_100.json
"""


def main() -> None:
    for region, make in (("RegionA", region_a), ("RegionB", region_b)):
        folder = OUT / region
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json"):
            old.unlink()
        background, patches = make()
        (folder / "BkgOnly.json").write_text(json.dumps(background, indent=1, sort_keys=True) + "\n")
        for name, ops in patches.items():
            (folder / f"patch.{name}.json").write_text(json.dumps(ops, indent=1, sort_keys=True) + "\n")
    (OUT / "README.md").write_text(README)


if __name__ == "__main__":
    main()
