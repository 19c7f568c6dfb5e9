"""The whole scan from a cold CLI: ``faasctl fit`` as a user runs it, beside plain pyhf, in one run.

For each pallet (default: 1Lbb and staus from ../shared/pallets, and examples/simple):

* **plain pyhf**: seconds per patch of the study's test (`faasctl.study.pyhf_hypotest`), serial,
  in a fresh process with the workers' thread settings, on a few patches spread over the pallet;
  ``serial`` is that times the number of patches: what plain pyhf would take on one core;
* **pyhf jax**: pyhf's own jax backend, the same test (what a user would pick instead), per patch
  after its first;
* **faasctl fit**: the process wall of ``faasctl fit PALLET --workers N --timeline`` (the console
  script, as users run it) in a subprocess (interpreter start to exit), first with an empty engine
  cache (*cold*: the workers compile) and then again with the compiled engine it left (*warm*, what
  every later run gets), with the time to the first result and the breakdown the run wrote to
  timeline.json: imports, pallet read, engine start, worker import, compile, fits, tail; and
  whether every CLs agrees with the committed pyhf reference (tests/data/reference/<pallet>.json)
  where there is one.

``--slurm`` adds the warm run through direct mode on the ``slurm`` site (.ci/slurm-up.sh).
``--device gpu`` runs the workers' JAX on the GPU (``JAX_PLATFORMS=cuda``, one worker per GPU
unless ``--workers``) for a machine that has one.

Usage::

    python benchmarks/cold_cli.py                             # ~3 min + plain pyhf (~30 s per 1Lbb patch)
    python benchmarks/cold_cli.py --pallet examples/simple --no-pyhf-jax
    python benchmarks/cold_cli.py --slurm --json /tmp/cold.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PALLETS = {
    "1Lbb": ROOT.parent / "shared" / "pallets" / "1Lbb",
    "staus": ROOT.parent / "shared" / "pallets" / "staus",
    "simple": ROOT / "examples" / "simple",
}
#: The ``faasctl`` console script beside this interpreter, as a user runs it (its local workers run it
#: again as their ``__main__``, which ``python -m faasctl.cli`` would not show)
SCRIPT = Path(sys.executable).parent / "faasctl"
FAASCTL = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "faasctl.cli"]

PYHF_SCRIPT = """
import json, sys, time
from faasctl.pallets.load import apply_patch, load_pallet
from faasctl.study import MODIFIER_SETTINGS, POI_TEST, TEST_STAT, pyhf_hypotest
pallet = load_pallet(sys.argv[1])
names = json.loads(sys.argv[2])
backend = sys.argv[3]
times = []
if backend == "numpy":
    for name in names:
        start = time.perf_counter()
        pyhf_hypotest(apply_patch(pallet.background, pallet.patches[name]))
        times.append(time.perf_counter() - start)
else:
    import pyhf
    pyhf.set_backend("jax")
    for name in names:
        start = time.perf_counter()
        ws = pyhf.Workspace(apply_patch(pallet.background, pallet.patches[name]))
        model = ws.model(modifier_settings=MODIFIER_SETTINGS)
        pyhf.infer.hypotest(POI_TEST, ws.data(model), model, test_stat=TEST_STAT, return_expected_set=True)
        times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    from faasctl.study import WORKER_ENV

    return {**os.environ, **WORKER_ENV, **(extra or {})}


