"""A scan: one CLs hypothesis test per patch of a pallet, on any executor.

`client` sends the fits (`FitClient`), `worker` is the task function that runs them, `results` keeps them
(`ResultStore`, results.json/.csv), `runner` ties the three together for the CLI and notebooks alike,
`plot` draws the exclusion plot.

The names below are imported on first use: a worker imports `faasctl.scan.worker` only, and
the client's modules (pydantic, rich, ...) would cost it ~0.5-0.9 s of start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faasctl.scan.client import FitClient
    from faasctl.scan.results import PatchResult, ResultStore
    from faasctl.scan.runner import Scan, run_scan

__all__ = ["FitClient", "PatchResult", "ResultStore", "Scan", "run_scan"]

_HOMES = {"FitClient": "client", "PatchResult": "results", "ResultStore": "results", "Scan": "runner",
          "run_scan": "runner"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"faasctl.scan.{_HOMES[name]}"), name)
