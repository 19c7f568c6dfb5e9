"""The study's definitions: what one hypothesis test is, how answers are compared, how workers run.

Everything that says "the same computation as the published study" lives here, so that the backends,
the health checks, the image self test, the tests and the benchmarks all mean one thing by it:

* the test: pyhf's ``hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)``
  with normsys ``code4`` and histosys ``code4p`` (`MODIFIER_SETTINGS`, `pyhf_hypotest`);
* agreement with plain pyhf: relative 1e-3 or absolute 1e-5 on CLs_obs and each of the five
  expected CLs (`REL_TOL`, `ABS_TOL`, `agrees`);
* the default backend of the CLI and the library alike (`DEFAULT_BACKEND`);
* the environment every worker runs with (`WORKER_ENV`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

__all__ = [
    "MODIFIER_SETTINGS",
    "POI_TEST",
    "TEST_STAT",
    "REL_TOL",
    "ABS_TOL",
    "DEFAULT_BACKEND",
    "WORKER_ENV",
    "HypotestResult",
    "agrees",
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

#: The backend `faasctl fit`, `FitClient` and `run_scan` use unless told otherwise: the compiled
#: engine where JAX imports, plain pyhf elsewhere and for any patch the engine cannot fit exactly.
DEFAULT_BACKEND = "auto"

#: One thread per worker process: the workers already use every core.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
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


def pyhf_hypotest(spec: Mapping[str, Any], *, validate: bool = True, tolerance: float | None = None) -> HypotestResult:
    """The study's hypothesis test on a full workspace spec, exactly as plain pyhf computes it.

    Uses pyhf's numpy backend. ``tolerance`` sets scipy's SLSQP tolerance; None keeps pyhf's
    default. Where the default stops short of the minimum, ``tolerance=1e-10`` gives the
    converged answer that the study takes as the reference.
    """
    import pyhf

    tensorlib, optimizer = pyhf.get_backend()
    if tensorlib.name != "numpy" or optimizer.name != "scipy" or getattr(optimizer, "tolerance", None) != tolerance:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=tolerance))
    workspace = pyhf.Workspace(dict(spec), validate=validate)
    model = workspace.model(modifier_settings=MODIFIER_SETTINGS, validate=validate)
    data = workspace.data(model)
    cls_obs, cls_exp = pyhf.infer.hypotest(POI_TEST, data, model, test_stat=TEST_STAT, return_expected_set=True)
    return float(cls_obs), [float(v) for v in cls_exp]
