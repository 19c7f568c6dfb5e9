"""The compiled jax backend against plain pyhf (the numpy reference backend).

Reference values are computed here with pyhf, never typed in. The engine runs with
``fallback=False`` so that a patch it cannot fit fails the test instead of quietly being
computed by pyhf.
"""

from __future__ import annotations

import collections
import copy
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pyhf  # noqa: E402

from conftest import SHARED_PALLETS, assert_agrees, pyhf_reference, require  # noqa: E402
from faasctl.backends import get_backend  # noqa: E402
from faasctl.backends import histfactory  # noqa: E402
from faasctl.backends import jax as jax_backend  # noqa: E402
from faasctl.backends.histfactory import BackgroundCache, UnsupportedModel, build_arrays  # noqa: E402
from faasctl.pallets import Patch, apply_patch, load_pallet, workspace_digest  # noqa: E402
from faasctl.scan import worker  # noqa: E402
from faasctl.study import MODIFIER_SETTINGS, QMU_A_MIN, agrees, no_sensitivity, pyhf_hypotest  # noqa: E402
from weak_signal import SIGNALS, weak_signal_pallet  # noqa: E402

@pytest.fixture(scope="module")
def engine():
    return jax_backend.JaxBackend(fallback=False)


@pytest.fixture(scope="module")
def example(request):
    from conftest import EXAMPLE

    return load_pallet(EXAMPLE)


def synthetic_workspace():
    """A small workspace using every modifier type pyhf knows, with the awkward cases:
    a staterror bin without uncertainty (fixed), a shapesys bin without uncertainty
    (fixed), a shapefactor shared by two channels, histosys and normsys sharing a name,
    a fixed parameter and user-configured bounds, inits and lumi."""
    def sample(name, data, modifiers):
        return {"name": name, "data": data, "modifiers": modifiers}

    sr = [
        sample("signal", [4.0, 8.0, 3.0], [
            {"name": "mu", "type": "normfactor", "data": None},
            {"name": "sig_xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.88}},
            {"name": "lumi", "type": "lumi", "data": None},
            {"name": "staterror_SR", "type": "staterror", "data": [0.5, 0.7, 0.4]},
        ]),
        sample("bkg1", [30.0, 22.0, 9.0], [
            {"name": "jes", "type": "histosys", "data": {"hi_data": [33.0, 23.0, 10.5], "lo_data": [28.0, 21.5, 7.9]}},
            {"name": "jes", "type": "normsys", "data": {"hi": 1.04, "lo": 0.97}},
            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.2, "lo": 0.85}},
            {"name": "mu_b", "type": "normfactor", "data": None},
            {"name": "lumi", "type": "lumi", "data": None},
            {"name": "staterror_SR", "type": "staterror", "data": [1.5, 1.2, 0.0]},
            {"name": "bkg1_shape", "type": "shapesys", "data": [3.0, 0.0, 1.5]},
        ]),
        sample("bkg2", [12.0, 10.0, 6.0], [
            {"name": "sf", "type": "shapefactor", "data": None},
            {"name": "jes", "type": "histosys", "data": {"hi_data": [12.5, 10.4, 5.5], "lo_data": [11.0, 9.8, 6.3]}},
            {"name": "fixed_syst", "type": "normsys", "data": {"hi": 1.3, "lo": 0.8}},
        ]),
    ]
    cr = [
        sample("bkg1", [80.0, 60.0, 41.0], [
            {"name": "mu_b", "type": "normfactor", "data": None},
            {"name": "jes", "type": "histosys", "data": {"hi_data": [84.0, 61.0, 44.0], "lo_data": [77.0, 58.0, 40.0]}},
            {"name": "lumi", "type": "lumi", "data": None},
            {"name": "staterror_CR", "type": "staterror", "data": [2.0, 0.0, 1.0]},
        ]),
        sample("bkg2", [50.0, 45.0, 30.0], [
            {"name": "sf", "type": "shapefactor", "data": None},
            {"name": "staterror_CR", "type": "staterror", "data": [1.0, 0.0, 2.0]},
        ]),
    ]
    return {
        "channels": [{"name": "SR", "samples": sr}, {"name": "CR", "samples": cr}],
        "observations": [{"name": "SR", "data": [49.0, 38.0, 16.0]}, {"name": "CR", "data": [128.0, 108.0, 69.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.9, 1.1]], "inits": [1.0]},
            {"name": "mu_b", "bounds": [[0.0, 4.0]], "inits": [1.2]},
            {"name": "mu", "bounds": [[0.0, 8.0]]},
            {"name": "fixed_syst", "fixed": True, "inits": [0.3]},
        ]}}],
        "version": "1.0.0",
    }


