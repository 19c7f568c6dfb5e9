"""faasctl: fitting as a service for HEP facilities.

Scan pyhf pallets (a background-only workspace plus a patchset of signal hypotheses) on
local workers, Slurm/PBS/Kubernetes sites or Globus Compute (formerly funcX) endpoints.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
