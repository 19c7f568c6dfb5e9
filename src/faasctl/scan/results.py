"""Scan results: one record per patch, durable as each arrives.

The results folder holds:

``results.sqlite``
    The source of truth: an SQLite database in WAL mode, one row per patch. Recording a
    result is one small transaction (an upsert appended to the log), so its cost does not
    grow with the number of results, and a killed scan loses nothing it recorded.
``results.json`` / ``results.csv``
    The same table for people and tools (schema ``schemas/1.0.0/results.json``), exported
    from the database while a scan runs (every few seconds, once the results grew by a quarter
    since the last export: `ResultStore._export_due`) and when it closes, each written
    atomically (temp file + rename): never torn.
``.faasctl.lock``
    An exclusive ``flock`` held while a `ResultStore` is open, so that a second scan on the
    same folder is refused instead of overwriting the first one's results. The kernel
    releases it when the process ends, however it ends.

Each record keeps the sha256 digest of its patch and the id of the computation settings
(backend requested, faasctl and pyhf versions, the test's modifier settings) it was fitted
with: a rerun refits a patch whose content or settings changed (see `ResultStore.stale`).
"""

from __future__ import annotations

import csv
import datetime
import fcntl
import hashlib
import json
import math
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from faasctl.exceptions import ResultsError
from faasctl.files import atomic_write

__all__ = ["PatchResult", "TaskTiming", "ResultsDocument", "ResultStore", "SCHEMA_VERSION", "load_results", "patch_digest",
           "settings_id"]

SCHEMA_VERSION = "1.0.0"
EXPECTED_KEYS = ("cls_exp_m2", "cls_exp_m1", "cls_exp", "cls_exp_p1", "cls_exp_p2")
DB_NAME = "results.sqlite"
LOCK_NAME = ".faasctl.lock"
#: While a scan runs, results.json / .csv are exported again once the results grew by this share.
EXPORT_GROWTH = 0.25


class TaskTiming(BaseModel):
    """Where a patch's time went: its task's times on the client's and the worker's clock (``time.time()``).

    Client and worker clocks are the same on one machine; across machines ``queue_wait``
    includes their offset, while ``overhead`` does not.
    """

    model_config = ConfigDict(extra="ignore")

    submitted: float | None = Field(default=None, description="client: the task was handed to the executor")
    received: float | None = Field(default=None, description="client: its result came back")
    started: float | None = Field(default=None, description="worker: the task started")
    finished: float | None = Field(default=None, description="worker: the task finished")
    queue_wait: float | None = Field(default=None, description="seconds from submitted to started (both clocks)")
    overhead: float | None = Field(default=None, description="round trip less the time on the worker, seconds")
    bytes_sent: int | None = Field(default=None, description="pickled size of the task")
    bytes_received: int | None = Field(default=None, description="pickled size of the result")
    worker_start: float | None = Field(default=None, description="worker: its process started")
    worker_ready: float | None = Field(default=None, description="worker: set up by the local engine (imports, JAX)")
    worker_released: float | None = Field(
        default=None, description="worker: it stopped waiting for the first task and began its imports (local engine)")
    setup: float | None = Field(default=None, description="seconds the task spent importing the backend")
    compiled: bool | None = Field(default=None, description="the fit made the engine: compiled it, or loaded it compiled (first of a model layout in a worker)")


