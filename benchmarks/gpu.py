"""The jax backend on a GPU (or, to check this script, on the CPU): compile time, per-patch fits, batched fits.

Rows:

a. ``compile``: the first fit of a model layout, which traces and compiles `faasctl.backends.jax`'s
   hypothesis test (five fits in one program), and the number of compilations it took;
b. ``per_patch``: fits one patch at a time after the compile (what a worker does), the median and
   spread over the patches;
c. ``batched``: many patches of one pallet in one program. The backend compiles one patch per call; here
   its hypothesis test is ``jax.vmap``-ed over the patches, which share one padded layout and differ only in
   array values. On a GPU a small fit is bound by the launch latency of each while-loop iteration, so one
   program for B patches costs about one patch's iterations (those of the slowest patch) instead of B
   patches'. Each batch size is compiled once (reported) and then timed; its CLs are checked against the
   per-patch fits (`faasctl.study.agrees`).

Usage::

    python benchmarks/gpu.py --device gpu                         # 1Lbb (../shared/pallets), 32 patches
    python benchmarks/gpu.py --device cpu --pallet examples/simple --patches 12 --batch 1 4 12
    python benchmarks/gpu.py --device gpu --patches 125 --batch 1 8 32 125 --json gpu.json

``--device gpu`` fails when JAX has no CUDA device (the CUDA image: ``docker run --gpus all``). The batching
glue lives here, not in the backend: it calls the backend's own compiled hypothesis test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PALLET = ROOT.parent / "shared" / "pallets" / "1Lbb"
#: The ModelArrays fields the hypothesis test takes, in its argument order (`faasctl.backends.jax._hypotest`).
FIELDS = ("nom", "bin_index", "hs_up", "hs_dn", "ns_hi", "ns_lo", "lin", "gauss", "sigma", "pois", "tau",
          "lower", "upper", "data", "aux", "init", "fixed")


def _spread(names: list[str], n: int) -> list[str]:
    """``n`` names spread over the list (patches differ in signal, so fit times differ)."""
    if n >= len(names):
        return list(names)
    step = len(names) / n
    return [names[int(i * step)] for i in range(n)]


def _sync(tree: Any) -> Any:
    import jax

    return jax.block_until_ready(tree)


def cls_of(stacked: Any, poi: int) -> list[list[float]]:
    """CLs (obs, then the expected band) per patch from its fits, as `JaxBackend.fit_arrays` does."""
    from faasctl.backends.jax import RESULTS, cls_from_teststats

    import numpy as np

    index = {name: i for i, name in enumerate(RESULTS)}
    nll, x = np.asarray(stacked.nll), np.asarray(stacked.x)

    def qtilde(b: int, fixed: str, free: str) -> float:
        q = max(2.0 * (float(nll[b, index[fixed]]) - float(nll[b, index[free]])), 0.0)
        return 0.0 if float(x[b, index[free], poi]) > 1.0 else q

    out = []
    for b in range(nll.shape[0]):
        obs, exp = cls_from_teststats(qtilde(b, "data_mu1", "data_free"), qtilde(b, "asimov_data_mu1", "asimov_data_free"))
        out.append([obs, *exp])
    return out


def bench(pallet_path: Path, n_patches: int, batches: list[int]) -> dict[str, Any]:
    import jax
    import numpy as np

    from faasctl.backends import jax as engine
    from faasctl.pallets.load import load_pallet
    from faasctl.study import agrees

    pallet = load_pallet(pallet_path)
    patches = pallet.select(_spread(list(pallet.patches), n_patches))
    backend = engine.JaxBackend(fallback=False)
    arrays = [backend.arrays(pallet.background, pallet.digest, p) for p in patches]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or len({a.poi for a in arrays}) != 1:
        sys.exit(f"{pallet_path}: the patches have {len(shapes)} layouts; batching needs one")

    # a. the first fit compiles (or loads the engine compiled by an earlier run); b. then one patch per call
    traces, loads = engine.TRACES["hypotest"], engine.LOADS["hypotest"]
    start = time.perf_counter()
    backend.fit_arrays(arrays[0])
    first = time.perf_counter() - start
    per_patch, reference = [], []
    for a in arrays:
        start = time.perf_counter()
        fit = backend.fit_arrays(a)  # returns host numbers: synchronised
        per_patch.append(time.perf_counter() - start)
        reference.append([fit.result[0], *fit.result[1]])
    median = statistics.median(per_patch)
    report: dict[str, Any] = {
        "compile": {"first_fit_s": first, "compile_s": first - median,
                    "compilations": engine.TRACES["hypotest"] - traces, "loaded": engine.LOADS["hypotest"] - loads},
        "per_patch": {"patches": len(arrays), "median_s": median, "min_s": min(per_patch), "max_s": max(per_patch),
                      "total_s": sum(per_patch), "iterations_per_patch": backend.stats["iterations"] / (len(arrays) + 1)},
        "batched": [],
    }

    # c. B patches in one program: the backend's hypothesis test, vmapped over the patches' arrays
    batched = jax.jit(jax.vmap(engine._hypotest, in_axes=(0,) * len(FIELDS) + (None,)))
    poi = arrays[0].poi
    for size in batches:
        size = min(size, len(arrays))
        chunks = [arrays[i:i + size] for i in range(0, len(arrays), size)]
        compile_s, run_s, cls, bad = None, 0.0, [], 0
        with jax.enable_x64(True):
            for chunk in chunks:
                if len(chunk) < size:  # pad the last chunk with copies: one compiled batch size
                    chunk = chunk + [chunk[-1]] * (size - len(chunk))
                args = [jax.device_put(np.stack([getattr(a, f) for a in chunk])) for f in FIELDS]
                if compile_s is None:
                    start = time.perf_counter()
                    _sync(batched(*args, poi))
                    compile_s = time.perf_counter() - start
                start = time.perf_counter()
                out = _sync(batched(*args, poi))
                run_s += time.perf_counter() - start
                bad += int((np.asarray(out.status) != 1).sum())
                cls += cls_of(out, poi)
        cls = cls[:len(arrays)]
        report["batched"].append({
            "batch": size, "programs": len(chunks), "compile_s": compile_s, "total_s": run_s,
            "per_patch_s": run_s / len(arrays), "speedup_vs_per_patch": sum(per_patch) / run_s,
            "not_converged": bad, "agree_with_per_patch": all(agrees(c, r) for c, r in zip(cls, reference)),
        })
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), required=True)
    parser.add_argument("--pallet", type=Path, default=DEFAULT_PALLET if DEFAULT_PALLET.exists() else ROOT / "examples" / "simple")
    parser.add_argument("--patches", type=int, default=32, help="patches, spread over the pallet (default: %(default)s)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="batch sizes (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    # before JAX starts: the platform asked for, and no silent fallback to the CPU
    os.environ["JAX_PLATFORMS"] = {"cpu": "cpu", "gpu": "cuda"}[args.device]
    if args.device == "cpu":  # as a worker runs (faasctl.study.WORKER_ENV): one thread
        from faasctl.study import WORKER_ENV

        os.environ.update(WORKER_ENV)
    import jax

    try:
        devices = jax.devices()
    except RuntimeError as err:
        print(f"error: no {args.device} for JAX: {err}", file=sys.stderr)
        return 1
    report = {"device": args.device, "devices": [str(d) for d in devices], "jax": jax.__version__,
              "pallet": str(args.pallet), **bench(args.pallet, args.patches, args.batch)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    ok = all(row["agree_with_per_patch"] and not row["not_converged"] for row in report["batched"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
