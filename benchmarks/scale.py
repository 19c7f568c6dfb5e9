"""Scale: ``faasctl fit`` on generated pallets of 10^2 to 10^5 patches; is the cost per patch flat, the memory bounded?

Each pallet is 1Lbb's background with N signal points made from one real 1Lbb patch (the
smallest, ``C1N2_Wh_hbb_190_60``): point ``i`` scales every yield of its signal samples (data,
histosys templates, staterror) by its own factor, so every patch is a valid, distinct model.
They are written as ``patch.pt_A_B.json.gz`` files (values ``(A, B)``, a square grid).

Each N runs ``faasctl fit PALLET --no-plot`` in a fresh process (the CLI in-process, output to
a log) on the local engine, and prints:

* **wall**: the command, from the call to its return (engine start and pallet read included);
* **per patch**: wall / N;
* **orch/patch**: what is not fitting, per patch: (wall - sum of fit times / workers) / N;
* **steady**: the same between the first and the last result, per result, against the mean fit
  that did not compile (start-up, compilation and tail left out): the figure that should stay flat;
* **RSS**: the client's peak resident memory (``getrusage``; the workers are other processes);
* **store**: bytes the client wrote to storage (``/proc/self/io`` ``write_bytes``: the results
  database and its exports; nothing else of the client writes files with ``--no-plot``).

``--noop`` replaces the fit by a task that answers at once (`fake_fit`: the same payload, the same
background handling): the whole pipeline, without fitting.

``--interrupt`` checks instead that a scan stopped half-way loses nothing and refits nothing done:
per N, ``faasctl fit`` (a fresh process) gets SIGINT once half the results are recorded, must exit
130, and is run again on the same ``--out``. The second run must fit exactly the patches the first
did not record, leave every recorded result as it was (same record, same receive time), and end
with all N.

Usage::

    python benchmarks/scale.py                   # N = 100, 1000, 10000 (~10 min on 2 quiet cores)
    python benchmarks/scale.py --noop            # the pipeline alone (~5-8 min)
    python benchmarks/scale.py --big             # adds N = 100000 (~25 min: 7 to write the files, ~0.6 GB)
    python benchmarks/scale.py --sizes 100 300 --workers 2 --json /tmp/scale.json
    python benchmarks/scale.py --interrupt --sizes 10000 --noop   # Ctrl-C half-way, then resume (~4 min)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "pallets" / "1Lbb"
BASE_PATCH = "C1N2_Wh_hbb_190_60"


# --- generating pallets ----------------------------------------------------------------------


def _scaled(operations: list[dict[str, Any]], factor: float) -> list[dict[str, Any]]:
    """``operations`` with every added sample's yields (and their absolute uncertainties) times ``factor``."""
    ops = copy.deepcopy(operations)
    for op in ops:
        sample = op.get("value")
        if op["op"] != "add" or not isinstance(sample, dict) or "data" not in sample:
            continue
        sample["data"] = [x * factor for x in sample["data"]]
        for modifier in sample.get("modifiers", []):
            data = modifier.get("data")
            if modifier["type"] == "histosys":
                modifier["data"] = {k: [x * factor for x in v] for k, v in data.items()}
            elif modifier["type"] == "staterror":
                modifier["data"] = [x * factor for x in data]
    return ops


def generate(n: int, folder: Path) -> Path:
    """A pallet of ``n`` patch files in ``folder`` (1Lbb's background, one patch scaled per point)."""
    from faasctl.pallets.load import load_pallet

    base = load_pallet(SOURCE).patches[BASE_PATCH].operations
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SOURCE / "BkgOnly.json.gz", folder / "BkgOnly.json.gz")
    side = math.ceil(math.sqrt(n))
    for i in range(n):
        factor = 0.25 + 2.0 * i / n  # from weak (no exclusion) to strong
        text = json.dumps(_scaled(base, factor), separators=(",", ":"))
        with gzip.open(folder / f"patch.pt_{i // side}_{i % side}.json.gz", "wt", compresslevel=1) as fh:
            fh.write(text)
    return folder


# --- the fit replaced ------------------------------------------------------------------------


