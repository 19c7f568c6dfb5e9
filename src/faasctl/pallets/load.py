"""Pallets: a background-only workspace plus the signal patches that turn it into hypotheses.

HEPData publishes likelihoods in two layouts, and both are read here:

``patchset``
    ``BkgOnly.json`` + ``patchset.json`` (pyhf's patchset schema: names, values, labels and
    the background's digest), e.g. ATLAS SUSY-2019-08 (1Lbb).
``patch files``
    ``BkgOnly.json`` + one ``patch.NAME.json`` per signal point, each a plain JSON Patch
    list, with the point's values only in the file name (``patch.DS_400_40_Staus.json`` is
    the point (400, 40)), e.g. ATLAS SUSY-2018-04 (staus) and SUSY-2018-31 (sbottom).

Either may sit in a folder, in several region folders of one record (``Region-combined/``,
``RegionA/``...), gzip-compressed (``.json.gz``), and in a ``.tar.gz`` or ``.zip`` exactly as
downloaded, possibly inside another archive. Archives are untrusted input: they are read in
memory (nothing is unpacked to disk), and links, device files, paths that leave the archive
and members that unpack to more than `MAX_MEMBER_BYTES` are refused.

Example:
    >>> from faasctl.pallets.load import load_pallet
    >>> pallet = load_pallet("SUSY-2018-04_likelihoods.tar.gz", region="Region-combined")  # doctest: +SKIP
    >>> pallet.layout, len(pallet), pallet.patches["DS_400_40_Staus"].values  # doctest: +SKIP
    ('patch files', 57, (400.0, 40.0))
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import logging
import os
import re
import stat
import tarfile
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

from faasctl.exceptions import PalletError, PatchError
from faasctl.pallets.patching import apply_patch

__all__ = [
    "Patch",
    "StoredPatch",
    "Pallet",
    "load_pallet",
    "values_from_name",
    "workspace_digest",
    "LAYOUT_PATCHSET",
    "LAYOUT_PATCH_FILES",
    "pack_operations",
    "unpack_operations",
]

log = logging.getLogger(__name__)


LAYOUT_PATCHSET = "patchset"
LAYOUT_PATCH_FILES = "patch files"

BACKGROUND_NAMES = ("BkgOnly.json", "BkgOnly.json.gz", "bkgonly.json", "bkgonly.json.gz")
PATCHSET_NAMES = ("patchset.json", "patchset.json.gz")
#: ``patch.NAME.json`` (staus, sbottom) or ``patch_NAME.json`` (early 1Lbb), maybe gzipped.
PATCH_FILE_RE = re.compile(r"^patch[._](?P<name>.+?)\.json(?:\.gz)?$")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip")

#: Largest file read from a pallet, after decompression (a guard against decompression bombs).
MAX_MEMBER_BYTES = 1 << 30
#: Most bytes unpacked from one archive in all, nested archives included (folders: no total cap).
MAX_TOTAL_BYTES = 4 << 30
#: Most members one archive may hold (tar headers alone can exhaust memory).
MAX_MEMBERS = 100_000
#: How deep archives may nest (a HEPData download holding the likelihood archive is depth 2).
MAX_NESTING = 2
#: How deep a folder is searched for ``BkgOnly.json`` (record/analysis/region/file).
MAX_FOLDER_DEPTH = 4

_CHUNK = 1 << 20


def pack_operations(operations: Any) -> bytes:
    """JSON Patch operations as they travel and are kept: canonical JSON (sorted keys, no spaces), zlib-compressed.

    A tenth of the pickled size, and the canonical text also gives the patch's content digest
    (`faasctl.scan.results.patch_digest`) without parsing the operations again.
    """
    import zlib

    return zlib.compress(json.dumps(operations, sort_keys=True, separators=(",", ":")).encode(), 1)


def unpack_operations(packed: bytes) -> Any:
    """The operations `pack_operations` packed."""
    import zlib

    return json.loads(zlib.decompress(packed))


@dataclass(frozen=True)
class Patch:
    """One signal hypothesis: a JSON Patch to apply to the background workspace.

    Attributes:
        name: the patch's name (``patchset.json`` metadata, or the ``patch.NAME.json`` file name).
        values: the signal point's parameters (e.g. masses), ordered as the pallet's labels.
        operations: the JSON Patch (RFC 6902) operations.
        source: where the patch was read from, for error messages (not compared).
    """

    name: str
    values: tuple[float, ...]
    operations: list[dict[str, Any]] = field(repr=False)
    source: str | None = field(default=None, repr=False, compare=False)

    def loaded(self) -> Patch:
        """This patch with its operations in memory (itself, unless it is a `StoredPatch`)."""
        return self

    def packed(self) -> bytes:
        """The operations packed (`pack_operations`): what a task carries to a worker."""
        return pack_operations(self.operations)

    def check(self, background: Mapping[str, Any], where: str) -> None:
        """Raise `PatchError` if the patch does not apply to ``background`` (``where``: its file, for the message)."""
        apply_patch(background, self, shared=True, where=where)


class StoredPatch(Patch):
    """A `Patch` whose operations stay where the pallet keeps them until asked for.

    Operations are read again at each access of ``operations`` (from the patch file, or from
    the spool a streamed ``patchset.json`` was copied into) and not kept, so a pallet of 10^5
    patches holds only names and values, and a scan holds the operations of the patches in
    flight. Call `loaded` to read them once for several uses.

    A spooled patch is kept packed (``packed``: a scan sends it on without parsing it) and was
    checked against the background while the patchset was streamed (``problem``: why it does
    not apply, or None), so a scan need not parse it either before sending it.
    """

    _read: Callable[[], list[dict[str, Any]]]
    _packed: Callable[[], bytes] | None
    #: set when the patch was checked against the background at read: None, or why it does not apply
    problem: str | None
    checked: bool

    def __init__(self, name: str, values: tuple[float, ...], *, source: str,
                 read: Callable[[], list[dict[str, Any]]], packed: Callable[[], bytes] | None = None,
                 checked: bool = False, problem: str | None = None) -> None:
        for key, value in (("name", name), ("values", values), ("source", source), ("_read", read),
                           ("_packed", packed), ("checked", checked), ("problem", problem)):
            object.__setattr__(self, key, value)

    @property  # type: ignore[override]
    def operations(self) -> list[dict[str, Any]]:
        return self._read()

    def loaded(self) -> Patch:
        return Patch(self.name, self.values, self.operations, self.source)

    def packed(self) -> bytes:
        return self._packed() if self._packed is not None else super().packed()

    def check(self, background: Mapping[str, Any], where: str) -> None:
        if not self.checked:
            super().check(background, where)
        elif self.problem is not None:
            raise PatchError(self.problem)

    def __reduce__(self) -> tuple[Any, ...]:
        # to another process as a plain Patch: the spool's open file does not travel
        loaded = self.loaded()
        return (Patch, (loaded.name, loaded.values, loaded.operations, loaded.source))


@dataclass
class Pallet:
    """A background workspace and its patches, read and validated.

    Attributes:
        source: the path given to `load_pallet`.
        background: the background-only workspace spec.
        patches: the signal patches by name.
        labels: what each of a patch's values is (e.g. ``["m1", "m2"]``).
        digest: the sha256 digest of ``background`` (as pyhf's patchsets record it).
        background_file: where the background was read from.
        patchset_file: where the patches were read from (``patchset.json``, or the
            ``patch.*.json`` files of the region folder).
        region: the region folder chosen; ``None`` when the source holds only one.
        layout: `LAYOUT_PATCHSET` or `LAYOUT_PATCH_FILES`.
        regions: every region the source holds.
        recorded_digest: the background digest the patchset records (``None`` in the patch
            files layout, which records none).
    """

    source: str
    background: dict[str, Any] = field(repr=False)
    patches: dict[str, Patch] = field(repr=False)
    labels: list[str]
    digest: str
    background_file: str = "BkgOnly.json"
    patchset_file: str = "patchset.json"
    region: str | None = None
    layout: str = LAYOUT_PATCHSET
    regions: list[str] = field(default_factory=list)
    recorded_digest: str | None = None

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

    def workspace_spec(self, patch: Patch, *, shared: bool = False) -> dict[str, Any]:
        """The background workspace with ``patch`` applied (`apply_patch`; ``shared``: read-only, no deep copy).

        Raises:
            PatchError: the patch does not apply (a path that does not exist, a failed test op).
        """
        return apply_patch(self.background, patch, shared=shared, where=self.patchset_file)


def workspace_digest(spec: Mapping[str, Any]) -> str:
    """The sha256 digest pyhf's patchsets record for their background workspace.

    The same as ``pyhf.utils.digest(spec, "sha256")``, without importing pyhf (and scipy)
    into a client that does not fit.
    """
    import hashlib

    return hashlib.sha256(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode("utf8")).hexdigest()


_NUMBER_RE = re.compile(r"^-?\d+(?:[.p]\d+)?$")


def values_from_name(name: str) -> tuple[float, ...]:
    """The numbers in a signal point's name, in order.

    Tokens are separated by ``_`` (or ``-``); ``1p5`` reads as 1.5, as in many ATLAS sample names.

    Example:
        >>> values_from_name("DS_400_40_Staus")
        (400.0, 40.0)
        >>> values_from_name("C1N2_Wh_hbb_1000_0")
        (1000.0, 0.0)
        >>> values_from_name("sbottom_1p5_60")
        (1.5, 60.0)
    """
    return tuple(float(t.replace("p", ".")) for t in re.split(r"[_-]", name) if _NUMBER_RE.match(t))


# --- reading files from folders and archives -------------------------------------------------


def _is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _is_wanted(name: str) -> bool:
    """Whether a pallet needs this file (others, e.g. READMEs and plots, are never read)."""
    base = PurePosixPath(name).name
    return base in BACKGROUND_NAMES or base in PATCHSET_NAMES or bool(PATCH_FILE_RE.match(base))


class _Budget:
    """Counts the bytes unpacked from one source, so that nested archives share one cap."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.total = 0

    def check_room(self, n: int, name: str) -> None:
        """Refuse early, from a declared size, what `charge` would refuse after decompressing."""
        if self.total + n > MAX_TOTAL_BYTES:
            raise PalletError(
                f"{self.where}: refusing archive at {name!r}: it declares more than {MAX_TOTAL_BYTES} "
                "bytes in all (a decompression bomb?)"
            )

    def charge(self, n: int, name: str) -> None:
        self.total += n
        if self.total > MAX_TOTAL_BYTES:
            raise PalletError(
                f"{self.where}: refusing archive at member {name!r}: it unpacks to more than "
                f"{MAX_TOTAL_BYTES} bytes in all (a decompression bomb?)"
            )


def _read_limited(fobj: IO[bytes], where: str, budget: _Budget | None) -> bytes:
    """Read ``fobj`` to the end, counting bytes as they come rather than trusting any header."""
    chunks: list[bytes] = []
    size = 0
    while chunk := fobj.read(_CHUNK):
        size += len(chunk)
        if size > MAX_MEMBER_BYTES:
            raise PalletError(
                f"{where}: refusing: unpacks to more than {MAX_MEMBER_BYTES} bytes (a decompression bomb?)"
            )
        if budget is not None:
            budget.charge(len(chunk), where)
        chunks.append(chunk)
    return b"".join(chunks)


def _require_regular(item: Path | IO[bytes], where: str) -> None:
    """Refuse a FIFO, device or socket (read without bound, or blocking) by its ``stat``, before reading."""
    mode = (os.stat(item) if isinstance(item, Path) else os.fstat(item.fileno())).st_mode
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file"
        raise PalletError(f"{where}: refusing: {kind}, not a regular file")


class _LimitedStream:
    """A binary stream that counts what it yields, and refuses past `MAX_MEMBER_BYTES` (see `_read_limited`)."""

    def __init__(self, raw: IO[bytes], where: str, budget: _Budget | None, *, gz: bool) -> None:
        self.raw, self.where, self.budget, self.gz = raw, where, budget, gz
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        try:
            chunk = self.raw.read(n)
        except (OSError, EOFError) as err:
            raise PalletError(f"{self.where}: not a valid gzip file: {err}" if self.gz
                              else f"{self.where}: cannot read: {err}") from err
        self.size += len(chunk)
        if self.size > MAX_MEMBER_BYTES:
            raise PalletError(f"{self.where}: refusing: unpacks to more than {MAX_MEMBER_BYTES} bytes (a decompression bomb?)")
        if self.budget is not None:
            self.budget.charge(len(chunk), self.where)
        return chunk


class _NonFinite(str):
    """What a ``NaN`` or ``Infinity`` literal parses to, so that the error can name its field."""


def _json_loads(data: bytes) -> tuple[Any, bool]:
    """JSON with ``NaN`` / ``Infinity`` kept as `_NonFinite` markers; whether any occurred."""
    seen: list[str] = []

    def constant(token: str) -> _NonFinite:
        seen.append(token)
        return _NonFinite(token)

    return json.loads(data, parse_constant=constant), bool(seen)


def _find_non_finite(doc: Any, path: str = "") -> tuple[str, str] | None:
    """The dotted path and token of the first `_NonFinite` in ``doc``."""
    if isinstance(doc, _NonFinite):
        return path or "(top)", str(doc)
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found = _find_non_finite(value, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


class _Tree:
    """Read-only view of the pallet files of a source (a folder or an archive)."""

    def __init__(self, label: str, files: dict[str, Path | bytes], *, archive: bool, budget: _Budget | None = None) -> None:
        self.label = label
        self.archive = archive
        self._files = files  # relative posix path -> Path (folder) or bytes (archive)
        # An archive is unpacked in memory: all it unpacks counts against one cap. A folder's files are
        # read one at a time and let go, each under MAX_MEMBER_BYTES: 10^5 gzip patches may unpack to more.
        self._budget: _Budget | None = budget if budget is not None else _Budget(label) if archive else None

    def stop_counting(self) -> None:
        """Count no more reads against the unpacking budget: a read pallet reads its patches again as a scan runs."""
        self._budget = None

    def names(self) -> list[str]:
        return sorted(self._files)

    def describe(self, name: str) -> str:
        if name in ("", "."):
            return self.label
        return f"{self.label}:{name}" if self.archive else str(Path(self.label) / name)

    def read(self, name: str) -> bytes:
        item = self._files[name]
        where = self.describe(name)
        if isinstance(item, Path):
            try:
                _require_regular(item, where)
                # O_NONBLOCK: a FIFO swapped in after the check must not block the open;
                # the size is counted as read, not trusted from st_size (/dev/zero says 0)
                fd = os.open(item, os.O_RDONLY | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as fh:
                    _require_regular(fh, where)
                    data = _read_limited(fh, where, None)
            except OSError as err:
                raise PalletError(f"{where}: cannot read: {err.strerror or err}") from err
        else:
            data = item
        if name.endswith(".gz"):
            try:
                with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                    data = _read_limited(gz, where, self._budget)
            except (OSError, EOFError, gzip.BadGzipFile) as err:
                raise PalletError(f"{where}: not a valid gzip file: {err}") from err
        return data

    @contextlib.contextmanager
    def open(self, name: str, *, count: bool = True) -> Iterator[_LimitedStream]:
        """``name`` as a binary stream (decompressed), under the same limits as `read` (``count``: against the budget)."""
        item = self._files[name]
        where = self.describe(name)
        with contextlib.ExitStack() as stack:
            if isinstance(item, Path):
                try:
                    _require_regular(item, where)
                    fh: IO[bytes] = stack.enter_context(os.fdopen(os.open(item, os.O_RDONLY | os.O_NONBLOCK), "rb"))
                    _require_regular(fh, where)
                except OSError as err:
                    raise PalletError(f"{where}: cannot read: {err.strerror or err}") from err
            else:
                fh = io.BytesIO(item)
            gz = name.endswith(".gz")
            if gz:
                fh = stack.enter_context(gzip.GzipFile(fileobj=fh))
            yield _LimitedStream(fh, where, self._budget if gz and count else None, gz=gz)

    def read_json(self, name: str) -> Any:
        """The parsed JSON of ``name``; numbers must be finite (JSON has no NaN, Python's parser allows it)."""
        try:
            doc, non_finite = _json_loads(self.read(name))
            if non_finite:
                field_path, token = _find_non_finite(doc) or ("(unknown)", "NaN")
                raise PalletError(f"{self.describe(name)}: {field_path} is {token}: numbers must be finite")
            return doc
        except json.JSONDecodeError as err:
            raise PalletError(
                f"{self.describe(name)}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
            ) from err
        except UnicodeDecodeError as err:
            raise PalletError(f"{self.describe(name)}: not a text file: {err}") from err


def _folder_tree(path: Path) -> _Tree:
    files: dict[str, Path | bytes] = {}
    for root, dirs, names in os.walk(path):
        rel = Path(root).relative_to(path)
        if len(rel.parts) >= MAX_FOLDER_DEPTH - 1:
            dirs[:] = []
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if _is_wanted(name):
                files[(rel / name).as_posix()] = Path(root) / name
    return _Tree(str(path), files, archive=False)


def _refuse(where: str, name: str, why: str) -> PalletError:
    return PalletError(f"{where}: refusing archive member {name!r}: {why}")


def _safe_name(where: str, name: str) -> str:
    """The member's relative posix path; refuse absolute paths and ``..``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _refuse(where, name, "absolute path")
    if ".." in pure.parts:
        raise _refuse(where, name, "path leaves the archive ('..')")
    return pure.as_posix()


def _tar_members(fobj: IO[bytes], where: str, budget: _Budget, depth: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        # Stream mode ("r|*"): one pass, no seeking, works for nested archives read from memory.
        with tarfile.open(fileobj=fobj, mode="r|*") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise PalletError(f"{where}: refusing archive: more than {MAX_MEMBERS} members")
                name = _safe_name(where, member.name)
                if member.issym():
                    raise _refuse(where, member.name, f"symbolic link (to {member.linkname!r})")
                if member.islnk():
                    raise _refuse(where, member.name, f"hard link (to {member.linkname!r})")
                if member.ischr() or member.isblk():
                    raise _refuse(where, member.name, "device file")
                if member.isfifo():
                    raise _refuse(where, member.name, "FIFO")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise _refuse(where, member.name, "not a regular file")
                if member.issparse():
                    raise _refuse(where, member.name, "sparse file")
                if member.size > MAX_MEMBER_BYTES:
                    raise _refuse(where, member.name, f"{member.size} bytes is over the {MAX_MEMBER_BYTES} byte limit")
                wanted = _is_wanted(name) or (_is_archive_name(name) and depth < MAX_NESTING)
                if not wanted:
                    budget.charge(member.size, member.name)  # tar must still decompress past it
                    continue
                if name in files:
                    raise _refuse(where, member.name, "appears twice")
                budget.check_room(member.size, member.name)  # before decompressing it
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file
                files[name] = _read_limited(extracted, f"{where}:{name}", budget)
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise PalletError(f"{where}: not a readable tar archive: {err}") from err
    return files


def _zip_members(fobj: IO[bytes], where: str, budget: _Budget, depth: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(fobj) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise PalletError(f"{where}: refusing archive: more than {MAX_MEMBERS} members")
            # the central directory declares every size: refuse before decompressing anything
            # (sizes are still counted as read, in case the directory lies)
            declared = sum(i.file_size for i in infos if _is_wanted(i.filename) or _is_archive_name(i.filename))
            budget.check_room(declared, f"{len(infos)} members")
            for info in infos:
                name = _safe_name(where, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise _refuse(where, info.filename, "symbolic link")
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    raise _refuse(where, info.filename, "device file")
                if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                    raise _refuse(where, info.filename, "not a regular file")
                if info.is_dir():
                    continue
                if info.file_size > MAX_MEMBER_BYTES:
                    raise _refuse(where, info.filename, f"{info.file_size} bytes is over the {MAX_MEMBER_BYTES} byte limit")
                if not (_is_wanted(name) or (_is_archive_name(name) and depth < MAX_NESTING)):
                    continue
                if info.flag_bits & 0x1:
                    raise _refuse(where, info.filename, "encrypted")
                if name in files:
                    raise _refuse(where, info.filename, "appears twice")
                with zf.open(info) as member:
                    files[name] = _read_limited(member, f"{where}:{name}", budget)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as err:
        raise PalletError(f"{where}: not a readable zip archive: {err}") from err
    return files


def _archive_files(data: IO[bytes], where: str, budget: _Budget, *, is_zip: bool, depth: int = 1) -> dict[str, bytes]:
    """The pallet files of an archive, with nested archives' files under ``member/``."""
    files = (_zip_members if is_zip else _tar_members)(data, where, budget, depth)
    for name in [n for n in files if _is_archive_name(n)]:
        blob = files.pop(name)
        inner = _archive_files(
            io.BytesIO(blob), f"{where}:{name}", budget, is_zip=name.lower().endswith(".zip"), depth=depth + 1
        )
        files.update({f"{name}/{n}": content for n, content in inner.items()})
    return files


def _open_tree(path: Path) -> _Tree:
    if not path.exists():
        raise PalletError(f"{path}: no such file or folder")
    if path.is_dir():
        return _folder_tree(path)
    budget = _Budget(str(path))
    try:
        _require_regular(path, str(path))
        is_zip = zipfile.is_zipfile(path)
        is_tar = not is_zip and tarfile.is_tarfile(path)
    except OSError as err:
        raise PalletError(f"{path}: cannot read: {err.strerror or err}") from err
    if not (is_zip or is_tar):
        hint = " (give the folder that holds it)" if _is_wanted(path.name) else ""
        raise PalletError(
            f"{path}: not a pallet{hint}; give a folder with BkgOnly.json and patchset.json or "
            "patch.NAME.json files, or the .tar.gz as downloaded from HEPData"
        )
    with path.open("rb") as fh:
        files = _archive_files(fh, str(path), budget, is_zip=is_zip)
    return _Tree(str(path), dict(files), archive=True, budget=budget)


# --- regions ---------------------------------------------------------------------------------


@dataclass
class _Region:
    folder: str  # relative posix path in the source; "." for the top
    background: str
    patchset: str | None = None
    patch_files: list[str] = field(default_factory=list)
    name: str = ""


def _regions(tree: _Tree) -> list[_Region]:
    """Every folder holding a background workspace, with the patch files beside it."""
    by_folder: dict[str, _Region] = {}
    for rank, bkg_name in enumerate(BACKGROUND_NAMES):
        for name in tree.names():
            pure = PurePosixPath(name)
            folder = pure.parent.as_posix()
            if pure.name == bkg_name and folder not in by_folder:
                by_folder[folder] = _Region(folder, name)
            elif pure.name == bkg_name:
                log.info("%s: using %s, not %s", tree.label, by_folder[folder].background, name)
    for name in tree.names():
        pure = PurePosixPath(name)
        region = by_folder.get(pure.parent.as_posix())
        if region is None:
            continue
        if pure.name in PATCHSET_NAMES and region.patchset is None:
            region.patchset = name
        elif PATCH_FILE_RE.match(pure.name):
            region.patch_files.append(name)
    regions = sorted(by_folder.values(), key=lambda r: r.folder)
    # Name regions by what tells them apart: "Region-combined", not "record/Region-combined".
    parts = [PurePosixPath(r.folder).parts for r in regions]
    common = 0
    if len(regions) > 1:
        while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
            common += 1
    for region, p in zip(regions, parts):
        region.name = "/".join(p[common:]) or "."
    return regions


def _choose_region(tree: _Tree, regions: list[_Region], wanted: str | None) -> _Region:
    if not regions:
        found = [n for n in tree.names() if PurePosixPath(n).name in PATCHSET_NAMES or PATCH_FILE_RE.match(PurePosixPath(n).name)]
        beside = f" (found {found[0]} without it)" if found else ""
        raise PalletError(f"{tree.label}: no BkgOnly.json found{beside}")
    names = ", ".join(r.name for r in regions)
    if wanted is None:
        if len(regions) > 1:
            raise PalletError(f"{tree.label}: holds several regions, pick one with --region: {names}")
        return regions[0]
    wanted = wanted.strip("/")
    if len(regions) == 1 and regions[0].folder == "." and wanted == Path(tree.label).name:
        return regions[0]  # the folder given is the region asked for
    for test in (
        lambda r: r.name == wanted or r.folder == wanted,
        lambda r: PurePosixPath(r.folder).name == wanted,
        lambda r: wanted in PurePosixPath(r.folder).parts,
    ):
        matches = [r for r in regions if test(r)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise PalletError(
                f"{tree.label}: --region {wanted!r} matches several regions: {', '.join(r.name for r in matches)}"
            )
    raise PalletError(f"{tree.label}: no region {wanted!r}; regions: {names}")


@functools.cache
def _pyhf_version() -> str:
    """pyhf's version (looked up once: a pallet of patch files asks once per file)."""
    from importlib import metadata

    try:
        return metadata.version("pyhf")
    except metadata.PackageNotFoundError as err:
        raise LookupError("pyhf") from err


def _validated_marker(schema: str, where: str) -> Path | None:
    """A file that says ``where`` (a plain file, unchanged since) passed ``schema`` before.

    Schema validation of a large workspace takes longer than reading it; a pallet read again
    (every scan of it, every resume) skips it. None where ``where`` is no file (an archive
    member) or the cache is off (``FAASCTL_VALIDATED_CACHE=0``).
    """
    import hashlib

    if os.environ.get("FAASCTL_VALIDATED_CACHE", "1") in ("0", ""):
        return None
    try:
        st = os.stat(where)
        identity = f"{schema} {os.path.realpath(where)} {st.st_size} {st.st_mtime_ns} pyhf {_pyhf_version()}"
    except (OSError, LookupError):
        return None
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "faasctl" / "validated"
    return root / hashlib.sha256(identity.encode()).hexdigest()


def _validated_before(schema: str, where: str) -> bool:
    """Whether ``where`` passed ``schema`` before and is unchanged since (see `_validated_marker`)."""
    marker = _validated_marker(schema, where)
    return marker is not None and marker.exists()


@functools.cache
def _schema_validator(schema: str) -> tuple[Any, threading.Lock]:
    """pyhf's validator of ``schema`` (as `pyhf.schema.validate` builds it), made once, with a lock.

    `pyhf.schema.validate` builds a new validator and reference resolver at each call, and the
    resolver walks pyhf's schema documents again for every ``$ref``: 5.3 ms per patch file of
    ``benchmarks/scale.py``, 0.7 ms with one validator that keeps its resolver's caches. Built
    with pyhf's own type checks (pyhf is pinned). The lock: a resolver keeps a scope stack while
    it validates, so one validator serves one thread at a time.
    """
    import jsonschema
    import pyhf.schema
    from pyhf.schema import variables
    from pyhf.schema.validator import _is_array_or_tensor, _is_number_or_tensor_subtype

    version = variables.SCHEMA_VERSION
    document = pyhf.schema.load_schema(str(Path(version).joinpath(schema)))
    resolver = jsonschema.RefResolver(
        base_uri=f"{Path(variables.schemas).joinpath(version).as_uri()}/", referrer=schema, store=variables.SCHEMA_CACHE
    )
    checker = jsonschema.Draft6Validator.TYPE_CHECKER.redefine("array", _is_array_or_tensor).redefine(
        "number", _is_number_or_tensor_subtype
    )
    validator = jsonschema.validators.extend(jsonschema.Draft6Validator, type_checker=checker)
    return validator(document, resolver=resolver, format_checker=None), threading.Lock()


def _check_schema(spec: Any, schema: str, where: str, *, index: int | None = None) -> None:
    """Check ``spec`` against pyhf's ``schema``; ``index``: ``spec`` is a patchset holding only its patch ``index``."""
    import jsonschema
    import pyhf.exceptions

    validator, lock = _schema_validator(schema)
    try:
        with lock:
            try:
                validator.validate(spec)
            except jsonschema.ValidationError as err:  # as pyhf.schema.validate raises it
                raise pyhf.exceptions.InvalidSpecification(err, schema) from None
    except pyhf.exceptions.InvalidSpecification as err:
        message = err.parent.message if hasattr(err, "parent") else str(err)
        if len(message) > 200:  # jsonschema quotes the whole failing instance
            message = message[:200] + "…"
        path = err.path or "(top)"
        if index is not None and path.startswith("patches[0]"):
            path = f"patches[{index}]" + path.removeprefix("patches[0]")
        raise PalletError(f"{where}: invalid {schema.removesuffix('.json')} at {path}: {message}") from err


def _mark_validated(schema: str, where: str) -> None:
    marker = _validated_marker(schema, where)
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:  # an unwritable cache only costs the validation next time
            pass


def _validate(spec: Any, schema: str, where: str) -> None:
    if _validated_before(schema, where):
        return
    _check_schema(spec, schema, where)
    _mark_validated(schema, where)


def _parse_labels(labels: str | Sequence[str] | None) -> list[str] | None:
    if labels is None:
        return None
    given = [s.strip() for s in labels.split(",")] if isinstance(labels, str) else [str(s).strip() for s in labels]
    if not given or any(not s for s in given):
        raise PalletError(f"--labels {','.join(given)!r}: give one non-empty name per value, separated by commas")
    twice = sorted({s for s in given if given.count(s) > 1})
    if twice:
        raise PalletError(f"--labels {','.join(given)!r}: {', '.join(twice)} given twice; each value needs its own name")
    return given


def _patch_values(entry: Mapping[str, Any], i: int, labels: Sequence[str], seen: Mapping[str, Any], where: str) -> tuple[float, ...]:
    """A patchset entry's values, checked: numbers, one per label, and a name not ``seen`` before."""
    meta = entry["metadata"]
    if meta["name"] in seen:
        raise PalletError(f"{where}: patches[{i}].metadata.name {meta['name']!r} is not unique")
    values = meta["values"]
    for j, v in enumerate(values):
        # pyhf's schema allows strings; a scan needs numbers (tables, the plot, the order)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise PalletError(f"{where}: patches[{i}].metadata.values[{j}] is {v!r}, not a number")
    if len(values) != len(labels):
        raise PalletError(
            f"{where}: patches[{i}].metadata.values has {len(values)} values but metadata.labels has "
            f"{len(labels)} ({', '.join(labels)})"
        )
    return tuple(float(v) for v in values)


def _patches_from_patchset(tree: _Tree, name: str, background: Mapping[str, Any]) -> tuple[dict[str, Patch], list[str], str | None]:
    """The patches of a ``patchset.json``, streamed (`_stream_patchset`); a file the streaming parser
    refuses (invalid JSON, ``NaN``) is parsed whole, for an error that names the place."""
    import ijson

    try:
        return _stream_patchset(tree, name, background)
    except ijson.JSONError:
        pass
    patchset = tree.read_json(name)  # raises the error, naming line and column or the field
    where = tree.describe(name)
    _validate(patchset, "patchset.json", where)
    labels = list(patchset["metadata"]["labels"])
    patches: dict[str, Patch] = {}
    for i, entry in enumerate(patchset["patches"]):
        values = _patch_values(entry, i, labels, patches, where)
        patches[entry["metadata"]["name"]] = Patch(entry["metadata"]["name"], values, entry["patch"], where)
    return patches, labels, patchset["metadata"]["digests"].get("sha256")


class _Spool:
    """Patches' operations, packed (`pack_operations`) in an unnamed temporary file and read back one at a time.

    What a streamed ``patchset.json`` keeps of its patches: disk, not memory (1Lbb's 14 MB of
    operations take ~1.5 MB); the file goes when the pallet does.
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="faasctl-patchset-")
        self._end = 0
        self._lock = threading.Lock()

    def put(self, operations: Any) -> Callable[[], bytes]:
        """Store ``operations``; a function that reads them back packed."""
        blob = pack_operations(operations)
        with self._lock:
            offset = self._end
            os.pwrite(self._file.fileno(), blob, offset)
            self._end += len(blob)
        return functools.partial(self.get, offset, len(blob))  # holds the spool: its file stays open

    def get(self, offset: int, size: int) -> bytes:
        return os.pread(self._file.fileno(), size, offset)


_MISSING = object()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: parsed JSON holds no cycles, and the collector's passes
    over the ever more objects of a large patchset took half of its read (1Lbb: ~1.2 of 2 s)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _stream_patchset(tree: _Tree, name: str, background: Mapping[str, Any]) -> tuple[dict[str, Patch], list[str], str | None]:
    """The patches of a ``patchset.json`` read one at a time (ijson), each checked and copied to a `_Spool`.

    Memory holds one patch at a time, whatever the size of the file. pyhf's patchset schema is
    checked patch by patch (each with the metadata and version), unless the file passed it before.

    Raises:
        ijson.JSONError: the file is not JSON the streaming parser reads (``NaN`` included).
    """
    import ijson

    where = tree.describe(name)
    check = not _validated_before("patchset.json", where)
    # metadata first (HEPData's patchsets open with it); the version, often last, for the schema only
    with tree.open(name, count=False) as stream:
        metadata = next(ijson.items(stream, "metadata", use_float=True), _MISSING)
    version = _MISSING
    if check:
        with tree.open(name, count=False) as stream:
            version = next(ijson.items(stream, "version", use_float=True), _MISSING)
    head = {k: v for k, v in (("metadata", metadata), ("version", version)) if v is not _MISSING}
    if check:
        _check_schema({**head, "patches": [{"metadata": {"name": "x", "values": []}, "patch": []}]}, "patchset.json", where)
    labels = list(metadata["labels"])  # type: ignore[index]
    spool = _Spool()
    patches: dict[str, Patch] = {}
    with tree.open(name) as stream, _gc_paused():
        for i, entry in enumerate(ijson.items(stream, "patches.item", use_float=True)):
            if check:
                _check_schema({**head, "patches": [entry]}, "patchset.json", where, index=i)
            values = _patch_values(entry, i, labels, patches, where)
            patch_name = entry["metadata"]["name"]
            # checked now, while parsed: a scan then sends the packed patch on without parsing it
            problem = None
            try:
                Patch(patch_name, values, entry["patch"], where).check(background, where)
            except PatchError as err:
                problem = str(err)
            packed = spool.put(entry["patch"])
            patches[patch_name] = StoredPatch(patch_name, values, source=where, packed=packed, checked=True,
                                              problem=problem, read=lambda packed=packed: unpack_operations(packed()))
    if check:
        if not patches:
            _check_schema({**head, "patches": []}, "patchset.json", where)
        _mark_validated("patchset.json", where)
    return patches, labels, metadata["digests"].get("sha256")  # type: ignore[index]


def _read_patch_file(tree: _Tree, file: str) -> list[dict[str, Any]]:
    """A patch file's operations, checked against pyhf's ``jsonpatch`` schema.

    Files in a folder are checked at each read (a marker skips files checked before and unchanged
    since, `_validated_marker`); an archive's members are checked once, when the pallet is read.
    """
    operations = tree.read_json(file)
    if not tree.archive:
        _validate(operations, "jsonpatch.json", tree.describe(file))
    return operations  # type: ignore[no-any-return]


def _patches_from_files(tree: _Tree, files: list[str]) -> tuple[dict[str, Patch], list[str]]:
    patches: dict[str, Patch] = {}
    for file in files:
        match = PATCH_FILE_RE.match(PurePosixPath(file).name)
        assert match is not None
        name = match["name"]
        where = tree.describe(file)
        if name in patches:
            raise PalletError(f"{where}: patch name {name!r} is not unique (also {patches[name].source})")
        if tree.archive or not _validated_before("jsonpatch.json", where):
            # read now, so that a bad file fails the read of the pallet, then let go of it
            _validate(tree.read_json(file), "jsonpatch.json", where)
        patches[name] = StoredPatch(name, values_from_name(name), source=where,
                                    read=functools.partial(_read_patch_file, tree, file))
    # Sorted by values, then name: the grid order, not the file system's.
    ordered = sorted(patches.values(), key=lambda p: (p.values, p.name))
    width = max((len(p.values) for p in ordered), default=0)
    return {p.name: p for p in ordered}, [f"value{i}" for i in range(width)]


def load_pallet(
    path: str | Path,
    *,
    region: str | None = None,
    ignore_digest: bool = False,
    labels: str | Sequence[str] | None = None,
) -> Pallet:
    """Read and validate a pallet.

    Args:
        path: a folder or archive (``.tar.gz``, ``.zip``, as downloaded from HEPData) holding
            ``BkgOnly.json`` with either ``patchset.json`` or ``patch.NAME.json`` files, each
            plain or ``.gz``, at the top or in region folders.
        region: the region folder to use when the source holds several (its name, e.g.
            ``Region-combined``, or its path in the source).
        ignore_digest: accept a patchset whose recorded background digest does not match.
        labels: names of the patches' values (``"m1,m2"`` or a list); default: the patchset's
            labels, or ``value0, value1, ...`` for patch files.

    Returns:
        The validated `Pallet`.

    Raises:
        PalletError: a missing file, unsafe archive, invalid JSON or schema, a digest
            mismatch, several regions and none chosen, or labels that do not fit the values;
            the message names the file and, for schema errors, the field.
    """
    path = Path(path)
    given_labels = _parse_labels(labels)
    tree = _open_tree(path)
    regions = _regions(tree)
    chosen = _choose_region(tree, regions, region)

    background = tree.read_json(chosen.background)
    bkg_where = tree.describe(chosen.background)
    _validate(background, "workspace.json", bkg_where)
    digest = workspace_digest(background)

    recorded: str | None = None
    if chosen.patchset is not None:
        if chosen.patch_files:
            log.warning("%s: has both patchset.json and patch files; using %s", tree.describe(chosen.folder), chosen.patchset)
        layout = LAYOUT_PATCHSET
        patches_where = tree.describe(chosen.patchset)
        patches, default_labels, recorded = _patches_from_patchset(tree, chosen.patchset, background)
        if recorded is not None and recorded != digest:
            message = (
                f"{patches_where}: metadata.digests.sha256 is {recorded} but the background "
                f"{bkg_where} has digest {digest}: the patches were made for another workspace"
            )
            if not ignore_digest:
                raise PalletError(message + " (--ignore-digest to fit anyway)")
            log.warning(message)
    elif chosen.patch_files:
        layout = LAYOUT_PATCH_FILES
        patches_where = tree.describe(f"{chosen.folder}/patch.*.json" if chosen.folder != "." else "patch.*.json")
        patches, default_labels = _patches_from_files(tree, chosen.patch_files)
    else:
        raise PalletError(
            f"{tree.describe(chosen.folder)}: no patchset.json found, and no patch.NAME.json files beside "
            f"{PurePosixPath(chosen.background).name}"
        )

    if given_labels is not None:
        width = max((len(p.values) for p in patches.values()), default=len(given_labels))
        if len(given_labels) != width:
            example = next(iter(patches.values()))
            raise PalletError(
                f"--labels {','.join(given_labels)}: {len(given_labels)} labels, but the patches of "
                f"{patches_where} have {width} values (e.g. {example.name}: {', '.join(f'{v:g}' for v in example.values)})"
            )

    tree.stop_counting()
    return Pallet(
        source=str(path),
        background=background,
        patches=patches,
        labels=given_labels if given_labels is not None else default_labels,
        digest=digest,
        background_file=bkg_where,
        patchset_file=patches_where,
        region=chosen.name if len(regions) > 1 else None,
        layout=layout,
        regions=[r.name for r in regions],
        recorded_digest=recorded,
    )


def iter_specs(pallet: Pallet, patches: Sequence[Patch]) -> Iterator[tuple[Patch, dict[str, Any]]]:
    """Each patch with its patched workspace spec."""
    for patch in patches:
        yield patch, pallet.workspace_spec(patch)
