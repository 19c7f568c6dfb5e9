"""Pallets: a background-only workspace plus the signal patches that turn it into hypotheses.

A pallet is read from a folder holding ``BkgOnly.json`` and ``patchset.json`` (each may be
gzip-compressed), or from a ``.tar.gz`` of such a folder as HEPData publishes it. Archives
are read in memory: nothing is unpacked to disk.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jsonpatch
import jsonpointer

from faasctl.exceptions import PalletError, PatchError

__all__ = ["Patch", "Pallet", "load_pallet", "MODIFIER_SETTINGS", "workspace_digest"]

log = logging.getLogger(__name__)

#: The interpolation codes of the published study (and of ATLAS likelihoods in general).
MODIFIER_SETTINGS: dict[str, dict[str, str]] = {
    "normsys": {"interpcode": "code4"},
    "histosys": {"interpcode": "code4p"},
}

BACKGROUND_NAMES = ("BkgOnly.json", "BkgOnly.json.gz", "bkgonly.json", "bkgonly.json.gz")
PATCHSET_NAMES = ("patchset.json", "patchset.json.gz")
#: Largest member read from an archive (a guard against decompression bombs).
MAX_MEMBER_BYTES = 1 << 30


@dataclass(frozen=True)
class Patch:
    """One signal hypothesis: a JSON Patch to apply to the background workspace."""

    name: str
    values: tuple[float, ...]
    operations: list[dict[str, Any]] = field(repr=False)


@dataclass
class Pallet:
    """A background workspace and its patches, read and validated."""

    source: str
    background: dict[str, Any] = field(repr=False)
    patches: dict[str, Patch] = field(repr=False)
    labels: list[str]
    digest: str
    background_file: str = "BkgOnly.json"
    patchset_file: str = "patchset.json"
    region: str | None = None

    def __len__(self) -> int:
        return len(self.patches)

    def select(self, names: Sequence[str] | None = None) -> list[Patch]:
        """The patches named, in the order given (all patches when ``names`` is empty).

        Raises:
            PatchError: a name is not in the pallet; the message suggests close names.
        """
        if not names:
            return list(self.patches.values())
        unknown = [n for n in names if n not in self.patches]
        if unknown:
            import difflib

            hints = []
            for n in unknown:
                close = difflib.get_close_matches(n, self.patches, n=3)
                hints.append(f"{n!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            raise PatchError(
                f"{self.patchset_file}: no patch named {'; '.join(hints)}; "
                f"the pallet has {len(self.patches)} patches (faasctl pallet inspect lists them)"
            )
        return [self.patches[n] for n in dict.fromkeys(names)]

    def workspace_spec(self, patch: Patch) -> dict[str, Any]:
        """The background workspace with ``patch`` applied.

        Raises:
            PatchError: the patch does not apply (a path that does not exist, a failed test op).
        """
        return apply_patch(self.background, patch, where=self.patchset_file)


def apply_patch(background: Mapping[str, Any], patch: Patch, *, where: str = "patchset") -> dict[str, Any]:
    """Apply ``patch`` to a copy of ``background``; raise `PatchError` naming the patch and op."""
    try:
        return jsonpatch.apply_patch(copy.deepcopy(dict(background)), patch.operations)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError) as err:
        raise PatchError(f"{where}: patch {patch.name!r} does not apply to the background: {err}") from err


def workspace_digest(spec: Mapping[str, Any]) -> str:
    """The sha256 digest pyhf's patchsets record for their background workspace."""
    import pyhf.utils

    return str(pyhf.utils.digest(spec, algorithm="sha256"))


# --- reading files from folders and archives -------------------------------------------------


class _Tree:
    """Read-only view of the files of a pallet source (a folder or an archive)."""

    def __init__(self, label: str, files: dict[str, Any]) -> None:
        self.label = label
        self._files = files  # relative posix path -> Path or bytes

    def names(self) -> list[str]:
        return sorted(self._files)

    def describe(self, name: str) -> str:
        return f"{self.label}:{name}" if self.label.endswith((".tar.gz", ".tgz", ".tar")) else str(
            Path(self.label) / name
        )

    def read(self, name: str) -> bytes:
        item = self._files[name]
        data = item.read_bytes() if isinstance(item, Path) else item
        if name.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as err:
                raise PalletError(f"{self.describe(name)}: not a valid gzip file: {err}") from err
        return data

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except json.JSONDecodeError as err:
            raise PalletError(
                f"{self.describe(name)}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
            ) from err
        except UnicodeDecodeError as err:
            raise PalletError(f"{self.describe(name)}: not a text file: {err}") from err


def _folder_tree(path: Path, depth: int = 3) -> _Tree:
    files: dict[str, Any] = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if len(rel.parts) <= depth and p.is_file() and not p.is_symlink():
            files[rel.as_posix()] = p
    return _Tree(str(path), files)


