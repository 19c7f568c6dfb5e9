"""The interface every fit backend implements."""

from __future__ import annotations

import abc
from typing import Any, Mapping

from faasctl.pallets.load import Patch
from faasctl.study import HypotestResult

__all__ = ["Backend", "HypotestResult"]



class Backend(abc.ABC):
    """Computes the study's hypothesis test for one patch.

    The test is pyhf's ``hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)``
    on the background with the patch applied, with ``normsys`` code4 and ``histosys`` code4p.
    Backends may cache per background (``digest``) and per model structure across calls.
    """

    name: str

    @abc.abstractmethod
    def hypotest(self, background: Mapping[str, Any], digest: str, patch: Patch) -> HypotestResult:
        """CLs_obs and the five expected CLs of ``patch`` applied to ``background``."""