def fake_fit(task: dict[str, Any]) -> dict[str, Any]:
    """A task function that answers at once, with `faasctl.scan.worker.fit_patch`'s background handling."""
    from faasctl.scan import worker

    started = time.time()
    patch = task["patch"]
    record = {"patch": patch["name"], "values": list(patch["values"]), "worker": worker.worker_id(), "backend": "noop"}
    if worker._background(task["digest"], task.get("background")) is None:
        return {**record, "status": worker.NEED_BACKGROUND}
    cls = 0.5 / (1.0 + len(patch["operations"]) + sum(patch["values"]))
    return {**record, "status": "ok", "cls_obs": cls, "cls_exp": [cls] * 5, "fit_time": 0.0,
            "timing": {"started": started, "finished": time.time()}}


# --- one run, in its own process ---------------------------------------------------------------


def _write_bytes() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return -1


def run_one(pallet: Path, out: Path, workers: int, noop: bool) -> dict[str, Any]:
    """``faasctl fit`` in this process; its wall time, peak RSS and bytes written."""
    from faasctl.cli.main import app

    if noop:
        from faasctl.scan.client import FitClient

        FitClient.__init__.__kwdefaults__["function"] = fake_fit  # type: ignore[index]
    args = ["fit", str(pallet), "--out", str(out), "--workers", str(workers), "--no-plot"]
    written = _write_bytes()
    start = time.perf_counter()
    # standalone_mode=False: click returns a typer.Exit's status (an error's, too) instead of exiting
    status = app(args, standalone_mode=False)
    if status not in (0, None):
        raise SystemExit(status)
    wall = time.perf_counter() - start
    return {"wall": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "store_bytes": _write_bytes() - written}


