"""The reference backend: plain pyhf, numpy tensors, scipy's SLSQP (pyhf's defaults)."""

from __future__ import annotations

from typing import Any, Mapping

from faasctl.backends.base import Backend, Hypotest
from faasctl.pallets.load import Patch
from faasctl.pallets.patching import apply_patch
from faasctl.study import pyhf_hypotest

__all__ = ["NumpyBackend", "backend"]


class NumpyBackend(Backend):
    name = "numpy"

    def hypotest(self, background: Mapping[str, Any], digest: str, patch: Patch) -> Hypotest:
        return self.hypotest_spec(apply_patch(background, patch))

    def hypotest_spec(self, spec: Mapping[str, Any], *, fallback: str | None = None) -> Hypotest:
        """The test on a full (patched) workspace ``spec``; ``fallback``: why the jax engine sent it here."""
        cls_obs, cls_exp, qmu_a = pyhf_hypotest(spec, return_qmu_a=True)
        return Hypotest(cls_obs, cls_exp, qmu_a, backend=self.name, fallback=fallback)


def backend() -> NumpyBackend:
    return NumpyBackend()
