"""The study's definitions: what one hypothesis test is, how answers are compared, how workers run.

Everything that says "the same computation as the published study" lives here, so that the backends,
the health checks, the image self test, the tests and the benchmarks all mean one thing by it:

* the test: pyhf's ``hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)``
  with normsys ``code4`` and histosys ``code4p`` (`MODIFIER_SETTINGS`, `pyhf_hypotest`);
* agreement with plain pyhf: relative 1e-3 or absolute 1e-5 on CLs_obs and each of the five
  expected CLs (`REL_TOL`, `ABS_TOL`, `agrees`);
* when a test has no sensitivity, so that no backend reports a CLs for it (`QMU_A_MIN`,
  `no_sensitivity`);
* the default backend of the CLI and the library alike (`DEFAULT_BACKEND`);
* the environment every worker runs with (`WORKER_ENV`).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence, overload

__all__ = [
    "MODIFIER_SETTINGS",
    "POI_TEST",
    "TEST_STAT",
    "REL_TOL",
    "ABS_TOL",
    "QMU_A_MIN",
    "DEFAULT_BACKEND",
    "WORKER_ENV",
    "HypotestResult",
    "agrees",
    "no_sensitivity",
    "pyhf_hypotest",
]

#: The interpolation codes of the published study (and of ATLAS likelihoods in general).
MODIFIER_SETTINGS: dict[str, dict[str, str]] = {
    "normsys": {"interpcode": "code4"},
    "histosys": {"interpcode": "code4p"},
}
#: The signal strength tested, and the test statistic.
POI_TEST = 1.0
TEST_STAT = "qtilde"

#: Two CLs values agree when they differ by at most REL_TOL relative or ABS_TOL absolute.
REL_TOL = 1e-3
ABS_TOL = 1e-5

#: A test has no sensitivity when q_mu,A (``qtilde`` on the Asimov data: the squared median
#: significance with which mu = 1 would be excluded) is at or below this. Then the signal barely
#: changes the model, the median expected CLs is above 0.96, and the number is the optimizer's
#: rather than the model's: pyhf's SLSQP stops once a step lowers the NLL by less than its
#: tolerance (1e-6), which near mu = 1 happens while q_mu,A is below about 1e-3, so pyhf returns
#: q_mu,A = 0 there (and CLs_obs = 0/0 = NaN) where a tighter fit finds 1e-10 or 1e-4. The
#: smallest q_mu,A of the 1Lbb and staus patches is 0.017.
QMU_A_MIN = 2e-3

#: The backend `faasctl fit`, `FitClient` and `run_scan` use unless told otherwise: the compiled
#: engine where JAX imports, plain pyhf elsewhere and for any patch the engine cannot fit exactly.
DEFAULT_BACKEND = "auto"

#: Seconds a patch may be in flight with no task finishing meanwhile (`FitClient`'s ``timeout``): far
#: above any fit of the published pallets (1Lbb: seconds), short enough that a stuck worker ends the scan.
DEFAULT_TIMEOUT = 600.0

#: One thread per worker process: the workers already use every core. XLA's CPU thread pool has
#: no setting of its own: the jax backend reads ``FAASCTL_XLA_CPU_THREADS`` (`faasctl.backends.jax.start_runtime`).
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    "FAASCTL_XLA_CPU_THREADS": "1",
}

#: (CLs_obs, [CLs_exp at -2, -1, 0, +1, +2 sigma])
HypotestResult = tuple[float, list[float]]


def agrees(got: float | Sequence[float], want: float | Sequence[float]) -> bool:
    """Whether ``got`` equals ``want`` within the study's tolerance (element-wise for sequences).

    Non-finite values agree only with the same non-finite value (NaN with NaN).
    """
    if isinstance(got, (int, float)) or isinstance(want, (int, float)):
        got, want = [got], [want]  # type: ignore[list-item]
    got, want = list(got), list(want)  # type: ignore[arg-type]
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if math.isnan(g) or math.isnan(w):
            if not (math.isnan(g) and math.isnan(w)):
                return False
        elif not math.isclose(g, w, rel_tol=REL_TOL, abs_tol=ABS_TOL):
            return False
    return True


def no_sensitivity(qmu_a: float, cls_obs: float, cls_exp: Sequence[float]) -> str | None:
    """Why a hypothesis test has no sensitivity, or None when its CLs values stand.

    Every backend's answer goes through this, so that a patch gets the same status from each:
    a test has no sensitivity when ``q_mu,A <= QMU_A_MIN``, or when a CLs is not finite (pyhf's
    asymptotic formula divides 0 by 0 when both tail probabilities vanish). The reason names
    the quantity but not its value, which differs between backends (0 in pyhf, 1e-10 in a
    tighter fit).

    Example:
        >>> no_sensitivity(0.0, float("nan"), [1.0] * 5)
        'no sensitivity: q_mu,A <= 0.002 (mu = 1 barely changes the expected data)'
        >>> no_sensitivity(2.7, 0.05, [0.002, 0.01, 0.05, 0.2, 0.5]) is None
        True
    """
    if not qmu_a > QMU_A_MIN:  # also NaN
        return f"no sensitivity: q_mu,A <= {QMU_A_MIN:g} (mu = 1 barely changes the expected data)"
    names = ("CLs_obs", "CLs_exp -2 sigma", "CLs_exp -1 sigma", "CLs_exp", "CLs_exp +1 sigma", "CLs_exp +2 sigma")
    bad = [name for name, value in zip(names, [cls_obs, *cls_exp]) if not math.isfinite(value)]
    if bad:
        return f"no sensitivity: {', '.join(bad)} not finite (the asymptotic formula gives 0/0)"
    return None


@overload
def pyhf_hypotest(
    spec: Mapping[str, Any], *, validate: bool = ..., tolerance: float | None = ..., return_qmu_a: Literal[False] = ...
) -> HypotestResult: ...


@overload
def pyhf_hypotest(
    spec: Mapping[str, Any], *, validate: bool = ..., tolerance: float | None = ..., return_qmu_a: Literal[True]
) -> tuple[float, list[float], float]: ...


def pyhf_hypotest(
    spec: Mapping[str, Any], *, validate: bool = True, tolerance: float | None = None, return_qmu_a: bool = False,
) -> HypotestResult | tuple[float, list[float], float]:
    """The study's hypothesis test on a full workspace spec, exactly as plain pyhf computes it.

    Uses pyhf's numpy backend. ``tolerance`` sets scipy's SLSQP tolerance; None keeps pyhf's
    default. Where the default stops short of the minimum, ``tolerance=1e-10`` gives the
    converged answer that the study takes as the reference.

    Returns:
        ``(CLs_obs, [CLs_exp x 5])``, and with ``return_qmu_a`` also q_mu,A (``qtilde`` on
        the Asimov data) from pyhf's own calculator, the same call: pyhf's answer is unchanged.
    """
    import numpy as np
    import pyhf

    tensorlib, optimizer = pyhf.get_backend()
    if tensorlib.name != "numpy" or optimizer.name != "scipy" or getattr(optimizer, "tolerance", None) != tolerance:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=tolerance))
    workspace = pyhf.Workspace(dict(spec), validate=validate)
    model = workspace.model(modifier_settings=MODIFIER_SETTINGS, validate=validate)
    data = workspace.data(model)
    # q_mu,A = 0 makes pyhf divide by zero (CLs_obs NaN): `no_sensitivity` handles it, so no warning
    with np.errstate(divide="ignore", invalid="ignore"):
        cls_obs, cls_exp, calculator = pyhf.infer.hypotest(
            POI_TEST, data, model, test_stat=TEST_STAT, return_expected_set=True, return_calculator=True
        )
    result = float(cls_obs), [float(v) for v in cls_exp]
    if return_qmu_a:
        return (*result, float(calculator.sqrtqmuA_v) ** 2)
    return result
