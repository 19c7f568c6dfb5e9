"""The compiled fit backend: pyhf's CLs hypothesis test, compiled once per model layout.

How one patch is computed:

1. The patch is applied copy-on-write (`faasctl.pallets.apply_patch`, shared: no deep copy of the
   background) and turned into padded dense arrays (`histfactory.build_arrays`): pyhf
   0.7.6's HistFactory semantics (parameter order, inits, bounds, fixed parameters,
   constraints, auxiliary data) with everything patch-specific as array *values*.
2. The arrays go to functions compiled with ``jax.jit`` once per array *shape* (parameters,
   cells, bins, padded so all patches of a pallet normally share one shape) and kept warm
   for the life of the process (`TRACES` counts the compilations); the compiled program is
   kept in the user's cache folder too, and later processes load it compiled (`_engine`,
   `engine_cache_dir`; `LOADS` counts those).
3. The bounded fits of the NLL that pyhf's ``AsymptoticCalculator`` with ``qtilde`` does
   (POI fixed at 0 for the Asimov data; POI at 1 and free on the observed and on the
   Asimov data), all from pyhf's suggested init, in one compiled call (`_hypotest`); the
   free fit to the Asimov data needs no fitting (its minimum is known exactly). Each
   fit is a projected Levenberg-Marquardt method on the exact Hessian in one
   ``lax.while_loop`` (`_fit`): damped steps first follow the descent path from the start,
   then full Newton steps converge quadratically. The gradient and Hessian are exact
   (`_derivatives`): the expected counts are ``(nom + sum_p delta_p) * prod_p g_p`` with
   each entry depending on one parameter, so they follow from the entries' first and
   second derivatives without a dense autodiff Hessian (tests check both against
   ``jax.hessian``).
4. ``qtilde``, CLs and the expected CLs band from the fitted NLL values exactly as pyhf's
   calculator computes them (`cls_from_teststats`).

Fits converge much tighter than pyhf's SLSQP (Newton decrement below 1e-10). CLs agree
with plain pyhf to within 1e-3 relative or 1e-5 absolute on every 1Lbb and staus patch;
docs/performance.md has the figures, and the cases where a likelihood has several local
minima.

Fallback: a patch whose workspace uses something the engine does not implement
(`histfactory.UnsupportedModel`: other interpolation codes, unusual parameter configs, a
workspace that pyhf rejects too, ...) or whose fit does not converge is computed with plain
pyhf (the ``numpy`` reference backend) and a warning is logged; the result says so
(`Hypotest.backend` is ``"numpy"``, `Hypotest.fallback` the reason) and `JaxBackend.stats`
counts such patches. Nothing else falls back: any other exception is a bug of the engine and
propagates. Set ``fallback=False`` to raise `FitNotConverged` / `UnsupportedModel` instead
(the worker then records the patch as failed). A non-converged fit is never returned.

Float64 is switched on only around this module's own tracing and calls
(``jax.enable_x64`` as a context manager), so other JAX code in the process keeps its
default precision.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.machinery
import importlib.util
import logging
import math
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_solve
from jax.scipy.special import gammaln, xlogy

from faasctl.backends.base import Backend, Hypotest, HypotestResult
from faasctl.backends.histfactory import (
    BackgroundCache,
    ModelArrays,
    UnsupportedModel,
    build_arrays,
    check_settings,
)
from faasctl.exceptions import FaasctlError
from faasctl.study import MODIFIER_SETTINGS
from faasctl.pallets.load import Patch
from faasctl.pallets.patching import apply_patch

__all__ = ["JaxBackend", "FitNotConverged", "backend", "TRACES", "LOADS", "cls_from_teststats", "start_runtime",
           "engine_cache_dir", "preload_engine"]

log = logging.getLogger(__name__)

#: Times each compiled function was traced in this process (one per array shape).
TRACES: collections.Counter[str] = collections.Counter()

#: Newton decrement (about twice the NLL distance to the minimum) that ends a fit.
TOLERANCE = 1e-10
#: A fit whose steps can no longer measurably lower the NLL counts as converged when its
#: Newton decrement is below this (the float64 rounding floor of the NLL).
ROUNDING_TOLERANCE = 1e-7
MAX_ITERATIONS = 300
#: A Newton decrement below which an accepted step ends the damping: full Newton steps from there.
NEWTON_ZONE = 1e-3
#: The largest change of any parameter in a fit's first step (alphas are in units of
#: their constraint width, normalisations are O(1)): it sets the initial damping.
FIRST_STEP = 0.3


#: The environment variable (set in workers by `faasctl.study.WORKER_ENV`) that caps the threads of
#: XLA's CPU thread pool in a process (`start_runtime`).
CPU_THREADS_ENV = "FAASCTL_XLA_CPU_THREADS"


def start_runtime() -> None:
    """Start JAX's runtime, with at most ``$FAASCTL_XLA_CPU_THREADS`` threads in XLA's CPU pool.

    XLA sizes the thread pool that runs compiled CPU code by the CPUs the process may use, and
    neither JAX nor XLA has a setting for it: each of N workers on N cores ran N threads, which
    then waited on each other (1Lbb on 2 cores, 2 workers: ~1 s more CPU per scan than with one
    thread each; a 1Lbb patch took 38 ms of CPU with one thread against 49 ms with two, in the
    same 38 ms). So the CPU client is made while this thread may run on that many CPUs only, and
    every thread gets all the process's CPUs back afterwards: the pool keeps its size, the
    scheduler still moves its threads freely. Without the variable (or with one that is not a
    positive number), or on a system without CPU affinity, JAX starts as it would; a runtime
    already started is left as it is.
    """
    _initialize_lapack()
    setting = os.environ.get(CPU_THREADS_ENV, "")
    threads = int(setting) if setting.strip().isdigit() else 0
    allowed = os.sched_getaffinity(0) if threads > 0 and hasattr(os, "sched_getaffinity") else set()
    if not 0 < threads < len(allowed):
        jax.devices()
        return
    os.sched_setaffinity(0, sorted(allowed)[:threads])
    try:
        jax.devices()
    finally:
        for task in os.listdir("/proc/self/task"):  # the threads XLA started meanwhile, and this one
            try:
                os.sched_setaffinity(int(task), allowed)
            except OSError:  # a thread that ended meanwhile
                pass


def _initialize_lapack() -> bool:
    """Give jaxlib its LAPACK kernels now, without importing all of ``scipy.linalg``; whether it has them.

    jaxlib's CPU kernels for the engine's Cholesky solve call LAPACK through the function
    pointers that ``scipy.linalg.cython_blas`` and ``cython_lapack`` export. jaxlib takes them
    when it lowers a program that needs them (never, for an engine loaded compiled: `_engine`),
    importing the two by name, which imports all of ``scipy.linalg``: 0.2-0.35 s of a worker's
    start, more than lowering the engine, for nothing else the engine uses. So the two are loaded
    from their files for as long as jaxlib takes the pointers (once per process), then left to
    Python's import system again: a later ``import scipy.linalg`` imports them as ever. Where they
    are not in scipy's folder (or scipy.linalg is imported already) jaxlib imports them itself.
    """
    global _LAPACK_READY
    if _LAPACK_READY:
        return True
    try:
        from jaxlib import lapack

        initialize = lapack._lapack.initialize
    except (ImportError, AttributeError):
        return False
    loaded: list[str] = []
    try:
        if "scipy.linalg" not in sys.modules:
            _load_lapack_modules(loaded)
    except Exception:  # noqa: BLE001 - what is not loaded jaxlib imports
        log.debug("scipy's LAPACK modules not loaded from their files", exc_info=True)
    try:
        initialize()
        _LAPACK_READY = True
    except Exception:  # noqa: BLE001 - then jaxlib does it when it lowers the engine
        log.debug("jaxlib's LAPACK kernels not initialized", exc_info=True)
    finally:
        for name in loaded:
            sys.modules.pop(name, None)
    return _LAPACK_READY


def _load_lapack_modules(loaded: list[str]) -> None:
    """Load scipy's ``cython_blas`` and ``cython_lapack`` from their files into ``sys.modules``, naming
    each in ``loaded``; ``scipy.linalg`` itself is not imported (``scipy`` is: it is small)."""
    scipy = importlib.util.find_spec("scipy")  # finds the package without running it
    if scipy is None or not scipy.submodule_search_locations:
        return
    folder = Path(list(scipy.submodule_search_locations)[0]) / "linalg"
    for name in ("cython_blas", "cython_lapack"):
        path = next(folder / f"{name}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES
                    if (folder / f"{name}{suffix}").is_file())
        spec = importlib.util.spec_from_file_location(f"scipy.linalg.{name}", path)
        assert spec is not None and spec.loader is not None
        sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)
        loaded.append(spec.name)
        spec.loader.exec_module(module)


_LAPACK_READY = False


class FitNotConverged(FaasctlError):
    """Raised when a Newton fit of the compiled engine does not converge (``fallback=False``)."""


def _code4_inverse(alpha0: float = 1.0) -> np.ndarray:
    """pyhf's code4 ``A_inverse`` (polynomial coefficients from the boundary conditions)."""
    a = alpha0
    return np.array([
        [15.0 / (16 * a), -15.0 / (16 * a), -7.0 / 16.0, -7.0 / 16.0, 1.0 / 16 * a, -1.0 / 16.0 * a],
        [3.0 / (2 * a**2), 3.0 / (2 * a**2), -9.0 / (16 * a), 9.0 / (16 * a), 1.0 / 16, 1.0 / 16],
        [-5.0 / (8 * a**3), 5.0 / (8 * a**3), 5.0 / (8 * a**2), 5.0 / (8 * a**2), -1.0 / (8 * a), 1.0 / (8 * a)],
        [3.0 / (-2 * a**4), 3.0 / (-2 * a**4), -7.0 / (-8 * a**3), 7.0 / (-8 * a**3), -1.0 / (8 * a**2),
         -1.0 / (8 * a**2)],
        [3.0 / (16 * a**5), -3.0 / (16 * a**5), -3.0 / (16 * a**4), -3.0 / (16 * a**4), 1.0 / (16 * a**3),
         -1.0 / (16 * a**3)],
        [1.0 / (2 * a**6), 1.0 / (2 * a**6), -5.0 / (16 * a**5), 5.0 / (16 * a**5), 1.0 / (16 * a**4),
         1.0 / (16 * a**4)],
    ])