def pyhf_model(spec):
    workspace = pyhf.Workspace(spec)
    model = workspace.model(modifier_settings=MODIFIER_SETTINGS)
    return model, workspace.data(model)


def test_arrays_follow_pyhf_parameters_and_likelihood():
    """Parameter order, inits, bounds, fixed flags, expected data and NLL equal pyhf's."""
    spec = synthetic_workspace()
    model, data = pyhf_model(spec)
    arrays = build_arrays(spec)
    n = model.config.npars
    assert arrays.structure.par_names == model.config.par_names
    assert arrays.init[:n].tolist() == pytest.approx(model.config.suggested_init())
    assert np.column_stack([arrays.lower, arrays.upper])[:n].tolist() == [list(b) for b in model.config.suggested_bounds()]
    assert arrays.fixed[:n].tolist() == model.config.suggested_fixed()
    assert arrays.fixed[n:].all()  # padding
    rng = np.random.default_rng(7)
    lower, upper = np.array(model.config.suggested_bounds()).T
    with jax.enable_x64(True):
        prepared = jax_backend.prepare(arrays)
        for scale in (0.0, 0.3, 0.8, 1.6):
            pars = np.clip(np.array(model.config.suggested_init()) + rng.normal(0, scale, n), lower + 1e-3, upper)
            theta = jnp.asarray(np.concatenate([pars, arrays.init[n:]]))
            want = -float(model.logpdf(pars, data)[0])
            got = float(jax_backend._nll(theta, prepared, jnp.asarray(arrays.data), jnp.asarray(arrays.aux)))
            assert got == pytest.approx(want, rel=1e-12, abs=1e-9)
            expected = np.asarray(jax_backend._expected(theta, prepared))
            assert expected == pytest.approx(np.asarray(model.expected_actualdata(pars)), rel=1e-12)


def test_derivatives_equal_autodiff():
    """The structured gradient and Hessian equal jax's autodiff ones, also with the POI at 0."""
    arrays = build_arrays(synthetic_workspace())
    rng = np.random.default_rng(3)
    auto_grad = jax.jit(jax.grad(jax_backend._nll))
    auto_hess = jax.jit(jax.hessian(jax_backend._nll))
    with jax.enable_x64(True):
        m = jax_backend.prepare(arrays)
        data, aux = jnp.asarray(arrays.data), jnp.asarray(arrays.aux)
        for poi in (0.0, 0.7, 2.5):
            x = np.clip(arrays.init + rng.normal(0, 0.4, arrays.init.size), arrays.lower, arrays.upper)
            x[arrays.poi] = poi
            x = jnp.asarray(x)
            value, grad, hess = jax_backend._jit_derivatives(x, m, data, aux)
            assert float(value) == pytest.approx(float(jax_backend._nll(x, m, data, aux)), rel=1e-13)
            np.testing.assert_allclose(grad, auto_grad(x, m, data, aux), rtol=1e-9, atol=1e-9)
            auto = np.asarray(auto_hess(x, m, data, aux))
            if poi == 0.0:  # the POI row is approximate at a zero factor (it only steers)
                keep = np.arange(auto.shape[0]) != arrays.poi
                auto, hess = auto[np.ix_(keep, keep)], np.asarray(hess)[np.ix_(keep, keep)]
            np.testing.assert_allclose(hess, auto, rtol=1e-9, atol=1e-8)


