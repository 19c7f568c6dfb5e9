"""A scan: one CLs hypothesis test per patch of a pallet, on any executor.

`client` sends the fits (`FitClient`), `worker` is the task function that runs them, `results` keeps them
(`ResultStore`, results.json/.csv), `runner` ties the three together for the CLI and notebooks alike,
`plot` draws the exclusion plot.
"""

from faasctl.scan.client import FitClient
from faasctl.scan.results import PatchResult, ResultStore
from faasctl.scan.runner import Scan, run_scan

__all__ = ["FitClient", "PatchResult", "ResultStore", "Scan", "run_scan"]
