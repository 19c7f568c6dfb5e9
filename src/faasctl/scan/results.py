"""Scan results: one record per patch, written to disk as each arrives.

``results.json`` is the source of truth; it is rewritten atomically (temp file + rename)
after every result, so a killed scan loses nothing it finished and never leaves a torn
file. ``results.csv`` is the same table for spreadsheets. A rerun with the same output
folder skips the patches already fitted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

from faasctl.exceptions import ScanError

__all__ = ["PatchResult", "TaskTiming", "ResultsDocument", "ResultStore", "SCHEMA_VERSION"]

SCHEMA_VERSION = "1.0.0"
EXPECTED_KEYS = ("cls_exp_m2", "cls_exp_m1", "cls_exp", "cls_exp_p1", "cls_exp_p2")


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
    setup: float | None = Field(default=None, description="seconds the task spent importing the backend")
    compiled: bool | None = Field(default=None, description="the fit compiled the engine (first of a model layout)")


class PatchResult(BaseModel):
    """The outcome of one patch's hypothesis test."""

    model_config = ConfigDict(extra="ignore")

    patch: str = Field(description="the patch's name in the patchset")
    values: list[float] = Field(default_factory=list)
    status: Literal["ok", "failed"]
    cls_obs: float | None = None
    cls_exp: list[float] | None = Field(default=None, description="CLs_exp at -2, -1, 0, +1, +2 sigma")
    error: str | None = None
    fit_time: float | None = Field(default=None, description="seconds spent in the fit on the worker")
    worker: str | None = None
    backend: str | None = None
    timing: TaskTiming | None = Field(default=None, description="where the task's time went")

    @property
    def ok(self) -> bool:
        return self.status == "ok"


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
    results: list[PatchResult]


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    """The results of one pallet's scan in ``out_dir``.

    Args:
        out_dir: folder for ``results.json`` / ``results.csv`` (created on first write).
        pallet: ``{"source", "digest", "labels", "region"}`` of the pallet scanned.
        force: drop earlier results instead of resuming from them.

    Raises:
        ScanError: ``out_dir`` holds results of another pallet (a different digest).
    """

    def __init__(self, out_dir: str | Path, pallet: dict[str, Any], *, force: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.json_path = self.out_dir / "results.json"
        self.csv_path = self.out_dir / "results.csv"
        self.pallet = pallet
        self.results: dict[str, PatchResult] = {}
        if self.json_path.exists() and not force:
            self._load()

    def _load(self) -> None:
        try:
            doc = ResultsDocument.model_validate_json(self.json_path.read_bytes())
        except (OSError, ValueError) as err:
            first = str(err).splitlines()[0]
            raise ScanError(f"{self.json_path}: unreadable results file ({first}); use --force to start over") from err
        found = doc.pallet.digest
        if found != self.pallet["digest"] or doc.pallet.region != self.pallet.get("region"):
            raise ScanError(
                f"{self.json_path}: holds results of another pallet (digest {found[:12]}…); "
                "use another --out, or --force to replace them"
            )
        self.results = {r.patch: r for r in doc.results}

    def done(self) -> set[str]:
        """Names of patches with a successful result (failed ones are fitted again)."""
        return {name for name, r in self.results.items() if r.ok}

    def add(self, result: PatchResult) -> None:
        self.results[result.patch] = result
        self.flush()

    def flush(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "schema": f"faasctl/results/{SCHEMA_VERSION}",
            "pallet": self.pallet,
            "results": [r.model_dump() for r in self.results.values()],
        }
        _atomic_write(self.json_path, json.dumps(doc, indent=1) + "\n")
        _atomic_write(self.csv_path, to_csv(self.results.values(), self.pallet.get("labels") or []))


def to_csv(results: Iterable[PatchResult], labels: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    results = list(results)
    n_values = max((len(r.values) for r in results), default=len(labels))
    value_cols = [labels[i] if i < len(labels) else f"value{i}" for i in range(n_values)]
    writer.writerow(["patch", *value_cols, "status", "cls_obs", *EXPECTED_KEYS, "fit_time", "worker", "backend", "error"])
    for r in results:
        exp = r.cls_exp or [None] * 5
        writer.writerow(
            [r.patch, *r.values, r.status, r.cls_obs, *exp, None if r.fit_time is None else round(r.fit_time, 4),
             r.worker, r.backend, r.error]
        )
    return buf.getvalue()
