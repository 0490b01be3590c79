"""Files that appear whole or not at all.

A temporary file in the target's directory, fsync, rename over the target, fsync the directory:
a reader (or a crash, or a redelivered task writing the same file again) never sees half a file.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Iterable


def write_atomic(path: Path, chunks: Iterable[bytes], *, exclusive: bool = False) -> int:
    """Write the chunks to `path` atomically; returns the size written. Anything raised (by the
    disk, or by the chunk iterator itself) leaves no temporary file and the target untouched.
    `exclusive`: never replace an existing file (FileExistsError instead): the finished file is
    hard-linked into place, which fails when the name exists; a file system without hard links
    gets a check just before the rename instead."""
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
        if exclusive:
            _link_into_place(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return size


def _link_into_place(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


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