def spread(names: list[str], n: int) -> list[str]:
    step = max(1, len(names) // max(1, n))
    return names[::step][:n]


def pyhf_per_patch(path: Path, names: list[str], backend: str) -> list[float]:
    """Seconds per patch of plain pyhf (``numpy``) or pyhf's jax backend, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", PYHF_SCRIPT, str(path), json.dumps(names), backend],
                         env=worker_env(), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_cli(path: Path, out: Path, *, workers: int, cache: Path, extra: list[str] = (), env: dict[str, str] | None = None,
            cwd: Path | None = None) -> dict[str, Any]:
    """One ``faasctl fit`` in a subprocess: its wall, and the breakdown it wrote."""
    args = [*FAASCTL, "fit", str(path), "--out", str(out), "--force", "--timeline", *extra]
    if "--site" not in extra:
        args += ["--workers", str(workers)]
    start = time.perf_counter()
    proc = subprocess.run(args, env={**os.environ, "FAASCTL_JAX_CACHE": str(cache), **(env or {})},
                          capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"faasctl fit {path} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    doc = json.loads((out / "timeline.json").read_text())
    results = json.loads((out / "results.json").read_text())["results"]
    return {"wall": wall, "breakdown": doc["breakdown"], "results": results}


REFERENCES = ROOT / "tests" / "data" / "reference"


def agreement(name: str, results: list[dict[str, Any]], references: Path) -> str:
    """How many CLs agree with the committed plain-pyhf reference (default or converged SLSQP)."""
    from faasctl.study import agrees

    ref_file = references / f"{name}.json"
    if not ref_file.exists():
        return "no reference"
    ref = json.loads(ref_file.read_text())["patches"]
    checked = ok = 0
    for r in results:
        want = ref.get(r["patch"])
        if want is None or r["status"] != "ok":
            continue
        got = [r["cls_obs"], *r["cls_exp"]]
        checked += 1
        ok += any(agrees(got, [math.nan if v is None else v for v in want[k]]) for k in ("default", "converged") if k in want)
    return f"{ok}/{checked} agree with pyhf" if checked else "no reference patches"


def fmt(v: Any, unit: str = "s", digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f} {unit}".strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pallet", action="append", help="a pallet path or 1Lbb/staus/simple (repeatable; default all three)")
    parser.add_argument("--workers", type=int, default=None, help="local workers (default: cores; GPUs with --device gpu)")
    parser.add_argument("--pyhf-patches", type=int, default=2, help="patches for the plain pyhf per-patch time")
    parser.add_argument("--no-pyhf-jax", action="store_true", help="skip the pyhf jax backend row")
    parser.add_argument("--slurm", action="store_true", help="also the warm run in direct mode on the slurm site")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where the workers' JAX runs")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--reference", type=Path, default=REFERENCES,
                        help="folder of plain-pyhf references <pallet>.json (tests/data/make_references.py)")
    args = parser.parse_args(argv)

    from faasctl.pallets.load import load_pallet

    env: dict[str, str] = {}
    workers = args.workers or os.cpu_count() or 1
    if args.device == "gpu":
        env["JAX_PLATFORMS"] = "cuda"
        if args.workers is None:
            import jax

            workers = max(1, len(jax.devices("gpu")))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} UTC, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{workers} workers, device {args.device}", flush=True)
    report: dict[str, Any] = {"cores": os.cpu_count(), "workers": workers, "device": args.device, "pallets": {}}
    chosen = args.pallet or list(PALLETS)
    scratch = Path(tempfile.mkdtemp(prefix="faasctl-bench-"))
    try:
        for spec in chosen:
            path = PALLETS.get(spec, Path(spec))
            name = spec if spec in PALLETS else path.name
            pallet = load_pallet(path)
            n = len(pallet.patches)
            row: dict[str, Any] = {"patches": n}
            sample = spread(list(pallet.patches), args.pyhf_patches)
            row["pyhf_s_per_patch"] = sum(pyhf_per_patch(path, sample, "numpy")) / len(sample)
            row["pyhf_serial"] = row["pyhf_s_per_patch"] * n
            if not args.no_pyhf_jax:
                jax_times = pyhf_per_patch(path, spread(list(pallet.patches), 3), "jax")
                row["pyhf_jax_first"], row["pyhf_jax_s_per_patch"] = jax_times[0], sum(jax_times[1:]) / len(jax_times[1:])
            cache = scratch / f"jax-cache-{name}"
            for kind in ("cold", "warm"):
                run = fit_cli(path, scratch / f"{name}-{kind}", workers=workers, cache=cache, env=env)
                row[kind] = {"wall": run["wall"], **run["breakdown"]}
                row[kind]["agreement"] = agreement(name, run["results"], args.reference)
            if args.slurm:
                run = fit_cli(path, scratch / f"{name}-slurm", workers=workers, cache=cache, cwd=scratch,
                              extra=["--site", "slurm", "--direct", "--set", "provider.walltime=00:10:00"])
                row["slurm"] = {"wall": run["wall"], **run["breakdown"]}
            report["pallets"][name] = row
            print_row(name, row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def print_row(name: str, row: dict[str, Any]) -> None:
    n = row["patches"]
    print(f"\n## {name}: {n} patches")
    print(f"plain pyhf        {fmt(row['pyhf_s_per_patch'])}/patch, serial {fmt(row['pyhf_serial'], digits=0)}")
    if "pyhf_jax_s_per_patch" in row:
        print(f"pyhf jax backend  {fmt(row['pyhf_jax_s_per_patch'])}/patch (first {fmt(row['pyhf_jax_first'])}), "
              f"{row['pyhf_s_per_patch'] / row['pyhf_jax_s_per_patch']:.1f}x plain pyhf")
    for kind in ("cold", "warm", "slurm"):
        if kind not in row:
            continue
        r = row[kind]
        workers = max(1, r["workers"] or 1)
        non_fit = 1 - (r["fits"] or 0) / workers / r["wall"]
        print(f"faasctl fit {kind:<5} wall {fmt(r['wall'])} ({row['pyhf_serial'] / r['wall']:.0f}x plain pyhf serial), "
              f"first result {fmt(r['first_result'])}, not fitting {non_fit:.0%}, {r.get('agreement', '')}")
        print(f"   imports {fmt(r['imports'])}, pallet read {fmt(r['pallet_read'])}, engine start {fmt(r['engine_start'])}, "
              f"worker import {fmt(r['worker_import'])}, compile {fmt(r['compile'])}, fit {fmt(r['fit'], 'ms', 0) if r['fit'] is None else fmt(r['fit'] * 1e3, 'ms', 0)}"
              f"/patch, fits {fmt(r['fits'])} over {workers} workers, tail {fmt(r['tail'])}, plot {fmt(r['plot'])}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
