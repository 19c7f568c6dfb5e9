"""Check the jax backend against plain pyhf on every patch of a pallet (default: ATLAS 1Lbb).

The reference is plain pyhf (`faasctl.study.pyhf_hypotest`, ~10 s a 1Lbb patch): the values
committed in tests/data/reference for 1Lbb and staus, else computed and cached in a JSON file
that grows patch by patch, so an interrupted run resumes where it stopped and later runs only
time the jax backend::

    python benchmarks/verify_1lbb.py --reference-only &   # other pallets: ~20 min on one core
    python benchmarks/verify_1lbb.py                      # jax vs the reference

The agreement asked for is the study's (`faasctl.study.agrees`), per patch, for CLs_obs and
each of the five CLs_exp.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PALLET = ROOT.parent / "shared" / "pallets" / "1Lbb"
DEFAULT_CACHE = Path("/tmp/faasctl-reference-1Lbb.json")
COMMITTED = ROOT / "tests" / "data" / "reference"
LABELS = ("CLs_obs", "CLs_exp-2", "CLs_exp-1", "CLs_exp", "CLs_exp+1", "CLs_exp+2")


def _load_cache(path: Path, digest: str) -> dict[str, list[float]]:
    for committed in sorted(COMMITTED.glob("*.json")):  # tests/data/make_references.py
        doc = json.loads(committed.read_text())
        if doc.get("digest") == digest:
            return {n: r["default"] for n, r in doc["patches"].items() if None not in r["default"]}
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    return doc["results"] if doc.get("digest") == digest else {}


def _save_cache(path: Path, digest: str, results: dict[str, list[float]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"digest": digest, "results": results}, indent=1))
    os.replace(tmp, path)


def reference(pallet, names: list[str], cache: Path) -> dict[str, list[float]]:
    """Plain pyhf results for ``names``, computing (and caching) the missing ones."""
    from faasctl.study import pyhf_hypotest

    results = _load_cache(cache, pallet.digest)
    todo = [n for n in names if n not in results]
    for i, name in enumerate(todo, 1):
        start = time.perf_counter()
        cls_obs, cls_exp = pyhf_hypotest(pallet.workspace_spec(pallet.patches[name]))
        results[name] = [cls_obs, *cls_exp]
        _save_cache(cache, pallet.digest, results)
        print(f"reference {i}/{len(todo)} {name}: {time.perf_counter() - start:.1f} s", flush=True)
    return {n: results[n] for n in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pallet", type=Path, default=DEFAULT_PALLET)
    parser.add_argument("--cache", type=Path, default=None, help=f"reference cache (default {DEFAULT_CACHE})")
    parser.add_argument("-n", "--patches", type=int, default=None, help="only the first N patches")
    parser.add_argument("--reference-only", action="store_true", help="fill the reference cache and stop")
    args = parser.parse_args(argv)

    from faasctl.pallets.load import load_pallet

    pallet = load_pallet(args.pallet)
    cache = args.cache or DEFAULT_CACHE.with_name(f"faasctl-reference-{pallet.digest[:12]}.json")
    names = list(pallet.patches)[: args.patches]
    ref = reference(pallet, names, cache)
    if args.reference_only:
        return 0

    from faasctl.backends import get_backend
    from faasctl.study import agrees

    backend = get_backend("jax")
    start = time.perf_counter()
    first = None
    worst_abs = worst_rel = 0.0
    failures = []
    deviations = []  # (abs, rel, name, which)
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        result = backend.hypotest(pallet.background, pallet.digest, pallet.patches[name])
        if first is None:
            first = time.perf_counter() - t0
        got, want = [result.cls_obs, *result.cls_exp], ref[name]
        for which, g, w in zip(LABELS, got, want):
            d = abs(g - w)
            r = d / abs(w) if w else float("inf") if d else 0.0
            worst_abs, worst_rel = max(worst_abs, d), max(worst_rel, min(r, 1e300))
            deviations.append((d, r, name, which, w))
        if not agrees(got, want):
            failures.append((name, got, want))
    total = time.perf_counter() - start
    per_patch = (total - first) / max(1, len(names) - 1)
    print(f"pallet {args.pallet} ({len(names)} patches), reference cache {cache}")
    print(f"jax: first patch (compile) {first:.2f} s, then {per_patch * 1e3:.0f} ms/patch, total {total:.1f} s")
    print(f"max |dCLs| = {worst_abs:.3g}, max relative = {worst_rel:.3g} over CLs_obs and the 5 CLs_exp")
    stats = getattr(backend, "stats", None)
    if stats is not None:
        print(f"backend stats: {stats}")
    print("largest deviations (CLs value: |jax - pyhf|, relative):")
    for d, r, name, which, w in sorted(deviations, reverse=True)[:5]:
        print(f"  {name} {which}: {w:.4g}: {d:.2g}, {r:.2g}")
    print("largest relative deviations:")
    for d, r, name, which, w in sorted(deviations, key=lambda t: t[1], reverse=True)[:3]:
        print(f"  {name} {which}: {w:.4g}: {d:.2g}, {r:.2g}")
    for name, got, want in failures:
        print(f"DISAGREE {name}: jax {got} reference {want}")
    print("OK: every patch agrees" if not failures else f"FAILED: {len(failures)} patches disagree")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
