"""The interface every fit backend implements, and what it returns."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Mapping

from faasctl.pallets.load import Patch
from faasctl.study import HypotestResult, no_sensitivity

__all__ = ["Backend", "Hypotest", "HypotestResult"]


@dataclass(frozen=True)
class Hypotest:
    """One patch's hypothesis test, as a backend computed it.

    Attributes:
        cls_obs: CLs observed.
        cls_exp: CLs expected at -2, -1, 0, +1, +2 sigma.
        qmu_a: ``qtilde`` on the Asimov data (q_mu,A), which decides `no_sensitivity`.
        backend: what computed it: ``"jax"`` (the compiled engine) or ``"numpy"`` (plain pyhf).
        fallback: why the compiled engine handed the patch to plain pyhf, or None.
    """

    cls_obs: float
    cls_exp: list[float]
    qmu_a: float
    backend: str
    fallback: str | None = None

    @property
    def no_sensitivity(self) -> str | None:
        """Why this test has no sensitivity (`faasctl.study.no_sensitivity`), or None."""
        return no_sensitivity(self.qmu_a, self.cls_obs, self.cls_exp)


class Backend(abc.ABC):
    """Computes the study's hypothesis test for one patch.

    The test is pyhf's ``hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)``
    on the background with the patch applied, with ``normsys`` code4 and ``histosys`` code4p.
    Backends may cache per background (``digest``) and per model structure across calls.
    """

    name: str

    @abc.abstractmethod
    def hypotest(self, background: Mapping[str, Any], digest: str, patch: Patch) -> Hypotest:
        """The hypothesis test of ``patch`` applied to ``background``."""