class Prepared(NamedTuple):
    """Per-patch arrays on the device, derived once from `ModelArrays`."""

    nom: jax.Array  # (C,)
    onehot: jax.Array  # (B, C): cell -> bin
    hs_up: jax.Array  # (P, C)
    hs_dn: jax.Array
    hs_s: jax.Array  # code4p: (up + dn) / 2
    hs_a: jax.Array  # code4p: (up - dn) / 16
    ns_hi: jax.Array  # (P, C)
    ns_lo: jax.Array
    ns_coef: jax.Array  # (6, P, C) code4 polynomial coefficients
    ns_log_hi: jax.Array  # (P, C) log(hi), log(lo): the exponential branches of code4
    ns_log_lo: jax.Array
    lin: jax.Array  # (P, C) bool
    gauss: jax.Array  # (P,) bool
    sigma: jax.Array
    pois: jax.Array  # (P,) bool
    tau: jax.Array
    lower: jax.Array
    upper: jax.Array


def _prepare(nom, bin_index, hs_up, hs_dn, ns_hi, ns_lo, lin, gauss, sigma, pois, tau, lower, upper, data):
    onehot = (bin_index[None, :] == jnp.arange(data.shape[0])[:, None]).astype(nom.dtype)
    log_hi, log_lo = jnp.log(ns_hi), jnp.log(ns_lo)
    b = jnp.stack([ns_hi - 1.0, ns_lo - 1.0, log_hi * ns_hi, -log_lo * ns_lo, log_hi**2 * ns_hi, log_lo**2 * ns_lo])
    coef = jnp.einsum("rc,cpk->rpk", jnp.asarray(_code4_inverse(), dtype=nom.dtype), b)
    return Prepared(
        nom=nom, onehot=onehot, hs_up=hs_up, hs_dn=hs_dn, hs_s=0.5 * (hs_up + hs_dn), hs_a=0.0625 * (hs_up - hs_dn),
        ns_hi=ns_hi, ns_lo=ns_lo, ns_coef=coef, ns_log_hi=log_hi, ns_log_lo=log_lo, lin=lin > 0, gauss=gauss, sigma=sigma, pois=pois, tau=tau,
        lower=lower, upper=upper,
    )


