"""Files that appear whole or not at all.

A temporary file in the target's directory, fsync, rename over the target, fsync the directory:
a reader (or a crash, or a redelivered task writing the same file again) never sees half a file.
The file gets the mode any new file would (0666 less the umask: 0644 with the usual 022), so a web
server or a colleague can read the outputs; `tempfile.mkstemp` would make them 0600.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

_CREATE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def write_atomic(path: Path, chunks: Iterable[bytes], *, exclusive: bool = False) -> int:
    """Write the chunks to `path` atomically; returns the size written. Anything raised (by the
    disk, or by the chunk iterator itself) leaves no temporary file and the target untouched.
    `exclusive`: never replace an existing file (FileExistsError instead): the finished file is
    hard-linked into place, which fails when the name exists; a file system without hard links
    gets a check just before the rename instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
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


def _create_temporary(path: Path) -> tuple[int, str]:
    # mkstemp's O_EXCL with mode 0666: the kernel applies the umask (and a default ACL) itself,
    # so nothing reads or changes the process-wide umask under other threads.
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.part")
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


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
