"""Pallets: a background-only workspace and its signal patches; reading, patching and inspecting them.

`load` reads pallets (folders, archives, both HEPData layouts), `patching` applies a patch's JSON Patch
operations, `inspection` describes a pallet's regions, patches and model structures.
"""

from faasctl.pallets.load import Pallet, Patch, apply_patch, load_pallet, workspace_digest

__all__ = ["Pallet", "Patch", "apply_patch", "load_pallet", "workspace_digest"]