def _entries(theta: jax.Array, m: Prepared) -> tuple[jax.Array, jax.Array]:
    """Per (parameter, cell): the additive histosys delta (code4p) and the factor g.

    ``g`` is the normsys factor (code4) times the parameter itself where it multiplies the
    cell (normfactor, lumi, staterror, shapesys, shapefactor). Each entry depends on its
    own parameter only, which `_derivatives` relies on. The values of
    `_entries_and_derivatives`: one copy of the interpolation code (compiled, the unused
    derivatives are dropped).
    """
    return _entries_and_derivatives(theta, m)[0]


def _entries_and_derivatives(theta: jax.Array, m: Prepared):
    """The entries (`_entries`: code4p, code4 as pyhf.interpolators, alpha0 = 1) and their first and
    second derivatives by their own parameter.

    Written out piece by piece: this compiles much faster than nested ``jax.jvp``, and is
    checked against autodiff of the entries in the tests.
    """
    a = theta[:, None]
    a2 = a * a
    # code4p, as pyhf.interpolators.code4p
    up, dn, S, A4 = m.hs_up, m.hs_dn, m.hs_s, m.hs_a
    inside = a2 * (a2 * (a2 * 3.0 - 10.0) + 15.0) * A4 + a * S
    inside1 = a * (a2 * (a2 * 18.0 - 40.0) + 30.0) * A4 + S
    inside2 = (a2 * (a2 * 90.0 - 120.0) + 30.0) * A4
    low, high = a < -1.0, a > 1.0
    delta = jnp.where(low, a * dn, jnp.where(high, a * up, inside))
    delta1 = jnp.where(low, dn, jnp.where(high, up, inside1))
    delta2 = jnp.where(low | high, 0.0, inside2)
    # code4, as pyhf.interpolators.code4 (alpha0 = 1)
    c = m.ns_coef
    poly = 1.0 + a * (c[0] + a * (c[1] + a * (c[2] + a * (c[3] + a * (c[4] + a * c[5])))))
    poly1 = c[0] + a * (2.0 * c[1] + a * (3.0 * c[2] + a * (4.0 * c[3] + a * (5.0 * c[4] + a * 6.0 * c[5]))))
    poly2 = 2.0 * c[1] + a * (6.0 * c[2] + a * (12.0 * c[3] + a * (20.0 * c[4] + a * 30.0 * c[5])))
    interior = (a > -1.0) & (a < 1.0)
    above = a >= 1.0
    # base ** |a| by one exp of the logs computed once per patch (a power and a log per entry
    # and iteration before: a third of the entries' time)
    log_base = jnp.where(interior, 0.0, jnp.where(above, m.ns_log_hi, m.ns_log_lo))
    outer = jnp.exp(jnp.abs(a) * log_base)
    slope = jnp.where(above, log_base, -log_base)  # d/da log(base^|a|)
    f = jnp.where(interior, poly, outer)
    f1 = jnp.where(interior, poly1, slope * outer)
    f2 = jnp.where(interior, poly2, slope * slope * outer)
    # times the parameter itself where it multiplies the cell
    lin = m.lin.astype(theta.dtype)
    factor = jnp.where(m.lin, a, 1.0)
    g = f * factor
    g1 = f1 * factor + f * lin
    g2 = f2 * factor + 2.0 * f1 * lin
    return (delta, g), (delta1, g1), (delta2, g2)


