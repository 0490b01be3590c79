"""Where outputs go and how they are written: atomically, inside the output root, or not at all.

Every write is a temporary file in the target directory, fsync, then os.replace, so a reader (or a
crash) never sees half a file, and a redelivered task rewriting the same file is harmless.
Problems on our side (disk full, unwritable directory, a path escaping the root) raise LocalError:
they fail the item without a paid fallback.
"""
from __future__ import annotations

import errno
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable

from shared.errors import LocalError

SUBSTITUTE_SIZE = (1600, 900)  # the seed tool's "ultimate fallback": a black 1600x900 image


def output_paths(output_root: Path, relative: str, count: int, *, default_ext: str = "png") -> list[Path]:
    """The files for `count` outputs: `relative` itself, then `_1`, `_2` ... before the extension.
    Raises LocalError if a path would leave the output root."""
    root = Path(output_root).resolve()
    first = (root / relative).resolve()
    if not first.suffix:
        first = first.with_suffix("." + default_ext)
    if first != root and root not in first.parents:
        raise LocalError(f"output path {relative!r} leaves the output root {root}")
    paths = [first]
    for n in range(1, count):
        paths.append(first.with_name(f"{first.stem}_{n}{first.suffix}"))
    return paths


def write_stream(path: Path, chunks: Iterable[bytes], *, max_bytes: int) -> int:
    """Write chunks to `path` atomically; LocalError if more than `max_bytes` arrive or the disk
    refuses. Exceptions raised by the chunk iterator itself (network) pass through unchanged.
    Returns the size written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise LocalError(f"cannot write under {path.parent}: {_os_reason(exc)}") from exc
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise LocalError(f"output larger than the {max_bytes}-byte cap; not kept")
                _write(fh, chunk, path)
            if size == 0:
                raise LocalError("the output file is empty")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        raise LocalError(f"cannot write {path}: {_os_reason(exc)}") from exc
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return size


def write_substitute(path: Path) -> Path:
    """The black 1600x900 placeholder, in the format of `path`'s extension (PNG if Pillow does
    not write that extension, e.g. a video); returns the path written."""
    from PIL import Image

    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        path, fmt = path.with_suffix(".png"), "PNG"
    buffer = io.BytesIO()
    Image.new("RGB", SUBSTITUTE_SIZE, (0, 0, 0)).save(buffer, format=fmt)
    write_stream(path, [buffer.getvalue()], max_bytes=len(buffer.getvalue()))
    return path


def _write(fh: BinaryIO, chunk: bytes, path: Path) -> None:
    try:
        fh.write(chunk)
    except OSError as exc:
        raise LocalError(f"cannot write {path}: {_os_reason(exc)}") from exc


def _os_reason(exc: OSError) -> str:
    names = {errno.ENOSPC: "disk full", errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
             errno.EDQUOT: "quota exceeded"}
    return names.get(exc.errno or 0, exc.strerror or str(exc))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: Path) -> None:
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

