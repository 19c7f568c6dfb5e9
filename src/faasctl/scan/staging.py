"""Backgrounds too large for a task: staged once per node, by content hash, in chunks.

Globus Compute refuses a task whose payload is over 10 MB, and a background sent with every
task would cost its size per patch anyway. A background whose pickled size is over
`INLINE_LIMIT` is therefore *staged*: compressed, cut into chunks of at most `CHUNK_BYTES`
(each its own small task, `stage_chunk`), which workers write into a cache folder keyed by the
background's sha256 digest (`stage_dir`: ``$FAASCTL_STAGE_DIR``, else
``$XDG_CACHE_HOME/faasctl/backgrounds``). Fit tasks then carry only the digest and the number
of chunks; a worker assembles the background from the folder once (`load_staged`), checks its
digest and keeps it like one that came with a task (`faasctl.scan.worker`).

Where the cache folder is:

* **one machine** (the local engine, one endpoint node): every chunk lands there;
* **a shared filesystem** (Slurm sites): set ``FAASCTL_STAGE_DIR`` in the workers'
  environment (``worker_init``) to a folder every node reads; a background is then staged once
  per site, and reused by later scans (the folder is content-addressed);
* **several nodes with node-local folders** (a multi-node Globus Compute endpoint without
  ``FAASCTL_STAGE_DIR``): chunks land on whichever node ran their task, so a node may lack
  some. A fit task landing there comes back asking for the background; the client stages the
  chunks again (up to ``retries`` times per patch), then records the patch as failed with a
  message that names ``FAASCTL_STAGE_DIR``. This is the documented limit of chunking without
  a shared folder.
"""

from __future__ import annotations

import json
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

from faasctl.files import atomic_write

__all__ = ["INLINE_LIMIT", "CHUNK_BYTES", "STAGE_ENV", "stage_dir", "needs_staging", "chunks", "stage_chunk",
           "load_staged"]

#: Pickled background size above which it is staged instead of carried by tasks: under Globus
#: Compute's 10 MB task payload cap, with room for the patch and the serializer's framing.
INLINE_LIMIT = 8 * 1024 * 1024
#: Largest chunk of a staged (compressed) background: one chunk per task, well under the cap.
CHUNK_BYTES = 4 * 1024 * 1024
#: Where workers keep staged backgrounds (a shared folder for multi-node sites).
STAGE_ENV = "FAASCTL_STAGE_DIR"


def stage_dir() -> Path:
    """The folder staged backgrounds go in on this machine: ``$FAASCTL_STAGE_DIR``, else the user's cache."""
    setting = os.environ.get(STAGE_ENV)
    if setting:
        return Path(setting).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "faasctl" / "backgrounds"


def needs_staging(background: Any, limit: int = INLINE_LIMIT) -> bool:
    """Whether ``background`` is too large to travel with a task."""
    return len(pickle.dumps(background, protocol=pickle.HIGHEST_PROTOCOL)) > limit


def chunks(background: Any, size: int = CHUNK_BYTES) -> list[bytes]:
    """``background`` as compact JSON, compressed, cut into pieces of at most ``size`` bytes."""
    blob = zlib.compress(json.dumps(background, separators=(",", ":")).encode(), 6)
    return [blob[i : i + size] for i in range(0, len(blob), size)] or [b""]


def _folder(digest: str) -> Path:
    if not digest.isalnum():  # a digest is hex: never a path that leaves the folder
        raise ValueError(f"not a digest: {digest!r}")
    return stage_dir() / digest


def stage_chunk(digest: str, index: int, count: int, data: bytes) -> str:
    """A worker's task: write chunk ``index`` of ``count`` of background ``digest`` into `stage_dir`; its host.

    Written to a temporary file and renamed: a reader sees a whole chunk or none, also when two
    workers of one node write the same chunk at once.
    """
    import socket

    folder = _folder(digest)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{index:05d}-of-{count:05d}.part"
    if not path.exists():
        atomic_write(path, lambda fh: fh.write(data), binary=True)
    return socket.gethostname()


def load_staged(digest: str, count: int) -> dict[str, Any] | None:
    """The staged background ``digest`` assembled from its ``count`` chunks; None if this node lacks any.

    Raises:
        ValueError: the chunks do not make the background of ``digest`` (corrupt or mixed up).
    """
    from faasctl.pallets.load import workspace_digest

    folder = _folder(digest)
    parts = [folder / f"{i:05d}-of-{count:05d}.part" for i in range(count)]
    try:
        blob = b"".join(p.read_bytes() for p in parts)
    except FileNotFoundError:
        return None
    try:
        background = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as err:
        raise ValueError(f"{folder}: the staged chunks of background {digest[:12]}… are corrupt: {err}") from err
    if workspace_digest(background) != digest:
        raise ValueError(f"{folder}: the staged chunks make a background whose digest is not {digest[:12]}…")
    return background  # type: ignore[no-any-return]
