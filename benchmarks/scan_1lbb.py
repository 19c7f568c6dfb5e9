"""Where the time of a pallet scan goes, measured side by side in one run on this machine.

Rows (see docs/performance.md for the figures and how to read them):

a. plain pyhf, serial: ``pyhf.Workspace`` + model + ``pyhf.infer.hypotest`` per patch;
b. faasctl backends in-process, per patch after warm-up (``numpy``: plain pyhf behind the
   backend interface; ``jax``: the compiled engine, with its one-off compile time);
c. orchestration overhead per task (``faasctl.scan.worker.noop`` tasks) through the local engine
   (parsl HTEX on loopback) and, when Slurm and ``faasctl.executors.site`` are there,
   through direct mode on the ``slurm`` site;
d. the full scan through `faasctl.scan.client.FitClient` on the local engine with 1 and 2
   workers (``jax``; ``numpy`` too with ``--numpy-scan``, on 2 workers: ~15 min for 1Lbb):
   wall time and parallel efficiency ``T1 / (n * Tn)``.

Usage::

    python benchmarks/scan_1lbb.py                       # 1Lbb, all rows (~2 min)
    python benchmarks/scan_1lbb.py --pallet examples/simple --scan-patches 12
    python benchmarks/scan_1lbb.py --json /tmp/bench.json --numpy-scan

The process runs with the workers' thread settings (`faasctl.study.WORKER_ENV`: one
thread, XLA single-threaded) unless ``--default-threads`` is given, so in-process and
worker numbers compare.
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
#: The published study (Feickert et al., 125 1Lbb patches): wall times in seconds.
PUBLISHED = {
    "RIVER, 4 Slurm nodes (funcX), mean": 156.0,
    "RIVER, 4 Slurm nodes (funcX), best": 76.0,
    "RIVER, one node": 3842.0,
    "one Ryzen 9 core, pyhf serial": 1672.0,
}


def _spread(names: list[str], n: int) -> list[str]:
    """``n`` names spread over the list (patches differ in signal, so fit times differ)."""
    if n >= len(names):
        return list(names)
    step = len(names) / n
    return [names[int(i * step)] for i in range(n)]


def bench_pyhf(pallet: Any, names: list[str]) -> dict[str, Any]:
    from faasctl.study import pyhf_hypotest

    times = []
    for name in names:
        spec = pallet.workspace_spec(pallet.patches[name])
        start = time.perf_counter()
        pyhf_hypotest(spec)
        times.append(time.perf_counter() - start)
    return {"per_patch": statistics.mean(times), "patches": len(names), "times": times}


def bench_backend(name: str, pallet: Any, names: list[str]) -> dict[str, Any]:
    """First call (warm-up: imports, compilation) and the mean of the others."""
    from faasctl.backends import get_backend

    backend = get_backend(name)
    times = []
    for patch_name in names:
        start = time.perf_counter()
        backend.hypotest(pallet.background, pallet.digest, pallet.patches[patch_name])
        times.append(time.perf_counter() - start)
    steady = times[1:] or times
    out = {"first": times[0], "per_patch": statistics.mean(steady), "patches": len(steady), "times": times}
    out["compile"] = max(0.0, times[0] - out["per_patch"])
    stats = getattr(backend, "stats", None)
    if stats:
        out["stats"] = dict(stats)
    return out


def bench_noop(executor: Any, tasks: int, roundtrips: int) -> dict[str, Any]:
    """Throughput of ``tasks`` noops submitted at once, and the latency of one at a time."""
    import concurrent.futures as cf

    from faasctl.scan.worker import noop

    cold = time.perf_counter()
    executor.submit(noop, 0).result(timeout=600)  # the first task waits for the workers to start
    first_task = time.perf_counter() - cold
    start = time.perf_counter()
    futures = [executor.submit(noop, i) for i in range(tasks)]
    cf.wait(futures)
    elapsed = time.perf_counter() - start
    latencies = []
    for i in range(roundtrips):
        t = time.perf_counter()
        executor.submit(noop, i).result()
        latencies.append(time.perf_counter() - t)
    return {"tasks_per_s": tasks / elapsed, "per_task": elapsed / tasks, "latency": statistics.median(latencies),
            "tasks": tasks, "first_task": first_task}


def bench_local_noop(workers: int, tasks: int, roundtrips: int) -> dict[str, Any]:
    from faasctl.executors.local import local_executor

    start = time.perf_counter()
    with local_executor(workers=workers) as executor:
        first = time.perf_counter()
        out = bench_noop(executor, tasks, roundtrips)
        out["startup"] = first - start
    return out


def bench_slurm_noop(tasks: int, roundtrips: int) -> dict[str, Any]:
    """The same through direct mode on the ``slurm`` site, or why it was skipped."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("faasctl.executors.site") is None:
        return {"skipped": "faasctl.executors.site is not installed"}
    if shutil.which("sbatch") is None:
        return {"skipped": "no Slurm here (sbatch not on PATH)"}
    import subprocess
    import tempfile

    probe = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return {"skipped": f"Slurm is not running (sinfo: {probe.stderr.strip().splitlines()[-1:]})"}

    from faasctl.executors.site import site_executor
    from faasctl.sites import load_site

    try:
        with tempfile.TemporaryDirectory(prefix="faasctl-bench-slurm-", dir=Path.cwd()) as run_dir:
            start = time.perf_counter()
            with site_executor(load_site("slurm"), run_dir=run_dir) as executor:
                first = time.perf_counter()
                out = bench_noop(executor, tasks, roundtrips)  # its first task waits for a block to start
                out["startup"] = first - start
            return out
    except Exception as err:  # noqa: BLE001 - a benchmark row, not the product
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return {"skipped": f"direct Slurm failed: {type(err).__name__}: {first_line}"}


