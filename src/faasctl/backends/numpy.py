"""The reference backend: plain pyhf, numpy tensors, scipy's SLSQP (pyhf's defaults)."""

from __future__ import annotations

from typing import Any, Mapping

from faasctl.backends.base import Backend, HypotestResult
from faasctl.pallet import MODIFIER_SETTINGS, Patch, apply_patch

__all__ = ["NumpyBackend", "backend", "pyhf_hypotest"]


def pyhf_hypotest(spec: Mapping[str, Any], *, validate: bool = True) -> HypotestResult:
    """The study's hypothesis test on a full workspace spec, exactly as plain pyhf computes it."""
    import pyhf

    workspace = pyhf.Workspace(dict(spec), validate=validate)
    model = workspace.model(modifier_settings=MODIFIER_SETTINGS, validate=validate)
    data = workspace.data(model)
    cls_obs, cls_exp = pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)
    return float(cls_obs), [float(v) for v in cls_exp]


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self) -> None:
        import pyhf

        pyhf.set_backend("numpy")

    def hypotest(self, background: Mapping[str, Any], digest: str, patch: Patch) -> HypotestResult:
        return pyhf_hypotest(apply_patch(background, patch))


def backend() -> NumpyBackend:
    return NumpyBackend()
