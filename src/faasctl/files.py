"""Files written whole or not at all: a reader (another scan, an endpoint starting) never sees a torn one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["atomic_write"]


def atomic_write(path: Path, write: Callable[[IO[Any]], Any], *, binary: bool = False, mode: int | None = None,
                 fsync: bool = False) -> None:
    """Write ``path`` through ``write(fh)`` into a temporary file beside it, then rename it over ``path``.

    Args:
        path: the file to (re)place.
        write: writes the content to the open file it is given.
        binary: open the temporary file in binary mode (else text, newlines as written).
        mode: the file's permissions (default: ``0o666`` less the umask, as ``open`` would make it).
        fsync: flush it to the disk before the rename (durable across a crash, not only atomic).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