def test_synthetic_workspace_matches_pyhf(engine):
    spec = synthetic_workspace()
    patch = Patch("signal_x2", (0.0,), [{"op": "replace", "path": "/channels/0/samples/0/data", "value": [8.0, 16.0, 6.0]}])
    for operations in ([], patch.operations):
        p = Patch("p", (0.0,), operations)
        got = engine.hypotest(spec, workspace_digest(spec), p)
        assert_agrees(got, pyhf_hypotest(apply_patch(spec, p)), "synthetic")


def test_example_pallet_matches_pyhf_on_every_patch(engine, example):
    for patch in example.patches.values():
        got = engine.hypotest(example.background, example.digest, patch)
        assert all(isinstance(v, float) for v in [got.cls_obs, *got.cls_exp])
        assert (got.backend, got.fallback, got.no_sensitivity) == ("jax", None, None)
        assert_agrees(got, pyhf_reference(example, patch.name), patch.name)


def test_compiled_once_for_all_patches(engine, example):
    """After the first patch, further patches trace (compile) nothing new."""
    patches = list(example.patches.values())
    engine.hypotest(example.background, example.digest, patches[0])
    before = dict(jax_backend.TRACES), dict(jax_backend.LOADS)
    for patch in patches[1:]:
        engine.hypotest(example.background, example.digest, patch)
    assert (dict(jax_backend.TRACES), dict(jax_backend.LOADS)) == before
    assert before[0].get("hypotest", 0) + before[1].get("hypotest", 0) >= 1, "compiled, or loaded compiled"


def test_x64_does_not_leak(engine, example):
    engine.hypotest(example.background, example.digest, next(iter(example.patches.values())))
    assert not jax.config.jax_enable_x64
    assert jnp.zeros(1).dtype == jnp.float32


def test_patch_is_applied_without_copying_the_background(example):
    background_before = copy.deepcopy(example.background)
    for patch in example.patches.values():
        spec = apply_patch(example.background, patch, shared=True)
        assert spec == apply_patch(example.background, patch)
        # untouched samples are the background's own objects
        assert spec["channels"][0]["samples"][0] is example.background["channels"][0]["samples"][0]
    assert example.background == background_before


def test_background_samples_are_parsed_once(example):
    cache = BackgroundCache(example.background)
    first, second = list(example.patches.values())[:2]
    a = build_arrays(apply_patch(example.background, first, shared=True), cache)
    sample = example.background["channels"][0]["samples"][0]
    block = cache.block(sample, len(sample["data"]), "here")
    build_arrays(apply_patch(example.background, second, shared=True), cache)
    assert cache.block(sample, len(sample["data"]), "here") is block
    assert a.shape == build_arrays(example.workspace_spec(second)).shape


def poi_bounds_exclude_one():
    spec = synthetic_workspace()
    spec["measurements"][0]["config"]["parameters"][2].update(bounds=[[0.0, 0.5]], inits=[0.2])
    return spec


def test_unsupported_model_raises_without_fallback(engine):
    spec = poi_bounds_exclude_one()
    with pytest.raises(UnsupportedModel, match="bounds do not contain 0 and 1"):
        engine.hypotest(spec, "digest", Patch("p", (), []))


def test_unsupported_model_falls_back_to_pyhf(caplog):
    """With fallback (the default) the patch goes to plain pyhf, which rejects it the same way."""
    spec = poi_bounds_exclude_one()
    fallback = jax_backend.JaxBackend()
    with pytest.raises(ValueError, match="outside of its bounds"):
        fallback.hypotest(spec, "digest", Patch("p", (), []))
    assert fallback.stats["fallbacks"] == 1
    assert "computing it with plain pyhf" in caplog.text