def _constraint_value(theta, m: Prepared, aux):
    gauss = 0.5 * ((aux - theta) / m.sigma) ** 2 + jnp.log(m.sigma) + 0.5 * math.log(2.0 * math.pi)
    rate = jnp.where(m.pois, theta, 1.0) * m.tau
    pois = rate - xlogy(aux, rate) + gammaln(aux + 1.0)
    return jnp.sum(jnp.where(m.gauss, gauss, 0.0)) + jnp.sum(jnp.where(m.pois, pois, 0.0))


def _nll(theta, m: Prepared, data, aux):
    """The negative log-likelihood (pyhf's ``-logpdf``, all constants included)."""
    delta, g = _entries(theta, m)
    nu = m.onehot @ ((m.nom + delta.sum(0)) * g.prod(0))
    main = jnp.sum(nu - xlogy(data, nu) + gammaln(data + 1.0))
    return main + _constraint_value(theta, m, aux)


def _expected(theta, m: Prepared):
    delta, g = _entries(theta, m)
    return m.onehot @ ((m.nom + delta.sum(0)) * g.prod(0))


def _derivatives(theta, m: Prepared, data, aux):
    """NLL, its gradient and its exact Hessian at ``theta``.

    With cell counts ``nu_c = A_c G_c`` (``A = nom + sum_p delta_p``, ``G = prod_p g_p``),
    bin counts ``nu_b = sum_c nu_c`` and ``L = sum_b nu_b - n_b log nu_b``:
    ``grad = J r`` and ``H = J diag(n / nu^2) J^T + sum_c r_c d2 nu_c`` with
    ``J = d nu / d theta`` and ``r = 1 - n / nu``. Off the diagonal
    ``d_p d_q nu_c = A'_p dG_q + A'_q dG_p + A G T_p T_q`` (``T = g' / g``), which is
    ``M + M^T`` with ``M = (A' + A T / 2) dG^T`` (``dG = T G``); the diagonal is computed
    separately. ``dG_p = g'_p prod_{q != p} g_q`` is computed so that the gradient
    stays exact when a factor is zero (a POI at 0).
    """
    (delta, g), (d1, g1), (d2, g2) = _entries_and_derivatives(theta, m)
    A = m.nom + delta.sum(0)
    # prod_{q != p} g_q, exact also where factors are zero (a POI at 0): by the product of
    # the non-zero factors and the number of zero ones
    zero = g == 0.0
    nonzero = jnp.where(zero, 1.0, g)
    prod_nonzero = nonzero.prod(0)
    zeros = zero.sum(0)
    G = jnp.where(zeros > 0, 0.0, prod_nonzero)
    others = jnp.where(zeros == 0, prod_nonzero / nonzero, jnp.where((zeros == 1) & zero, prod_nonzero, 0.0))
    nu_c = A * G
    nu = m.onehot @ nu_c
    dG = g1 * others
    dnu_c = d1 * G + A * dG
    J = dnu_c @ m.onehot.T  # (P, B)
    r = 1.0 - data / nu
    w = data / nu**2
    value = jnp.sum(nu - xlogy(data, nu) + gammaln(data + 1.0)) + _constraint_value(theta, m, aux)
    r_c = r @ m.onehot
    T = g1 / jnp.where(g == 0.0, 1.0, g)
    # the off-diagonal terms d1_p dG_q + d1_q dG_p + A T_p T_q G (dG = T G where g != 0) as
    # M + M^T with one product: M = ((d1 + A T / 2) r) dG^T
    M = ((d1 + 0.5 * A * T) * r_c) @ dG.T
    second = M + M.T
    diag = jnp.sum(r_c * (d2 * G + 2.0 * d1 * dG + A * g2 * others), axis=1)
    second = second + jnp.diag(diag - jnp.diagonal(second))
    # constraints (each on its own parameter)
    safe = jnp.where(m.pois & (theta != 0.0), theta, 1.0)
    grad = J @ r + jnp.where(m.gauss, (theta - aux) / m.sigma**2, 0.0) + jnp.where(m.pois, m.tau - aux / safe, 0.0)
    constraints = jnp.where(m.gauss, 1.0 / m.sigma**2, 0.0) + jnp.where(m.pois, aux / safe**2, 0.0)
    return value, grad, (J * w) @ J.T + second + jnp.diag(constraints)


class FitResult(NamedTuple):
    x: jax.Array
    nll: jax.Array
    status: jax.Array  # 1 converged, 0 ran out of iterations, 2 gave up
    iterations: jax.Array
    decrement: jax.Array


