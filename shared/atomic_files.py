"""Files that appear whole or not at all.

A temporary file in the target's directory, fsync, rename over the target, fsync the directory:
a reader (or a crash, or a redelivered task writing the same file again) never sees half a file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable


def write_atomic(path: Path, chunks: Iterable[bytes]) -> int:
    """Write the chunks to `path` atomically; returns the size written. Anything raised (by the
    disk, or by the chunk iterator itself) leaves no temporary file and the target untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                size += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return size


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is; not every file system allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