def _archive_tree(path: Path) -> _Tree:
    """Read every regular member of an archive into memory, refusing unsafe members."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name
                pure = PurePosixPath(name)
                if pure.is_absolute() or ".." in pure.parts:
                    raise PalletError(f"{path}: refusing archive member {name!r}: path leaves the archive")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise PalletError(f"{path}: refusing archive member {name!r}: not a regular file")
                if member.size > MAX_MEMBER_BYTES:
                    raise PalletError(
                        f"{path}: refusing archive member {name!r}: {member.size} bytes is over the "
                        f"{MAX_MEMBER_BYTES} byte limit"
                    )
                fobj = tar.extractfile(member)
                assert fobj is not None
                files[pure.as_posix().removeprefix("./")] = fobj.read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise PalletError(f"{path}: not a readable tar archive: {err}") from err
    return _Tree(str(path), files)


def _open_tree(path: Path) -> _Tree:
    if not path.exists():
        raise PalletError(f"{path}: no such file or folder")
    if path.is_dir():
        return _folder_tree(path)
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return _archive_tree(path)
    raise PalletError(
        f"{path}: not a pallet; give a folder with BkgOnly.json and patchset.json, or a .tar.gz of one"
    )


def _find(tree: _Tree, candidates: Iterable[str], region: str | None) -> list[str]:
    wanted = set(candidates)
    found = [n for n in tree.names() if PurePosixPath(n).name in wanted]
    if region is not None:
        found = [n for n in found if region in PurePosixPath(n).parent.parts]
    return found


def _pick_one(tree: _Tree, kind: str, found: list[str], region: str | None) -> str:
    if not found:
        where = f" in region {region!r}" if region else ""
        raise PalletError(f"{tree.label}: no {kind} found{where}")
    if len(found) > 1:
        regions = sorted({str(PurePosixPath(n).parent) for n in found})
        raise PalletError(
            f"{tree.label}: holds several regions, pick one with --region: {', '.join(regions)}"
        )
    return found[0]


def _validate(spec: Any, schema: str, where: str) -> None:
    import pyhf.exceptions
    import pyhf.schema

    try:
        pyhf.schema.validate(spec, schema)
    except pyhf.exceptions.InvalidSpecification as err:
        message = err.parent.message if hasattr(err, "parent") else str(err)
        raise PalletError(f"{where}: invalid {schema.removesuffix('.json')} at {err.path or '(top)'}: {message}") from err


def load_pallet(path: str | Path, *, region: str | None = None, ignore_digest: bool = False) -> Pallet:
    """Read and validate a pallet.

    Args:
        path: a folder with ``BkgOnly.json`` + ``patchset.json`` (plain or ``.gz``), or a ``.tar.gz``.
        region: the sub-folder to use when the source holds several regions.
        ignore_digest: accept a patchset whose recorded background digest does not match.

    Returns:
        The validated `Pallet`.

    Raises:
        PalletError: a missing file, invalid JSON or schema, or a digest mismatch; the
            message names the file and, for schema errors, the field.
    """
    path = Path(path)
    tree = _open_tree(path)
    bkg_name = _pick_one(tree, "BkgOnly.json", _find(tree, BACKGROUND_NAMES, region), region)
    region_dir = str(PurePosixPath(bkg_name).parent)
    ps_found = [n for n in _find(tree, PATCHSET_NAMES, region) if str(PurePosixPath(n).parent) == region_dir]
    ps_name = _pick_one(tree, "patchset.json", ps_found, region)

    background = tree.read_json(bkg_name)
    _validate(background, "workspace.json", tree.describe(bkg_name))
    patchset = tree.read_json(ps_name)
    _validate(patchset, "patchset.json", tree.describe(ps_name))

    digest = workspace_digest(background)
    expected = patchset["metadata"]["digests"].get("sha256")
    if expected is not None and expected != digest:
        message = (
            f"{tree.describe(ps_name)}: metadata.digests.sha256 is {expected} but the background "
            f"{tree.describe(bkg_name)} has digest {digest}: the patches were made for another workspace"
        )
        if not ignore_digest:
            raise PalletError(message + " (--ignore-digest to fit anyway)")
        log.warning(message)

    patches: dict[str, Patch] = {}
    for i, entry in enumerate(patchset["patches"]):
        meta = entry["metadata"]
        if meta["name"] in patches:
            raise PalletError(f"{tree.describe(ps_name)}: patches[{i}].metadata.name {meta['name']!r} is not unique")
        patches[meta["name"]] = Patch(meta["name"], tuple(float(v) for v in meta["values"]), entry["patch"])

    return Pallet(
        source=str(path),
        background=background,
        patches=patches,
        labels=list(patchset["metadata"]["labels"]),
        digest=digest,
        background_file=tree.describe(bkg_name),
        patchset_file=tree.describe(ps_name),
        region=None if region_dir == "." else region_dir,
    )


def iter_specs(pallet: Pallet, patches: Sequence[Patch]) -> Iterator[tuple[Patch, dict[str, Any]]]:
    """Each patch with its patched workspace spec."""
    for patch in patches:
        yield patch, pallet.workspace_spec(patch)