def test_fallback_is_recorded_in_the_result(example, monkeypatch):
    """A patch the engine hands to pyhf says so in its record: backend numpy, and the reason.

    A fit that does not converge cannot be made to order on a small model, so the engine's
    fit raises `FitNotConverged` here in its stead (everything after it is real).
    """
    def not_converged(self, arrays):
        raise jax_backend.FitNotConverged("Newton fit did not converge: data_free (status 0)")

    monkeypatch.setattr(jax_backend.JaxBackend, "fit_arrays", not_converged)
    monkeypatch.setattr(worker, "_BACKGROUNDS", collections.OrderedDict())
    patch = example.patches["grid_500_100"]
    task = {"digest": example.digest, "background": example.background, "backend": "jax",
            "patch": {"name": patch.name, "values": list(patch.values), "operations": patch.operations}}
    record = worker.fit_patch(task)
    assert record["status"] == "ok" and record["backend"] == "numpy"
    assert record["fallback"] == "FitNotConverged: Newton fit did not converge: data_free (status 0)"
    obs, exp = pyhf_hypotest(example.workspace_spec(patch))
    assert (record["cls_obs"], record["cls_exp"]) == (obs, exp)


def test_engine_bug_raises_instead_of_falling_back(example, monkeypatch):
    """An exception while reading a workspace that pyhf accepts is a bug: it is not hidden by a fallback."""
    def broken(sample, nbins, where):
        raise IndexError("a bug in the engine")

    monkeypatch.setattr(histfactory, "parse_sample", broken)
    engine = jax_backend.JaxBackend()  # fallback on, and no parsed samples cached yet
    with pytest.raises(IndexError, match="a bug in the engine"):
        engine.hypotest(example.background, example.digest, next(iter(example.patches.values())))
    assert engine.stats["fallbacks"] == 0


def test_workspace_pyhf_rejects_is_left_to_pyhf(engine):
    """A patched workspace that breaks pyhf's schema is unsupported (and pyhf names the problem)."""
    spec = synthetic_workspace()
    broken = Patch("no_modifiers", (), [{"op": "remove", "path": "/channels/0/samples/1/modifiers"}])
    with pytest.raises(UnsupportedModel, match="pyhf rejects the workspace .InvalidSpecification"):
        engine.hypotest(spec, workspace_digest(spec), broken)
    with pytest.raises(pyhf.exceptions.InvalidSpecification):
        jax_backend.JaxBackend().hypotest(spec, workspace_digest(spec), broken)


def with_signal_shape(patch):
    """``patch`` with a histosys added to the signal: another model structure, in which the
    background's normfactors and normsys sit one row further down."""
    def add(op):
        data = op["value"]["data"]
        shape = {"name": "sig_shape", "type": "histosys",
                 "data": {"hi_data": [v * 1.05 for v in data], "lo_data": [v * 0.95 for v in data]}}
        return {**op, "value": {**op["value"], "modifiers": [*op["value"]["modifiers"], shape]}}

    return Patch(f"{patch.name}_shape", patch.values, [add(op) for op in patch.operations])


def test_cached_arrays_equal_fresh_ones_across_structures(example):
    """Caches keyed by identity stay right while objects come and go: arrays built through one
    background cache, for patches of two model structures in turn, equal those built from
    scratch. (With rows cached by the id of a structure that was not kept, a later structure
    at the same address got the earlier one's rows.)"""
    cache = BackgroundCache(example.background)
    patches = [q for p in example.patches.values() for q in (p, with_signal_shape(p))]
    assert len({build_arrays(apply_patch(example.background, p)).structure.key for p in patches}) == 2
    for patch in patches * 3:
        got = build_arrays(apply_patch(example.background, patch, shared=True), cache)
        want = build_arrays(apply_patch(example.background, patch))
        assert got.structure.par_names == want.structure.par_names
        for name in ("nom", "hs_up", "hs_dn", "ns_hi", "ns_lo", "lin", "init", "lower", "upper", "fixed", "aux", "data"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=f"{patch.name}: {name}")
        del got, want  # let their structures go, as a worker's patches do


