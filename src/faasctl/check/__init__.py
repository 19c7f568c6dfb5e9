"""Health-check fits: does an endpoint still compute the right CLs after an upgrade?

`reference` holds the suites and plain pyhf's stored answers, `run` sends the fits and judges them.
"""

from faasctl.check.reference import SUITES, Reference, ReferenceFit, load_reference, synthetic_reference_pallet
from faasctl.check.run import CheckReport, CheckResult, check_target, compare, run_check

__all__ = [
    "SUITES",
    "CheckReport",
    "CheckResult",
    "Reference",
    "ReferenceFit",
    "check_target",
    "compare",
    "load_reference",
    "run_check",
    "synthetic_reference_pallet",
]