def measure(n: int, pallet: Path, workers: int, noop: bool) -> dict[str, Any]:
    """Run `run_one` in a fresh interpreter, then read its results for the fit times."""
    from faasctl.scan.results import load_results

    with tempfile.TemporaryDirectory(prefix="faasctl-scale-out-", dir=pallet.parent) as tmp:
        out = Path(tmp) / "results"
        log = Path(tmp) / "fit.log"
        cmd = [sys.executable, __file__, "--one", str(pallet), "--out", str(out), "--workers", str(workers)]
        cmd += ["--noop"] if noop else []
        with log.open("w") as fh:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True, env={**os.environ, "COLUMNS": "120"})
        if done.returncode != 0:
            raise SystemExit(f"N={n}: the scan failed (exit {done.returncode}):\n{log.read_text()[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        results = list(load_results(out).values())
    fits = sum(r.fit_time or 0.0 for r in results)
    received = sorted(r.timing.received for r in results if r.timing and r.timing.received)
    # between the first and the last result, against the fits that did not compile (those start the scan)
    plain = [r.fit_time for r in results if r.fit_time is not None and not (r.timing and r.timing.compiled)]
    steady = math.nan
    if len(received) > 1 and plain:
        steady = (received[-1] - received[0]) / (len(received) - 1) - sum(plain) / len(plain) / workers
    fitted = sum(r.ok or r.status == "no_sensitivity" for r in results)
    return {
        "n": n, "fitted": fitted, "failed": sum(r.failed for r in results), **row,
        "per_patch": row["wall"] / n, "fit_per_patch": fits / n,
        "orch_per_patch": (row["wall"] - fits / workers) / n, "steady_orch_per_patch": steady,
    }


def _recorded(out: Path) -> int:
    """How many results ``out``'s database holds now (0 before it exists)."""
    import sqlite3

    db = out / "results.sqlite"
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as con:
            return int(con.execute("SELECT count(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # being created this instant
        return 0


def interrupt_and_resume(n: int, pallet: Path, workers: int, noop: bool) -> dict[str, Any]:
    """SIGINT to a scan of ``pallet`` once half its results are recorded, then the same scan again.

    Raises SystemExit naming what was lost or refitted.
    """
    import signal

    from faasctl.scan.results import load_results

    with tempfile.TemporaryDirectory(prefix="faasctl-scale-out-", dir=pallet.parent) as tmp:
        out = Path(tmp) / "results"
        cmd = [sys.executable, __file__, "--one", str(pallet), "--out", str(out), "--workers", str(workers)]
        cmd += ["--noop"] if noop else []
        env = {**os.environ, "COLUMNS": "120"}
        with (Path(tmp) / "first.log").open("w") as log:
            first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
            while first.poll() is None and _recorded(out) < n // 2:
                time.sleep(0.05)
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=600)
        if first.returncode != 130:
            raise SystemExit(f"N={n}: the interrupted scan exited {first.returncode}, not 130 "
                             f"(log: {(Path(tmp) / 'first.log').read_text()[-2000:]})")
        kept = load_results(out)
        if not 0 < len(kept) < n:
            raise SystemExit(f"N={n}: {len(kept)} results after the interrupt; nothing to resume")

        start, resumed_at = time.perf_counter(), time.time()
        with (Path(tmp) / "second.log").open("w") as log:
            second = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        wall = time.perf_counter() - start
        if second.returncode != 0:
            raise SystemExit(f"N={n}: the resumed scan exited {second.returncode}: {(Path(tmp) / 'second.log').read_text()[-2000:]}")
        final = load_results(out)
        changed = [name for name, r in kept.items() if final.get(name) != r]
        refitted = [name for name, r in final.items()
                    if name in kept and r.timing and r.timing.received and r.timing.received >= resumed_at]
        new = [name for name in final if name not in kept]
        problems = []
        if len(final) != n:
            problems.append(f"{n - len(final)} patches missing after the resume")
        if changed or refitted:
            problems.append(f"{len(set(changed) | set(refitted))} results recorded before the interrupt were fitted "
                            f"again or changed (e.g. {sorted(set(changed) | set(refitted))[:3]})")
        if problems:
            raise SystemExit(f"N={n}: " + "; ".join(problems))
    return {"n": n, "recorded_at_interrupt": len(kept), "resumed": len(new), "resume_wall": wall}


def _table(rows: list[dict[str, Any]]) -> str:
    head = f"{'N':>7} {'wall s':>8} {'per patch ms':>13} {'fit ms':>7} {'orch/patch ms':>14} {'steady ms':>10} {'RSS MB':>7} {'store MB':>9} {'failed':>6}"
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['n']:>7} {r['wall']:>8.1f} {1e3 * r['per_patch']:>13.2f} {1e3 * r['fit_per_patch']:>7.1f} "
            f"{1e3 * r['orch_per_patch']:>14.2f} {1e3 * r['steady_orch_per_patch']:>10.2f} {r['rss_mb']:>7.0f} "
            f"{r['store_bytes'] / 1e6:>9.2f} {r['failed']:>6}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--big", action="store_true", help="add N = 100000")
    parser.add_argument("--noop", action="store_true", help="replace the fit by a task that answers at once")
    parser.add_argument("--interrupt", action="store_true",
                        help="per N: SIGINT half-way, then resume; check nothing is lost or fitted twice")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tmp", type=Path, default=None, help="where to write the pallets (default: the system's temp folder)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            row = run_one(args.one, args.out, args.workers, args.noop)
        print(json.dumps(row))
        return 0
    sizes = sorted(set(args.sizes + ([100_000] if args.big else [])))
    rows = []
    with tempfile.TemporaryDirectory(prefix="faasctl-scale-", dir=args.tmp) as tmp:
        for n in sizes:
            start = time.perf_counter()
            pallet = generate(n, Path(tmp) / f"pallet-{n}")
            print(f"N={n}: generated in {time.perf_counter() - start:.1f} s; fitting …", file=sys.stderr, flush=True)
            if args.interrupt:
                row = interrupt_and_resume(n, pallet, args.workers, args.noop)
                print(f"N={n}: interrupted with {row['recorded_at_interrupt']} results recorded; the resumed run "
                      f"fitted the other {row['resumed']} in {row['resume_wall']:.1f} s, refitted none, lost none",
                      flush=True)
                rows.append(row)
            else:
                rows.append(measure(n, pallet, args.workers, args.noop))
                print(_table(rows[-1:]).splitlines()[1], file=sys.stderr, flush=True)
            shutil.rmtree(pallet)
    if args.interrupt:
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return 0
    mode = "no-op fits" if args.noop else "jax fits"
    print(f"faasctl fit, local engine, {args.workers} workers, {mode}:")
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
