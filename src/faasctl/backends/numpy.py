"""The reference backend: plain pyhf, numpy tensors, scipy's SLSQP (pyhf's defaults)."""

from __future__ import annotations

from typing import Any, Mapping

from faasctl.backends.base import Backend, HypotestResult
from faasctl.pallets.load import Patch
from faasctl.pallets.patching import apply_patch
from faasctl.study import pyhf_hypotest

__all__ = ["NumpyBackend", "backend"]


class NumpyBackend(Backend):
    name = "numpy"

    def hypotest(self, background: Mapping[str, Any], digest: str, patch: Patch) -> HypotestResult:
        return pyhf_hypotest(apply_patch(background, patch))


def backend() -> NumpyBackend:
    return NumpyBackend()
