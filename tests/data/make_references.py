"""Compute plain pyhf's reference CLs for every patch of the real pallets, as committed test data.

For each patch, CLs_obs and the five expected CLs of the study's test (`faasctl.study.pyhf_hypotest`),
twice: with pyhf's default SLSQP settings, and converged (``scipy_optimizer(tolerance=1e-10)``), since
the default sometimes stops short of the minimum and the converged answer is then the reference.
Non-finite CLs are stored as null. Resumable: an interrupted run keeps what it wrote.

    python tests/data/make_references.py                 # 1Lbb and staus from ../shared/pallets (~1 h on 2 cores)
    python tests/data/make_references.py --pallet staus --jobs 2

Writes tests/data/reference/<pallet>.json; tests/test_reference_pallets.py reads it.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
PALLETS = HERE.parents[1].parent / "shared" / "pallets"
CONVERGED_TOLERANCE = 1e-10


def _finite_or_none(values: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def _fit(spec: dict, tolerance: float | None) -> list[float | None]:
    import warnings

    from faasctl.study import pyhf_hypotest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyhf warns on the degenerate patches whose CLs is NaN
        obs, exp = pyhf_hypotest(spec, validate=False, tolerance=tolerance)
    return _finite_or_none([obs, *exp])


def make(name: str, jobs: int) -> Path:
    from faasctl.pallets import load_pallet

    pallet = load_pallet(PALLETS / name)
    path = HERE / "reference" / f"{name}.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    if doc.get("digest") != pallet.digest:
        doc = {
            "pallet": name,
            "digest": pallet.digest,
            "generated_by": "python tests/data/make_references.py",
            "generated_with": {p: metadata.version(p) for p in ("pyhf", "numpy", "scipy")},
            "hypotest": "pyhf.infer.hypotest(1.0, data, model, test_stat='qtilde', return_expected_set=True), "
                        "normsys code4, histosys code4p; [CLs_obs, CLs_exp -2..+2 sigma]",
            "converged_tolerance": CONVERGED_TOLERANCE,
            "patches": {},
        }
    # Two passes, pyhf's defaults first: they are the reference wherever they converge.
    for key, tolerance in (("default", None), ("converged", CONVERGED_TOLERANCE)):
        todo = [p for p in pallet.patches if key not in doc["patches"].get(p, {})]
        with cf.ProcessPoolExecutor(jobs) as pool:
            futures = {pool.submit(_fit, pallet.workspace_spec(pallet.patches[p]), tolerance): p for p in todo}
            for i, future in enumerate(cf.as_completed(futures), 1):
                doc["patches"].setdefault(futures[future], {})[key] = future.result()
                doc["patches"] = dict(sorted(doc["patches"].items()))
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(doc, indent=1) + "\n")
                os.replace(tmp, path)
                print(f"{name} {key}: {i}/{len(todo)} {futures[future]}", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pallet", action="append", choices=("1Lbb", "staus"))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    for name in args.pallet or ("1Lbb", "staus"):
        print(make(name, args.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