def test_other_interpolation_codes_are_refused():
    from faasctl.backends.histfactory import check_settings

    with pytest.raises(UnsupportedModel, match="code1"):
        check_settings({"normsys": {"interpcode": "code1"}})


def test_auto_prefers_jax():
    assert get_backend("auto").name == "jax"


def test_cls_formula_matches_pyhf_calculator():
    """`cls_from_teststats` is pyhf's asymptotic calculator, branch for branch (its normal CDF
    uses the C library's erf rather than scipy's: equal to ~1e-15, 1e-13 in the far tails)."""
    from pyhf.infer.calculators import AsymptoticTestStatDistribution

    pyhf.set_backend("numpy")
    for qmu, qmu_a in [(0.0, 2.0), (1.3, 4.1), (9.0, 4.0), (25.0, 30.0), (0.5, 0.3)]:
        sqrtq, sqrtq_a = np.sqrt(qmu), np.sqrt(qmu_a)
        stat = sqrtq - sqrtq_a if sqrtq <= sqrtq_a else (qmu - qmu_a) / (2 * sqrtq_a)
        sb, b = AsymptoticTestStatDistribution(-sqrtq_a), AsymptoticTestStatDistribution(0.0)
        want_obs = sb.pvalue(stat) / b.pvalue(stat)
        want_exp = [sb.pvalue(b.expected_value(n)) / b.pvalue(b.expected_value(n)) for n in (2, 1, 0, -1, -2)]
        obs, exp = jax_backend.cls_from_teststats(qmu, qmu_a)
        assert obs == pytest.approx(float(want_obs), rel=1e-13)
        assert exp == pytest.approx([float(v) for v in want_exp], rel=1e-13)
    assert np.isnan(jax_backend.cls_from_teststats(4.0, 0.0)[0])  # 0/0, as in pyhf


# --- the real pallets ----------------------------------------------------------------------

#: 1Lbb patches spanning the scan: CLs near 0.05, CLs of 1e-5, deep in the allowed region,
#: and two whose fit with the POI at 1 has two local minima (pyhf's is the higher one for
#: 600_100 and the lower one for 550_0; see docs/performance.md).
SAMPLE_1LBB = ["C1N2_Wh_hbb_250_100", "C1N2_Wh_hbb_175_0", "C1N2_Wh_hbb_1000_0", "C1N2_Wh_hbb_600_100",
               "C1N2_Wh_hbb_550_0"]
#: staus patches: two spread over the grid and one with two local minima in an Asimov fit.
SAMPLE_STAUS = ["DS_100_1_Staus", "DS_320_120_Staus", "DS_160_1_Staus"]


@pytest.mark.pallets
@pytest.mark.slow
def test_1lbb_sample_matches_pyhf(pallet_1lbb):
    pallet = load_pallet(pallet_1lbb)
    engine = jax_backend.JaxBackend(fallback=False)
    for name in SAMPLE_1LBB:
        got = engine.hypotest(pallet.background, pallet.digest, pallet.patches[name])
        assert_agrees(got, pyhf_reference(pallet, name), name)


@pytest.mark.pallets
@pytest.mark.slow
def test_staus_sample_matches_pyhf():
    path = SHARED_PALLETS / "staus"
    require(path.exists(), f"the staus pallet at {path}")
    pallet = load_pallet(path)
    engine = jax_backend.JaxBackend(fallback=False)
    for name in SAMPLE_STAUS:
        got = engine.hypotest(pallet.background, pallet.digest, pallet.patches[name])
        assert_agrees(got, pyhf_reference(pallet, name), name)


# --- tests without sensitivity -------------------------------------------------------------


