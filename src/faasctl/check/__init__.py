"""Health-check fits: does an endpoint still compute the right CLs after an upgrade? See `faasctl.check.core`."""

from faasctl.check.core import CheckReport, CheckResult, check_target, load_reference, run_check

__all__ = ["CheckReport", "CheckResult", "check_target", "load_reference", "run_check"]
