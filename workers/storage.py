"""How a download is written to a local file (atomically, capped, or not at all), and the
substitute image.

Every write is a temporary file in the target directory, fsync, then os.replace, so a reader (or a
crash) never sees half a file, and a redelivered task rewriting the same file is harmless.
Problems on our side (disk full, unwritable directory, a path escaping the root) raise LocalError:
they fail the item without a paid fallback.
"""

from __future__ import annotations

import errno
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

from shared.atomic_files import write_atomic
from shared.errors import LocalError

SUBSTITUTE_SIZE = (1600, 900)  # the seed tool's "ultimate fallback": a black 1600x900 image


def write_stream(path: Path, chunks: Iterable[bytes], *, max_bytes: int) -> int:
    """Write chunks to `path` atomically; LocalError if more than `max_bytes` arrive, nothing
    arrives, or the disk refuses. Exceptions raised by the chunk iterator itself (network) pass
    through unchanged. Returns the size written."""

    def capped() -> Iterator[bytes]:
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise LocalError(f"output larger than the {max_bytes}-byte cap; not kept")
            yield chunk
        if size == 0:
            raise LocalError("the output file is empty")

    try:
        return write_atomic(path, capped())
    except OSError as exc:
        raise LocalError(f"cannot write {path}: {_os_reason(exc)}") from exc


def substitute_image(key: str) -> tuple[str, bytes]:
    """(key, bytes) of the black 1600x900 placeholder for an output named `key`: in its
    extension's format, or PNG (the key's extension changed) when Pillow does not write that one."""
    from PIL import Image

    formats = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
    stem, dot, ext = key.rpartition(".")
    fmt = formats.get(ext.lower()) if dot else None
    if fmt is None:
        key, fmt = (f"{stem}.png" if dot and "/" not in ext else f"{key}.png"), "PNG"
    buffer = io.BytesIO()
    Image.new("RGB", SUBSTITUTE_SIZE, (0, 0, 0)).save(buffer, format=fmt)
    return key, buffer.getvalue()


def _os_reason(exc: OSError) -> str:
    names = {
        errno.ENOSPC: "disk full",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
        errno.EDQUOT: "quota exceeded",
    }
    return names.get(exc.errno or 0, exc.strerror or str(exc))