def test_no_sensitivity_definition():
    reason = "no sensitivity: q_mu,A <= 0.002 (mu = 1 barely changes the expected data)"
    band = [0.01, 0.05, 0.2, 0.5, 0.8]
    assert no_sensitivity(QMU_A_MIN, 0.3, band) == reason
    assert no_sensitivity(float("nan"), 0.3, band) == reason
    assert no_sensitivity(QMU_A_MIN * 1.01, 0.3, band) is None
    assert no_sensitivity(4.0, float("nan"), [*band[:4], float("inf")]) == (
        "no sensitivity: CLs_obs, CLs_exp +2 sigma not finite (the asymptotic formula gives 0/0)"
    )


@pytest.fixture(scope="module")
def weak(tmp_path_factory):
    return load_pallet(weak_signal_pallet(tmp_path_factory.mktemp("weak")))


def test_weak_signals_cover_both_directions(weak):
    """The fixture holds what the status is for: a patch where pyhf's CLs is not finite and the
    engine's is (q_mu,A = 0 in pyhf, 3.5e-8 in the engine), and one the other way round."""
    numpy, jax = get_backend("numpy"), jax_backend.JaxBackend(fallback=False)
    raw = {b.name: {n: b.hypotest(weak.background, weak.digest, p) for n, p in weak.patches.items()} for b in (numpy, jax)}
    assert raw["numpy"]["small"].qmu_a == 0.0 and math.isnan(raw["numpy"]["small"].cls_obs)
    assert math.isfinite(raw["jax"]["small"].cls_obs)
    assert math.isnan(raw["jax"]["tiny"].cls_obs) and math.isfinite(raw["numpy"]["tiny"].cls_obs)
    # "above" is resolved by both, just above the threshold
    assert QMU_A_MIN < raw["numpy"]["above"].qmu_a < 2 * QMU_A_MIN
    assert raw["jax"]["above"].qmu_a == pytest.approx(raw["numpy"]["above"].qmu_a, rel=1e-3)


def test_weak_signals_get_the_same_status_from_every_backend(weak, monkeypatch):
    """Through the worker, as a scan runs them: the same status and reason from numpy and jax,
    and equal CLs where there are any; no CLs at all for a test without sensitivity."""
    monkeypatch.setattr(worker, "_BACKGROUNDS", collections.OrderedDict())

    def run(name, backend):
        patch = weak.patches[name]
        return worker.fit_patch({"digest": weak.digest, "background": weak.background, "backend": backend,
                                 "patch": {"name": name, "values": list(patch.values), "operations": patch.operations}})

    for name, (_, sensitive) in SIGNALS.items():
        numpy, jax = run(name, "numpy"), run(name, "jax")
        assert (jax["backend"], jax["fallback"]) == ("jax", None), jax
        assert (numpy["backend"], numpy["fallback"]) == ("numpy", None), numpy
        assert numpy["status"] == jax["status"] == ("ok" if sensitive else "no_sensitivity"), (name, numpy, jax)
        assert numpy.get("error") == jax.get("error"), name
        if sensitive:
            assert agrees([jax["cls_obs"], *jax["cls_exp"]], [numpy["cls_obs"], *numpy["cls_exp"]]), (name, numpy, jax)
        else:
            assert "q_mu,A" in jax["error"] and "cls_obs" not in jax and "cls_exp" not in numpy


