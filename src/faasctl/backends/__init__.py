"""Fit backends: how one patch's CLs hypothesis test is computed on a worker.

``numpy``
    The reference: plain ``pyhf.infer.hypotest`` with pyhf's numpy backend and scipy.
``jax``
    faasctl's compiled engine (`faasctl.backends.jax`): the likelihood is compiled once per
    model structure, with the patch's signal as array inputs, and fitted by Newton's method.
``auto``
    ``jax`` when JAX is installed (and imports), else ``numpy``. The jax backend itself
    hands the patches it cannot fit exactly (unsupported model, fit not converged) to
    plain pyhf, so ``auto`` never gives a different answer than ``numpy`` would.

Backends are imported lazily, so a worker without JAX can still run ``numpy``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import TYPE_CHECKING

from faasctl.exceptions import MissingExtra

if TYPE_CHECKING:
    from faasctl.backends.base import Backend

__all__ = ["BACKENDS", "get_backend"]

BACKENDS = ("numpy", "jax", "auto")

_cache: dict[str, Backend] = {}

log = logging.getLogger(__name__)


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (one instance per process, so its caches persist)."""
    if name == "auto":
        try:
            return get_backend("jax")
        except MissingExtra:
            return get_backend("numpy")
        except ImportError as err:  # JAX present but broken (e.g. a jaxlib that does not match)
            log.warning("the jax backend does not import (%s); using numpy", err)
            return get_backend("numpy")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name not in _cache:
        if name == "jax" and importlib.util.find_spec("jax") is None:
            raise MissingExtra("jax", "jax")
        module = importlib.import_module(f"faasctl.backends.{name}")
        _cache[name] = module.backend()
    return _cache[name]
