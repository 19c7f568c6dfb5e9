"""How many tasks an executor runs at once: `FitClient` keeps that many (and a few more) in flight."""

from __future__ import annotations

import concurrent.futures as cf
import math
from typing import Any

__all__ = ["executor_capacity", "htex_capacity"]


def executor_capacity(executor: cf.Executor) -> int | None:
    """How many tasks ``executor`` runs at once, when it says; None when it does not.

    Understands ``max_workers`` / ``_max_workers`` (the standard pools, `EngineExecutor`)
    and a parsl ``HighThroughputExecutor`` behind `faasctl.executors.parsl.ParslExecutor`.
    """
    for attr in ("max_workers", "_max_workers"):
        n = getattr(executor, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    dfk = getattr(executor, "dfk", None)
    if dfk is not None:
        return htex_capacity(dfk.executors.get(getattr(executor, "label", None)))
    return None


def htex_capacity(htex: Any) -> int | None:
    """Worker slots of a parsl ``HighThroughputExecutor`` when its size is fixed, else None."""
    per_node = getattr(htex, "max_workers_per_node", None)
    provider = getattr(htex, "provider", None)
    if not isinstance(per_node, (int, float)) or not math.isfinite(per_node) or provider is None:
        return None
    blocks = getattr(provider, "max_blocks", 1) or 1
    nodes = getattr(provider, "nodes_per_block", 1) or 1
    return max(1, int(per_node) * int(blocks) * int(nodes))