def _fit(m: Prepared, data, aux, x0, fixed):
    """Minimise the NLL in the box [lower, upper] with ``fixed`` parameters held at ``x0``.

    Levenberg-Marquardt on the exact Hessian, with the damping ``lam * I``: a step solves
    ``(H + lam I) d = -g`` by Cholesky on the free parameters (parameters at a bound whose
    gradient pushes outwards are held) and is projected into the box. The damping starts
    large (a first step of `FIRST_STEP` along the gradient), shrinks while the quadratic
    model predicts the decrease well and grows when it does not; it ends at zero (at once
    after a good step with a decrement below `NEWTON_ZONE`), so the fit finishes with full
    Newton steps (quadratic convergence).

    Why not plain Newton: where a likelihood has several local minima, the one found
    depends on the path. With a large damping the steps follow the steepest-descent path
    from the start (``(H + I/h) d = -g`` is an implicit Euler step of the gradient flow),
    the same valley a quasi-Newton method started with an identity Hessian, as pyhf's
    SLSQP is, descends into. Newton steps from the start can jump into another valley.

    Converged when the Newton decrement ``g^T H^-1 g`` (about twice the distance to the
    minimum, in NLL) is below `TOLERANCE` with the undamped Hessian (a damping below 1e-6,
    which only matters where the Hessian is singular, counts as undamped).
    """
    lower, upper = m.lower, m.upper
    n = x0.shape[0]
    eye = jnp.eye(n, dtype=x0.dtype)

    def cond(s):
        return (s[6] == 0) & (s[5] < MAX_ITERATIONS)

    def body(s):
        x, f, g, h, lam, it, status, _ = s
        free = ~fixed & ~((x <= lower) & (g > 0)) & ~((x >= upper) & (g < 0))
        gf = jnp.where(free, g, 0.0)
        lam = jnp.where(lam < 0.0, jnp.max(jnp.abs(gf)) / FIRST_STEP, lam)  # first iteration
        both = free[:, None] & free[None, :]
        chol = jnp.linalg.cholesky(jnp.where(both, h, 0.0) + jnp.diag(jnp.where(free, lam, 1.0)))
        ok = jnp.all(jnp.isfinite(chol))
        step = -cho_solve((jnp.where(ok, chol, eye), True), gf)
        dec = -(gf @ step)
        done = ok & (lam <= 1e-6) & (dec <= TOLERANCE)
        search = ok & ~done
        xn = jnp.where(free, jnp.clip(x + step, lower, upper), x)
        # the trial point's derivatives with its NLL (most steps are accepted: one pass over
        # the entries per iteration instead of an NLL now and the derivatives next time)
        fn, gn, hn = lax.cond(search, lambda: _derivatives(xn, m, data, aux),
                              lambda: (jnp.asarray(jnp.inf, x0.dtype), g, h))
        moved = xn - x
        predicted = -(g @ moved + 0.5 * moved @ (h @ moved))
        rho = (f - fn) / jnp.where(predicted > 0, predicted, 1.0)
        tiny = predicted < 1e-10  # below the rounding noise of the NLL: rho means nothing
        accept = search & jnp.isfinite(fn) & (((predicted > 0) & (rho > 0.25)) | (tiny & (fn <= f + 1e-10)))
        good = accept & ((rho > 0.75) | tiny)
        # shrink faster where the model is very good (far from a valley's edge)
        lam2 = jnp.where(good, jnp.where((rho > 0.95) | tiny, lam / 10.0, lam / 3.0), lam)
        # close to the minimum the valley is chosen: go straight to full Newton steps rather than
        # shrink the damping step by step (~2 iterations of ~11 per fit saved, same minima)
        lam2 = jnp.where(good & (dec < NEWTON_ZONE), 0.0, lam2)
        lam2 = jnp.where(lam2 < 1e-7, 0.0, lam2)
        lam2 = jnp.where(~ok | (search & ~accept), jnp.maximum(4.0 * lam, 1e-6), lam2)
        stalled = search & ~accept & tiny & (lam <= 1e-6) & (dec <= ROUNDING_TOLERANCE)
        status2 = jnp.where(done | stalled, 1, jnp.where(lam2 > 1e12, 2, 0))
        keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
        return (keep(xn, x), keep(fn, f), keep(gn, g), keep(hn, h), lam2, it + 1, status2,
                jnp.where(ok, dec, jnp.inf))

    f0, g0, h0 = _derivatives(x0, m, data, aux)
    state = (x0, f0, g0, h0, jnp.asarray(-1.0, x0.dtype), 0, 0, jnp.asarray(jnp.inf, x0.dtype))
    x, f, _, _, _, it, status, dec, = lax.while_loop(cond, body, state)
    return FitResult(x, f, status, it, dec)


def _asimov(m: Prepared, x, aux):
    """pyhf's Asimov data at ``x``: expected counts, and expected auxiliary data."""
    aux_a = jnp.where(m.gauss, x, jnp.where(m.pois, x * m.tau, aux))
    return _expected(x, m), aux_a


#: The fits of pyhf's qtilde asymptotic test: (name, on Asimov data, POI fixed, POI value). The
#: free fit to the Asimov data is not run: its minimum is where the Asimov data were made (`_hypotest`).
FITS = (
    ("asimov_mu0", False, True, 0.0),  # background-only fit to data: makes the Asimov data
    ("data_mu1", False, True, 1.0),
    ("data_free", False, False, 0.0),
    ("asimov_data_mu1", True, True, 1.0),
)
#: `FITS` and the Asimov data's free fit: the fits `_hypotest` returns, in this order.
RESULTS = (*(name for name, *_ in FITS), "asimov_data_free")