class PatchResult(BaseModel):
    """The outcome of one patch's hypothesis test.

    ``status`` is ``ok`` (with CLs), ``no_sensitivity`` (no CLs: the signal barely changes
    the model, see `faasctl.study.no_sensitivity`; the reason in ``error``) or ``failed``.
    A record that says ``ok`` without a usable result (no or non-finite CLs, not five expected
    values) is turned into a failed one with the reason: it is not trusted, and is refitted.
    """

    model_config = ConfigDict(extra="ignore")

    patch: str = Field(description="the patch's name in the patchset")
    values: list[float] = Field(default_factory=list)
    status: Literal["ok", "no_sensitivity", "failed"]
    cls_obs: float | None = None
    cls_exp: list[float] | None = Field(default=None, description="CLs_exp at -2, -1, 0, +1, +2 sigma")
    error: str | None = Field(default=None, description="failed: the error; no_sensitivity: the reason")
    fit_time: float | None = Field(default=None, description="seconds spent in the fit on the worker")
    worker: str | None = None
    backend: str | None = Field(default=None, description="what computed the test: jax, or numpy (plain pyhf)")
    fallback: str | None = Field(default=None, description="why the jax engine handed the patch to plain pyhf")
    digest: str | None = Field(default=None, description="sha256 of the patch's content (values and operations)")
    settings: str | None = Field(default=None, description="id of the computation settings, a key of the document's settings")

    timing: TaskTiming | None = Field(default=None, description="where the task's time went")

    @model_validator(mode="after")
    def _cls_only_when_ok(self) -> PatchResult:
        if self.status == "ok":
            problem = _unusable(self.cls_obs, self.cls_exp)
            if problem:
                self.status, self.error = "failed", f"malformed result: status ok but {problem}"
        elif self.status == "no_sensitivity" and (self.cls_obs is not None or self.cls_exp is not None or not self.error):
            raise ValueError("a no_sensitivity result has no CLs, and its reason in error")
        return self

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def _unusable(cls_obs: float | None, cls_exp: list[float] | None) -> str | None:
    if cls_obs is None:
        return "no cls_obs"
    if not math.isfinite(cls_obs):
        return f"cls_obs is {cls_obs}"
    if cls_exp is None or len(cls_exp) != 5:
        return "cls_exp is not 5 values"
    if not all(math.isfinite(v) for v in cls_exp):
        return "cls_exp is not finite"
    return None


class PalletInfo(BaseModel):
    """What a results file records about the pallet it belongs to."""

    model_config = ConfigDict(extra="allow")

    source: str
    digest: str
    labels: list[str] = Field(default_factory=list)
    region: str | None = None


class ResultsDocument(BaseModel):
    """The layout of ``results.json`` (schema: ``schemas/1.0.0/results.json``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"$id": f"https://faasctl.dev/schemas/{SCHEMA_VERSION}/results.json"})

    schema_: str = Field(alias="schema", pattern=r"^faasctl/results/\d+\.\d+\.\d+$")
    pallet: PalletInfo
    settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="computation settings by id (backend requested, versions, modifier settings)"
    )
    results: list[PatchResult]


def patch_digest(values: Iterable[float], packed: bytes) -> str:
    """The sha256 of a patch's content: ``{"operations": ..., "values": ...}`` as canonical JSON.

    ``packed``: the operations packed (`faasctl.pallets.load.pack_operations`, canonical JSON
    already), so that a spooled patch is hashed without being parsed.
    """
    import zlib

    text = b'{"operations":' + zlib.decompress(packed) + b',"values":' + json.dumps(list(values), separators=(",", ":")).encode() + b"}"
    return hashlib.sha256(text).hexdigest()


def settings_id(settings: Mapping[str, Any]) -> str:
    """A short id of computation settings: the start of the sha256 of their canonical JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _slim(result: PatchResult) -> PatchResult:
    """``result`` without its timing, as a store holds it in memory (the database and files keep it): a scan of
    10^5 patches holds a fraction of the memory."""
    return result.model_copy(update={"timing": None}) if result.timing is not None else result