RUNTIME_THREADS = """
import json, os
from faasctl.backends import get_backend
import jax, jax.numpy as jnp
get_backend("jax")
jax.jit(lambda x: x @ x)(jnp.ones((256, 256))).block_until_ready()
names, cpus = [], set()
for task in os.listdir("/proc/self/task"):
    names.append(open(f"/proc/self/task/{task}/comm").read().strip())
    cpus.add(frozenset(os.sched_getaffinity(int(task))))
print(json.dumps({"pool": names.count("tf_XLAEigen"), "masks": [sorted(m) for m in cpus],
                  "allowed": sorted(os.sched_getaffinity(0))}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2 or
                    not os.path.isdir("/proc/self/task"), reason="needs Linux and two CPUs")
@pytest.mark.parametrize("threads", [None, "1"])
def test_worker_runtime_has_one_xla_thread_per_worker(threads):
    """XLA's CPU pool is as large as ``FAASCTL_XLA_CPU_THREADS`` (a worker: one), and every thread
    keeps all the process's CPUs; without the variable XLA sizes it by the CPUs, as it always did."""
    env = {k: v for k, v in os.environ.items() if k != jax_backend.CPU_THREADS_ENV}
    if threads:
        env[jax_backend.CPU_THREADS_ENV] = threads
    out = subprocess.run([sys.executable, "-c", RUNTIME_THREADS], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    if threads:
        assert seen["pool"] == 1
    else:
        assert seen["pool"] == len(seen["allowed"])  # XLA's own choice: the test's control
    assert seen["masks"] == [seen["allowed"]]


# --- compiled engines kept between processes (`engine_cache_dir`) ------------------------------

ENGINE_PROBE = """
import json, sys
from faasctl.scan import worker
from faasctl.backends import jax as jax_backend
from faasctl.pallets.load import load_pallet
pallet = load_pallet(sys.argv[1])
patch = pallet.patches["grid_500_0"]
record = worker.fit_patch({"digest": pallet.digest, "background": pallet.background, "backend": "jax",
                           "patch": {"name": patch.name, "values": list(patch.values), "operations": patch.operations}})
seen = {"linalg": "scipy.linalg" in sys.modules}  # the engine's LAPACK came without all of scipy.linalg
import scipy.linalg, scipy.linalg.cython_lapack  # ... and scipy.linalg imports as ever afterwards
assert scipy.linalg.cython_lapack.__pyx_capi__ and scipy.linalg.cho_solve(scipy.linalg.cho_factor([[4.0]]), [2.0]) == 0.5
folder = jax_backend.engine_cache_dir()
print(json.dumps({**seen, "status": record["status"], "cls_obs": record.get("cls_obs"), "compiled": record["timing"]["compiled"],
                  "traces": jax_backend.TRACES["hypotest"], "loads": jax_backend.LOADS["hypotest"],
                  "files": sorted(p.name for p in folder.iterdir()) if folder and folder.is_dir() else None}))
"""


def _engine_probe(example_pallet, **env):
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    out = subprocess.run([sys.executable, "-c", ENGINE_PROBE, str(example_pallet)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_engine_cache_folder_is_keyed_by_versions(monkeypatch, tmp_path):
    from importlib import metadata

    monkeypatch.setenv("FAASCTL_JAX_CACHE", str(tmp_path))
    versions = f"jax-{metadata.version('jax')}-jaxlib-{metadata.version('jaxlib')}"
    assert jax_backend.engine_cache_dir() == tmp_path / versions
    monkeypatch.delenv("FAASCTL_JAX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jax_backend.engine_cache_dir() == tmp_path / "xdg" / "faasctl" / "jax" / versions
    for off in ("0", "off", ""):
        monkeypatch.setenv("FAASCTL_JAX_CACHE", off)
        assert jax_backend.engine_cache_dir() is None
    monkeypatch.delenv("FAASCTL_JAX_CACHE")
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax"))
    try:
        assert jax_backend.engine_cache_dir() is None, "the user's own JAX cache is left to JAX"
    finally:
        jax.config.update("jax_compilation_cache_dir", None)


def test_engine_is_compiled_once_then_loaded_compiled(example_pallet, tmp_path):
    """A process compiles the engine and leaves it in the cache folder (removing the engines no one
    used for `UNUSED_DAYS`); the next loads it compiled (no tracing, no lowering) and computes the
    same CLs; a damaged file is compiled again and replaced. No process imports all of
    scipy.linalg for the engine's LAPACK."""
    env = {"FAASCTL_JAX_CACHE": str(tmp_path), "JAX_COMPILATION_CACHE_DIR": None}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAASCTL_JAX_CACHE", str(tmp_path))
        folder = jax_backend.engine_cache_dir()
    folder.mkdir(parents=True)
    unused, recent = folder / "hypotest-unused.bin", folder / "hypotest-recent.bin"
    for old, days in ((unused, jax_backend.UNUSED_DAYS + 1), (recent, jax_backend.UNUSED_DAYS - 1)):
        old.write_bytes(b"an engine of another release")
        os.utime(old, (time.time() - days * 86400,) * 2)
    first = _engine_probe(example_pallet, **env)
    assert (first["status"], first["compiled"], first["traces"], first["loads"]) == ("ok", True, 1, 0)
    assert recent.exists() and not unused.exists(), "engines unused for UNUSED_DAYS are removed"
    recent.unlink()
    [kept] = [name for name in first["files"] if name != recent.name]
    assert kept.startswith("hypotest-") and kept.endswith(".bin")
    second = _engine_probe(example_pallet, **env)
    assert (second["status"], second["compiled"], second["traces"], second["loads"]) == ("ok", True, 0, 1)
    assert second["cls_obs"] == first["cls_obs"] and second["files"] == [kept]
    (folder / kept).write_bytes((folder / kept).read_bytes()[:1000])
    damaged = _engine_probe(example_pallet, **env)
    assert (damaged["traces"], damaged["loads"], damaged["cls_obs"]) == (1, 0, first["cls_obs"])
    assert _engine_probe(example_pallet, **env)["loads"] == 1, "the damaged file was replaced"
    assert not any(p["linalg"] for p in (first, second, damaged))


PRELOAD_PROBE = """
import json, sys
from faasctl.scan import worker
from faasctl.backends import jax as jax_backend
worker.warm_up("jax")  # what a local worker does before its first task
loaded = jax_backend.LOADS["hypotest"]
""" + ENGINE_PROBE.replace("import json, sys\n", "").replace(
    'print(json.dumps({', 'print(json.dumps({"preloaded": loaded, ')


def test_local_worker_preloads_the_engine_used_last(example_pallet, tmp_path):
    """A worker's warm-up loads the newest engine on disk when this code would have made it (its name
    is its key): the first task then fits with it, loading nothing; a file of another key is not loaded."""
    env = {**os.environ, "FAASCTL_JAX_CACHE": str(tmp_path)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def probe() -> dict:
        out = subprocess.run([sys.executable, "-c", PRELOAD_PROBE, str(example_pallet)], capture_output=True,
                             text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    cold = probe()
    assert (cold["preloaded"], cold["traces"], cold["compiled"]) == (0, 1, True)
    warm = probe()
    assert (warm["preloaded"], warm["loads"], warm["traces"], warm["compiled"]) == (1, 1, 0, False)
    assert warm["cls_obs"] == cold["cls_obs"]
    [stored] = tmp_path.glob("*/hypotest-*.bin")
    stored.rename(stored.with_name("hypotest-of-another-release.bin"))
    foreign = probe()
    assert (foreign["preloaded"], foreign["traces"], foreign["cls_obs"]) == (0, 1, cold["cls_obs"])


def test_engine_cache_is_harmless_when_unusable(example_pallet, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unusable = _engine_probe(example_pallet, FAASCTL_JAX_CACHE=str(blocker), JAX_COMPILATION_CACHE_DIR=None)
    assert (unusable["status"], unusable["compiled"], unusable["traces"], unusable["files"]) == ("ok", True, 1, None)
    off = _engine_probe(example_pallet, FAASCTL_JAX_CACHE="0", JAX_COMPILATION_CACHE_DIR=None)
    assert (off["status"], off["traces"], off["cls_obs"]) == ("ok", 1, unusable["cls_obs"])