def _hypotest(nom, bin_index, hs_up, hs_dn, ns_hi, ns_lo, lin, gauss, sigma, pois, tau, lower, upper, data, aux,
              init, fixed, poi):
    """The fits of one patch in one compiled call (a ``lax.scan``: one copy of the fit), as `RESULTS`.

    Each fit starts at pyhf's suggested init, as pyhf's do; the Asimov data come from the
    first (the background-only fit to the observed data). The free fit to the Asimov data
    is known without fitting: at the point ``x`` the Asimov data were made from, every
    bin's expected count equals its Asimov count and every auxiliary datum its expectation,
    so each Poisson and constraint term is at its own minimum there: ``x`` is the global
    minimum (POI 0 is inside the bounds of qtilde's fits). pyhf fits it from the init and
    lands there within its tolerance; a fit here took ~10 of ~50 iterations per patch.
    """
    TRACES["hypotest"] += 1
    m = _prepare(nom, bin_index, hs_up, hs_dn, ns_hi, ns_lo, lin, gauss, sigma, pois, tau, lower, upper, data)
    table = jnp.asarray([[i == 0, a, f, v] for i, (_, a, f, v) in enumerate(FITS)], dtype=nom.dtype)

    def one(x_mu0, row):
        first, use_asimov, poi_fixed, poi_value = row[0] > 0, row[1] > 0, row[2] > 0, row[3]
        data_a, aux_a = _asimov(m, x_mu0, aux)
        d = jnp.where(use_asimov, data_a, data)
        a = jnp.where(use_asimov, aux_a, aux)
        x0 = init.at[poi].set(jnp.where(poi_fixed, poi_value, init[poi]))
        result = _fit(m, d, a, x0, fixed.at[poi].set(poi_fixed | fixed[poi]))
        return jnp.where(first, result.x, x_mu0), result

    x_mu0, results = lax.scan(one, init.at[poi].set(0.0), table)
    data_a, aux_a = _asimov(m, x_mu0, aux)
    exact = FitResult(x_mu0, _nll(x_mu0, m, data_a, aux_a), jnp.ones_like(results.status[0]),
                      jnp.zeros_like(results.iterations[0]), jnp.zeros_like(results.decrement[0]))
    return jax.tree.map(lambda r, e: jnp.concatenate([r, e[None]]), results, exact)


_jit_hypotest = jax.jit(_hypotest)
_jit_prepare = jax.jit(_prepare)
_jit_fit = jax.jit(_fit)
_jit_nll = jax.jit(lambda theta, m, data, aux: _nll(theta, m, data, aux))
_jit_derivatives = jax.jit(lambda theta, m, data, aux: _derivatives(theta, m, data, aux))


#: Set to ``0`` to keep no compiled engines between processes; to a folder to keep them there (`engine_cache_dir`).
CACHE_ENV = "FAASCTL_JAX_CACHE"
#: Engines (`_hypotest` compiled) of this process, by the layout of their arguments (`_engine`).
_ENGINES: dict[tuple, Any] = {}
#: Times an engine was loaded compiled from `engine_cache_dir` in this process (`TRACES`: compiled).
LOADS: collections.Counter[str] = collections.Counter()


def engine_cache_dir() -> Path | None:
    """Where compiled engines are kept for later processes, a folder per JAX version.

    ``$FAASCTL_JAX_CACHE`` if set (``0``, ``off`` or empty: nowhere), else
    ``$XDG_CACHE_HOME/faasctl/jax/jax-<jax>-jaxlib-<jaxlib>`` (``~/.cache`` without XDG). None
    where the user set a folder for JAX's own persistent cache (``JAX_COMPILATION_CACHE_DIR``):
    an engine JAX loaded from there serializes without its machine code, so it cannot be kept.
    The files are programs: the folder must be the user's own, as JAX's cache is.
    """
    setting = os.environ.get(CACHE_ENV)
    if setting is not None and setting.strip().lower() in ("", "0", "off", "false", "no"):
        return None
    if jax.config.jax_compilation_cache_dir:
        return None
    from jaxlib.version import __version__ as jaxlib_version

    versions = f"jax-{jax.__version__}-jaxlib-{jaxlib_version}"
    if setting:
        return Path(setting).expanduser() / versions
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "faasctl" / "jax" / versions


def _engine(args: tuple) -> Any:
    """`_hypotest` compiled for the layout (types, shapes, dtypes) of ``args``, once per process.

    Loaded compiled from `engine_cache_dir` where an earlier process left it, else traced, lowered
    and compiled, and left there. Loading skips tracing and lowering (1Lbb: ~0.5 s of a worker's
    start), which JAX's persistent cache cannot: its key is the lowered program. Call inside
    ``jax.enable_x64(True)``.
    """
    layout = tuple((type(x).__name__, np.shape(x), np.result_type(x).str) for x in args)
    engine = _ENGINES.get(layout)
    if engine is None:
        folder = engine_cache_dir()
        path = folder / f"hypotest-{_engine_key(layout)}.bin" if folder else None
        loaded = _load_engine(path, layout) if path and _initialize_lapack() else None
        engine = loaded[1] if loaded is not None else _compile_engine(args, layout, path)
        _ENGINES[layout] = engine
    return engine


def _engine_key(layout: tuple) -> str:
    """What a compiled engine depends on: JAX, XLA's flags, the device and the host CPU's features
    (a node of another CPU type may share the cache folder), this module's code and the layout."""
    from jaxlib.version import __version__ as jaxlib_version

    device = jax.devices()[0]
    cpu = ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:  # not Linux: the machine's type at least
        import platform

        cpu = platform.machine()
    try:
        code = Path(__file__).read_bytes()
    except OSError:  # not a plain file (in a zip): the release then
        from faasctl import __version__

        code = __version__.encode()
    parts = (jax.__version__, jaxlib_version, device.platform, device.device_kind, device.client.platform_version,
             os.environ.get("XLA_FLAGS", ""), cpu, repr(layout))
    return hashlib.sha256("\n".join(parts).encode() + code).hexdigest()[:32]