class _FolderLock:
    """An exclusive ``flock`` on ``<folder>/.faasctl.lock``, shared by the stores of one process.

    ``flock`` locks belong to an open file, so two stores of one process on one folder (a
    notebook that opens a folder twice, a test reading what a scan wrote) would refuse each
    other: within a process, stores share the lock, counted, and the last to close releases it.
    """

    _held: dict[Path, list[Any]] = {}  # lock file -> [open file, count]

    def __init__(self, folder: Path) -> None:
        self.path = (folder / LOCK_NAME).resolve()
        entry = self._held.get(self.path)
        if entry is not None:
            entry[1] += 1
            return
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise ResultsError(f"{folder}: in use by another scan ({holder}); wait for it to end, or use another out folder") from None
        except OSError as err:
            fh.close()
            raise ResultsError(f"{folder}: cannot lock the results folder: {err.strerror}") from err
        fh.seek(0)
        fh.truncate()
        since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {since}\n")
        fh.flush()
        self._held[self.path] = [fh, 1]

    def release(self) -> None:
        entry = self._held.get(self.path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[self.path]
            entry[0].close()  # closing the file releases the flock


class ResultStore:
    """The results of one pallet's scan in ``out_dir``, locked against other scans while open.

    Args:
        out_dir: the results folder (created if missing).
        pallet: ``{"source", "digest", "labels", "region"}`` of the pallet scanned.
        force: drop earlier results instead of resuming from them.
        settings: the computation settings of the results to come (backend requested,
            versions, modifier settings); recorded with each result, and compared on resume.
        export_every: seconds between exports of ``results.json`` / ``results.csv`` while
            results arrive (longer when an export takes a noticeable share of that time).

    Raises:
        ResultsError: ``out_dir`` cannot be created or written, holds results of another
            pallet (a different digest), holds an unreadable results file, or is in use by
            another scan (the message names its pid, host and start).

    Use it as a context manager, or call `close`: closing exports the files and releases
    the lock (which the kernel also releases if the process dies).

    Attributes:
        results: the results by patch, without their ``timing`` (in the database and the
            exported files; `load_results` reads it).
    """

    def __init__(
        self, out_dir: str | Path, pallet: dict[str, Any], *, force: bool = False,
        settings: Mapping[str, Any] | None = None, export_every: float = 5.0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.json_path = self.out_dir / "results.json"
        self.csv_path = self.out_dir / "results.csv"
        self.db_path = self.out_dir / DB_NAME
        self.pallet = pallet
        self.settings = dict(settings) if settings is not None else None
        self.settings_id = settings_id(self.settings) if self.settings is not None else None
        self.results: dict[str, PatchResult] = {}
        self.export_every = export_every
        self._lock: _FolderLock | None = None
        self._db: sqlite3.Connection | None = None
        self._dirty = False
        _check_writable(self.out_dir)
        self._lock = _FolderLock(self.out_dir)
        try:
            self._open(force)
        except BaseException:
            self.close(export=False)
            raise
        self._exported = time.monotonic()
        self._pause = export_every
        self._exported_rows = len(self.results)
        self._dirty = force or not self.json_path.exists()  # results the exported files do not show

    # --- opening -----------------------------------------------------------------------------

    def _open(self, force: bool) -> None:
        if force:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
        fresh = not self.db_path.exists()
        try:
            self._db = _connect(self.db_path)
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT value FROM meta WHERE key = 'pallet'").fetchone()
        except sqlite3.DatabaseError as err:
            raise ResultsError(f"{self.db_path}: unreadable results database ({err}); use force=True to start over") from err
        if found is not None:
            self._check_pallet(json.loads(found[0]), self.db_path)
            self._read_rows()
        elif fresh and self.json_path.exists() and not force:
            self._import_json()  # results of a version of faasctl before the database
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('pallet', ?)", (json.dumps(self.pallet),))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (f"faasctl/results/{SCHEMA_VERSION}",))
            if self.settings is not None:
                self._db.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)",
                                 (self.settings_id, json.dumps(self.settings, sort_keys=True)))

    def _check_pallet(self, found: Mapping[str, Any], where: Path) -> None:
        if found.get("digest") != self.pallet["digest"] or found.get("region") != self.pallet.get("region"):
            raise ResultsError(
                f"{where}: holds results of another pallet (digest {str(found.get('digest'))[:12]}…); "
                "use another out folder, or force=True to replace them"
            )

    def _read_rows(self) -> None:
        assert self._db is not None
        for (record,) in self._db.execute("SELECT record FROM results ORDER BY rowid"):
            result = PatchResult.model_validate_json(record)
            self.results[result.patch] = _slim(result)

    def _import_json(self) -> None:
        try:
            doc = ResultsDocument.model_validate_json(self.json_path.read_bytes())
        except (OSError, ValueError) as err:
            first = str(err).splitlines()[0]
            raise ResultsError(f"{self.json_path}: unreadable results file ({first}); use force=True to start over") from err
        self._check_pallet(doc.pallet.model_dump(), self.json_path)
        assert self._db is not None
        with self._db:
            for sid, values in doc.settings.items():
                self._db.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (sid, json.dumps(values, sort_keys=True)))
            for result in doc.results:
                self._upsert(result)
                self.results[result.patch] = _slim(result)

    # --- resume ------------------------------------------------------------------------------

    def done(self) -> set[str]:
        """Names of patches with a result (failed ones are fitted again)."""
        return {name for name, r in self.results.items() if not r.failed}

    def stale(self, name: str, digest: str) -> str | None:
        """Why the successful result of ``name`` no longer holds, or None if it does (or there is none).

        A result is stale when its patch's digest differs from ``digest`` (the patch changed),
        or when it was computed with other settings than this store's. Results from before
        faasctl recorded digests and settings are trusted.
        """
        result = self.results.get(name)
        if result is None or not result.ok:
            return None
        if result.digest is not None and result.digest != digest:
            return "patch content"
        if result.settings is not None and self.settings_id is not None and result.settings != self.settings_id:
            old = self.settings_of(result.settings) or {}
            changed = [k for k in sorted({*old, *(self.settings or {})}) if old.get(k) != (self.settings or {}).get(k)]
            return "settings: " + ", ".join(
                f"{k} {old.get(k)!r} → {(self.settings or {}).get(k)!r}" if k != "test" else k for k in changed
            )
        return None

    def settings_of(self, sid: str) -> dict[str, Any] | None:
        """The computation settings recorded under ``sid``."""
        assert self._db is not None
        row = self._db.execute("SELECT json FROM settings WHERE id = ?", (sid,)).fetchone()
        return json.loads(row[0]) if row else None

    # --- writing -----------------------------------------------------------------------------

    def add(self, result: PatchResult) -> None:
        """Record ``result`` (durably, at once) and export the files if the last export is old enough."""
        if self._db is None:
            raise ResultsError(f"{self.out_dir}: the results store is closed")
        if self.settings_id is not None:
            result = result.model_copy(update={"settings": self.settings_id})
        with self._db:
            self._upsert(result)
        self.results[result.patch] = _slim(result)
        self._dirty = True
        if self._export_due():
            self.export()

    def _export_due(self) -> bool:
        """Whether to export now: `export_every` seconds have passed, and the results grew by `EXPORT_GROWTH`.

        An export rewrites both files whole; exporting when the results have grown by a share
        keeps the bytes written per result flat (all exports together are at most
        ``1 + 1 / EXPORT_GROWTH`` times the final files), where a fixed period would make them grow
        with the scan's length and size: quadratic in the number of patches.
        """
        grown = len(self.results) - self._exported_rows >= max(1, EXPORT_GROWTH * self._exported_rows)
        return grown and time.monotonic() - self._exported >= self._pause

    def _upsert(self, result: PatchResult) -> None:
        assert self._db is not None
        # an upsert keeps the row (and so the patch's place in the exported files)
        self._db.execute(
            "INSERT INTO results (patch, n_values, record) VALUES (?, ?, ?) "
            "ON CONFLICT (patch) DO UPDATE SET n_values = excluded.n_values, record = excluded.record",
            (result.patch, len(result.values), result.model_dump_json()),
        )

    def export(self) -> None:
        """Write ``results.json`` and ``results.csv`` from the database, each atomically."""
        if self._db is None:
            raise ResultsError(f"{self.out_dir}: the results store is closed")
        start = time.monotonic()
        settings = {sid: json.loads(text) for sid, text in self._db.execute("SELECT id, json FROM settings ORDER BY id")}
        used = {r.settings for r in self.results.values()}
        settings = {sid: values for sid, values in settings.items() if sid in used}

        def write_json(fh: IO[str]) -> None:
            head = json.dumps({"schema": f"faasctl/results/{SCHEMA_VERSION}", "pallet": self.pallet, "settings": settings})
            fh.write(head[:-1] + ', "results": [')
            for i, (record,) in enumerate(self._db.execute("SELECT record FROM results ORDER BY rowid")):  # type: ignore[union-attr]
                fh.write(("\n" if i == 0 else ",\n") + record)
            fh.write("\n]}\n")

        n_values = self._db.execute("SELECT max(n_values) FROM results").fetchone()[0]
        labels = self.pallet.get("labels") or []
        records = (PatchResult.model_validate_json(r) for (r,) in self._db.execute("SELECT record FROM results ORDER BY rowid"))
        atomic_write(self.json_path, write_json, fsync=True)
        atomic_write(self.csv_path, lambda fh: write_csv(fh, records, labels, n_values), fsync=True)
        self._exported = time.monotonic()
        self._exported_rows = len(self.results)
        self._dirty = False
        # at 10^5 results an export takes a while: keep it a small share of the scan's time
        self._pause = max(self.export_every, 10 * (self._exported - start))

    def close(self, *, export: bool = True) -> None:
        """Export the files, close the database and release the folder's lock (idempotent)."""
        try:
            if export and self._dirty and self._db is not None:
                self.export()
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (id TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (patch TEXT PRIMARY KEY, n_values INTEGER NOT NULL, record TEXT NOT NULL);
"""


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level="DEFERRED")
    db.execute("PRAGMA busy_timeout = 10000")
    # WAL: a commit appends to the log (O(1)), readers (exports, other processes) never block it.
    # synchronous=NORMAL: a committed result survives the process being killed (the log is in the
    # OS's hands); an OS crash may lose the last few, never corrupts, and a resume refits them. FULL
    # would fsync at every commit, milliseconds per result: a sizeable share of a 0.05 s fit.
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def _check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and make sure files can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ResultsError(f"{folder}: not a folder (a file of that name exists); choose another out folder") from None
    except OSError as err:
        raise ResultsError(f"{folder}: cannot create the results folder: {err.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ResultsError(f"{folder}: the results folder is not writable")


def load_results(out_dir: str | Path) -> dict[str, PatchResult]:
    """The results a folder holds, by patch, read without taking its lock (a scan may be writing).

    Reads ``results.sqlite``, or ``results.json`` where there is no database (an older run).
    """
    out_dir = Path(out_dir)
    db_path = out_dir / DB_NAME
    if db_path.exists():
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT record FROM results ORDER BY rowid").fetchall()
        except sqlite3.OperationalError:  # a store is creating it this instant: no table yet
            rows = []
        finally:
            db.close()
        results = (PatchResult.model_validate_json(r) for (r,) in rows)
    else:
        results = iter(ResultsDocument.model_validate_json((out_dir / "results.json").read_bytes()).results)
    return {r.patch: r for r in results}


def write_csv(fh: IO[str], results: Iterator[PatchResult] | Iterable[PatchResult], labels: list[str],
              n_values: int | None) -> None:
    """Write ``results`` as CSV, one row per patch, with ``n_values`` value columns named by ``labels``."""
    writer = csv.writer(fh, lineterminator="\n")
    n_values = n_values if n_values is not None else len(labels)
    value_cols = [labels[i] if i < len(labels) else f"value{i}" for i in range(n_values)]
    writer.writerow(["patch", *value_cols, "status", "cls_obs", *EXPECTED_KEYS, "fit_time", "worker", "backend", "error"])
    for r in results:
        exp = r.cls_exp or [None] * 5
        writer.writerow(
            [r.patch, *r.values, r.status, r.cls_obs, *exp, None if r.fit_time is None else round(r.fit_time, 4),
             r.worker, r.backend, r.error]
        )