def bench_scan(pallet: Any, names: list[str], backend: str, workers: int) -> dict[str, Any]:
    from faasctl.scan.client import FitClient
    from faasctl.executors.local import local_executor

    start = time.perf_counter()
    first_result = None
    results = []
    with local_executor(workers=workers) as executor:
        ready = time.perf_counter()
        for result in FitClient(executor, backend=backend).scan(pallet, names):
            first_result = first_result or time.perf_counter() - ready
            results.append(result)
        done = time.perf_counter()
    failed = [r.patch for r in results if not r.ok]
    fit_times = [r.fit_time for r in results if r.fit_time is not None]
    return {
        "startup": ready - start, "wall": done - ready, "total": done - start, "patches": len(results),
        "first_result": first_result, "failed": failed,
        "cls": {r.patch: [r.cls_obs, *(r.cls_exp or [])] for r in results if r.ok},
        "fit_time_sum": sum(fit_times), "workers": workers,
    }


def _compare(cls: dict[str, list[float]], reference: dict[str, list[float]]) -> str:
    common = [n for n in cls if n in reference]
    if not common:
        return "no cached reference"
    worst_abs = max(abs(g - w) for n in common for g, w in zip(cls[n], reference[n]))
    return f"max |dCLs| vs cached pyhf reference: {worst_abs:.2g} over {len(common)} patches"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pallet", type=Path, default=DEFAULT_PALLET, help="pallet folder (default: 1Lbb)")
    parser.add_argument("--pyhf-patches", type=int, default=3, help="patches for the plain pyhf row (a)")
    parser.add_argument("--numpy-patches", type=int, default=2, help="patches for the in-process numpy row (b)")
    parser.add_argument("--jax-patches", type=int, default=20, help="patches for the in-process jax row (b)")
    parser.add_argument("--scan-patches", type=int, default=None, help="patches in the scans (d); default all")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts for (d)")
    parser.add_argument("--noop-tasks", type=int, default=500, help="noop tasks for the throughput in (c)")
    parser.add_argument("--numpy-scan", action="store_true",
                        help="also scan with the numpy backend (1Lbb: ~15 min on 2 workers)")
    parser.add_argument("--numpy-workers", type=int, nargs="+", default=None,
                        help="worker counts for the numpy scan (default: the largest of --workers)")
    parser.add_argument("--no-slurm", action="store_true", help="skip the direct Slurm row")
    parser.add_argument("--default-threads", action="store_true", help="keep this process's thread settings")
    parser.add_argument("--json", type=Path, help="write all measurements here")
    args = parser.parse_args(argv)

    from faasctl.study import WORKER_ENV

    if not args.default_threads:
        os.environ.update(WORKER_ENV)  # before numpy/jax start their thread pools

    from faasctl.pallets.load import load_pallet

    pallet = load_pallet(args.pallet)
    names = list(pallet.patches)
    scan_names = names[: args.scan_patches] if args.scan_patches else names
    out: dict[str, Any] = {"pallet": str(args.pallet), "patches": len(names), "cpus": os.cpu_count(),
                           "worker_env": not args.default_threads}

    print(f"pallet {args.pallet}: {len(names)} patches; {os.cpu_count()} cores", flush=True)
    # engines first: they fork worker processes, best done before JAX starts its threads here
    print("c. orchestration overhead ...", flush=True)
    out["noop_local"] = bench_local_noop(max(args.workers), args.noop_tasks, 50)
    out["noop_slurm"] = {"skipped": "--no-slurm"} if args.no_slurm else bench_slurm_noop(args.noop_tasks, 20)
    print("d. scans ...", flush=True)
    out["scan"] = {"jax": {w: bench_scan(pallet, scan_names, "jax", w) for w in args.workers}}
    if args.numpy_scan:
        numpy_workers = args.numpy_workers or [max(args.workers)]
        out["scan"]["numpy"] = {w: bench_scan(pallet, scan_names, "numpy", w) for w in numpy_workers}
    print("a. plain pyhf ...", flush=True)
    out["pyhf"] = bench_pyhf(pallet, _spread(names, args.pyhf_patches))
    print("b. backends in-process ...", flush=True)
    out["backend"] = {
        "numpy": bench_backend("numpy", pallet, _spread(names, args.numpy_patches + 1)),
        "jax": bench_backend("jax", pallet, _spread(names, args.jax_patches + 1)),
    }

    reference: dict[str, list[float]] = {}
    cache = Path(f"/tmp/faasctl-reference-{pallet.digest[:12]}.json")
    if cache.exists():
        doc = json.loads(cache.read_text())
        reference = doc.get("results", {}) if doc.get("digest") == pallet.digest else {}

    pyhf_per_patch = out["pyhf"]["per_patch"]
    rows: list[tuple[str, str, str]] = []

    def row(what: str, value: str, per_patch: float | None = None) -> None:
        ratio = f"{pyhf_per_patch / per_patch:8.1f}x" if per_patch else ""
        rows.append((what, value, ratio))

    row(f"a. plain pyhf, serial ({out['pyhf']['patches']} patches)", f"{pyhf_per_patch:8.2f} s/patch", pyhf_per_patch)
    for b, r in out["backend"].items():
        extra = f", first call {r['first']:.1f} s (compile {r['compile']:.1f} s)" if b == "jax" else ""
        row(f"b. faasctl {b} backend, in-process", f"{r['per_patch']:8.3f} s/patch{extra}", r["per_patch"])
    for label, r in (("local engine", out["noop_local"]), ("direct Slurm", out["noop_slurm"])):
        if "skipped" in r:
            row(f"c. noop tasks, {label}", f"skipped: {r['skipped']}")
        else:
            row(f"c. noop tasks, {label}", f"{r['tasks_per_s']:8.0f} tasks/s, latency {r['latency'] * 1e3:.1f} ms, "
                f"start {r['startup']:.1f} s + first task {r['first_task']:.1f} s")
    for b, by_workers in out["scan"].items():
        t1 = by_workers.get(1, {}).get("wall")
        for w, r in by_workers.items():
            eff = f", efficiency {t1 / (w * r['wall']):.0%}" if t1 and w > 1 else ""
            fails = f", {len(r['failed'])} FAILED" if r["failed"] else ""
            row(f"d. {b} scan, {r['patches']} patches, {w} worker(s)",
                f"{r['wall']:8.1f} s (+{r['startup']:.1f} s engine start){eff}{fails}", r["wall"] / r["patches"])
            rows.append(("", f"first result after {r['first_result']:.1f} s (worker start, imports, compile); "
                             f"fits {r['fit_time_sum'] / max(1, r['patches']) * 1e3:.0f} ms/patch in the workers", ""))
            if reference:
                rows.append(("", _compare(r["cls"], reference), ""))
    if len(scan_names) == 125:
        best = min(r["wall"] for r in out["scan"]["jax"].values())
        for label, seconds in PUBLISHED.items():
            rows.append((f"published: {label}", f"{seconds:8.0f} s", f"{seconds / best:8.1f}x ours"))

    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'measurement':<{width}}  {'value':<60}  per patch vs pyhf")
    for what, value, ratio in rows:
        print(f"{what:<{width}}  {value:<60}  {ratio}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    failed = any(r["failed"] for by_w in out["scan"].values() for r in by_w.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