def _load_engine(path: Path, layout: tuple | None = None) -> tuple[tuple, Any] | None:
    """The layout and engine compiled in ``path``, or None: no such file, one this process cannot
    use, one for another layout than ``layout``, or (without ``layout``) one this process would
    not have made (another release, CPU type or flags: its name is not its key)."""
    from jax.experimental import serialize_executable

    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        stored, *serialized = pickle.loads(data)  # noqa: S301 - the user's own cache
        if stored != (layout or stored) or path.name != f"hypotest-{_engine_key(stored)}.bin":
            return None
        engine = serialize_executable.deserialize_and_load(*serialized)
    except Exception as err:  # noqa: BLE001 - then it is compiled again
        log.info("compiled engine %s not usable, compiling it: %s", path, err)
        return None
    LOADS["hypotest"] += 1
    try:
        os.utime(path)  # used: kept by `_prune`, and the newest is preloaded (`preload_engine`)
    except OSError:
        pass
    return stored, engine


def preload_engine() -> None:
    """Load the engine this machine used last, before a task asks for one (a local worker's warm-up).

    A scan's patches share one layout, and the same pallet is often scanned again: its first
    task then finds the engine loaded, while the client was still reading the pallet. Where the
    newest file is for another layout, the first task loads or compiles its own as without this.
    """
    folder = engine_cache_dir()
    if folder is None or not _initialize_lapack():
        return
    try:
        newest = max(folder.glob("hypotest-*.bin"), key=lambda f: f.stat().st_mtime)
    except (ValueError, OSError):  # none, or one removed meanwhile
        return
    with jax.enable_x64(True):
        loaded = _load_engine(newest)
    if loaded is not None:
        _ENGINES.setdefault(*loaded)


def _compile_engine(args: tuple, layout: tuple, path: Path | None) -> Any:
    """`_hypotest` compiled for ``args`` (of ``layout``), and left in ``path`` (where writable) for later processes."""
    from jax.experimental import serialize_executable

    engine = _jit_hypotest.lower(*args).compile()
    if path is None:
        return engine
    part = None
    try:
        data = pickle.dumps((layout, *serialize_executable.serialize(engine)))
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".part", delete=False) as part:
            part.write(data)
        os.replace(part.name, path)  # whole or not at all, for workers that load it meanwhile
    except Exception as err:  # noqa: BLE001 - a cache that cannot be written only costs the next compile
        log.info("compiled engine not kept in %s: %s", path.parent, err)
        if part is not None:
            Path(part.name).unlink(missing_ok=True)
    else:
        _prune(path.parent)
    return engine


#: Days an engine on disk is kept unused: each faasctl or JAX version, model layout and CPU type
#: leaves one (~1 MB), and nothing else would remove those no release uses any more.
UNUSED_DAYS = 30


def _prune(folder: Path) -> None:
    """Remove the engines in ``folder`` that no process loaded or made for `UNUSED_DAYS`."""
    oldest = time.time() - UNUSED_DAYS * 86400
    for old in folder.glob("hypotest-*"):
        try:
            if old.stat().st_mtime < oldest:
                old.unlink()
        except OSError:  # removed meanwhile, or not ours to remove
            pass


def prepare(arrays: ModelArrays) -> Prepared:
    """Send one patch's arrays to the device (call inside ``jax.enable_x64(True)``)."""
    a = arrays
    return _jit_prepare(a.nom, a.bin_index, a.hs_up, a.hs_dn, a.ns_hi, a.ns_lo, a.lin, a.gauss, a.sigma, a.pois,
                        a.tau, a.lower, a.upper, a.data)


def _ndtr(a: float) -> float:
    """The standard normal CDF as scipy's ``ndtr`` (cephes) computes it, with the C library's erf/erfc.

    Within 1e-13 relative of ``scipy.special.ndtr`` (= ``scipy.stats.norm.cdf``, what pyhf
    uses) down to its underflow, and without importing scipy, ~0.5 s of a worker's start.
    """
    x = a * math.sqrt(0.5)
    z = abs(x)
    if z < math.sqrt(0.5):
        return 0.5 + 0.5 * math.erf(x)
    y = 0.5 * math.erfc(z)
    return 1.0 - y if x > 0 else y


def cls_from_teststats(qmu: float, qmu_a: float) -> HypotestResult:
    """CLs and the expected CLs band from ``qtilde`` on data and on Asimov data.

    Exactly pyhf's ``AsymptoticCalculator`` (``calc_base_dist="normal"``): the same
    branches, and the normal CDF as scipy computes it (`_ndtr`).
    """
    # q_mu,A = 0 (with q_mu > 0), or both tails underflowing, gives 0/0 = NaN as in pyhf: the worker
    # then reports the patch as having no sensitivity (`faasctl.study.no_sensitivity`)
    with np.errstate(divide="ignore", invalid="ignore"):
        sqrtq, sqrtq_a = np.sqrt(np.float64(qmu)), np.sqrt(np.float64(qmu_a))
        if sqrtq <= sqrtq_a:
            teststat = sqrtq - sqrtq_a
        else:
            teststat = (np.power(sqrtq, 2) - np.power(sqrtq_a, 2)) / (2 * sqrtq_a)

        def cls(value: float) -> float:
            return float(np.float64(_ndtr(-(value + sqrtq_a))) / _ndtr(-value))  # numpy's 0/0: NaN

        return cls(teststat), [cls(float(n)) for n in (2, 1, 0, -1, -2)]


