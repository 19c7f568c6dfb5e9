"""Pallets: a background-only workspace and its signal patches; reading, patching and inspecting them.

`load` reads pallets (folders, archives, both HEPData layouts), `patching` applies a patch's JSON Patch
operations (`apply_patch`, the one way to patch a workspace), `inspection` describes a pallet's regions,
patches and model structures.
"""

from faasctl.pallets.load import Pallet, Patch, load_pallet, workspace_digest
from faasctl.pallets.patching import apply_patch

__all__ = ["Pallet", "Patch", "apply_patch", "load_pallet", "workspace_digest"]