@dataclass
class _Background:
    cache: BackgroundCache
    min_cells: int = 0


@dataclass
class PatchFit:
    """The fits of one hypothesis test (`RESULTS`; for tests and diagnostics)."""

    arrays: ModelArrays
    fits: dict[str, FitResult]
    qmu: float
    qmu_a: float
    result: HypotestResult


class JaxBackend(Backend):
    """pyhf's hypothesis test on a likelihood compiled once per model layout.

    Args:
        fallback: compute patches the engine cannot (unsupported model, fit not
            converged) with plain pyhf, logging a warning; else raise.
    """

    name = "jax"

    def __init__(self, *, fallback: bool = True) -> None:
        self.fallback = fallback
        self._backgrounds: collections.OrderedDict[str, _Background] = collections.OrderedDict()
        #: counters: patches, fallbacks, iterations (all fits), seconds in the fits
        self.stats: collections.Counter[str] = collections.Counter()
        start_runtime()

    # -- building arrays ----------------------------------------------------------------

    def _background(self, background: Mapping[str, Any], digest: str) -> _Background:
        state = self._backgrounds.get(digest)
        if state is None or state.cache.background is not background:
            state = _Background(cache=BackgroundCache(background))
            # pad cells so patches adding a sample to every channel share one layout
            channels = background.get("channels", [])
            cells = sum(len(s.get("data", [])) for c in channels for s in c.get("samples", []))
            bins = sum(len(c["samples"][0].get("data", [])) for c in channels if c.get("samples"))
            state.min_cells = cells + bins
            self._backgrounds[digest] = state
            while len(self._backgrounds) > 4:
                self._backgrounds.popitem(last=False)
        self._backgrounds.move_to_end(digest)
        return state

    def arrays(self, background: Mapping[str, Any], digest: str, patch: Patch) -> ModelArrays:
        """The padded arrays of ``patch`` applied to ``background``.

        Raises:
            UnsupportedModel: the patched workspace uses something the engine lacks.
            PatchError: the patch does not apply.
        """
        check_settings(MODIFIER_SETTINGS)  # the study's interpolation codes are the ones implemented
        state = self._background(background, digest)
        spec = apply_patch(background, patch, shared=True)
        return build_arrays(spec, state.cache, min_cells=state.min_cells)

    # -- fitting ------------------------------------------------------------------------

    def fit_arrays(self, arrays: ModelArrays) -> PatchFit:
        """The fits and the CLs values of one patch (raises `FitNotConverged`)."""
        a = arrays
        with jax.enable_x64(True):
            args = (a.nom, a.bin_index, a.hs_up, a.hs_dn, a.ns_hi, a.ns_lo, a.lin, a.gauss, a.sigma, a.pois, a.tau,
                    a.lower, a.upper, a.data, a.aux, a.init, a.fixed, a.poi)
            stacked = _engine(args)(*args)
            stacked = FitResult(*(np.asarray(v) for v in stacked))
        poi = a.poi
        runs = [(name, FitResult(*(v[i] for v in stacked))) for i, name in enumerate(RESULTS)]
        self.stats["fits"] += len(FITS)
        self.stats["iterations"] += sum(int(f.iterations) for _, f in runs)
        bad = [(k, f) for k, f in runs if int(f.status) != 1]
        if bad:
            raise FitNotConverged(
                "Newton fit did not converge: "
                + ", ".join(f"{k} (status {int(f.status)}, decrement {float(f.decrement):.3g}, "
                            f"{int(f.iterations)} iterations)" for k, f in bad)
            )
        fits = dict(runs)

        def qtilde(fixed: FitResult, free: FitResult) -> float:
            # pyhf: 2 * (nll(mu) - nll(muhat)), clipped at 0, and 0 when muhat > mu
            q = max(2.0 * (float(fixed.nll) - float(free.nll)), 0.0)
            return 0.0 if float(free.x[poi]) > 1.0 else q

        qmu = qtilde(fits["data_mu1"], fits["data_free"])
        qmu_a = qtilde(fits["asimov_data_mu1"], fits["asimov_data_free"])
        return PatchFit(arrays=arrays, fits=fits, qmu=qmu, qmu_a=qmu_a, result=cls_from_teststats(qmu, qmu_a))

    def hypotest(self, background: Mapping[str, Any], digest: str, patch: Patch) -> Hypotest:
        self.stats["patches"] += 1
        start = time.perf_counter()
        try:
            fit = self.fit_arrays(self.arrays(background, digest, patch))
        except (UnsupportedModel, FitNotConverged) as err:
            if not self.fallback:
                raise
            self.stats["fallbacks"] += 1
            log.warning("patch %s: %s; computing it with plain pyhf instead", patch.name, err)
            from faasctl.backends.numpy import NumpyBackend

            return NumpyBackend().hypotest_spec(apply_patch(background, patch, shared=True), fallback=f"{type(err).__name__}: {err}")
        finally:
            self.stats["seconds"] += time.perf_counter() - start
        cls_obs, cls_exp = fit.result
        return Hypotest(cls_obs, cls_exp, fit.qmu_a, backend=self.name)


def backend() -> JaxBackend:
    return JaxBackend()

