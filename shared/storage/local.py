"""The local-folder store: what OUTPUT_DIR has always been, behind the Store interface.

Every file is written whole or not at all (temporary file in the target's folder, fsync, then a
rename, or a hard link when it must not replace anything), and never through a symbolic link
out of the root. Disk full, permissions and read-only file systems are refusals (StorageError);
the errors a network file system gives while its server is away are "try again later".
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

from shared.atomic_files import write_atomic
from shared.errors import OutputExistsError, StorageError, StorageUnavailableError
from shared.storage.location import Location, check_key
from shared.storage.store import Store

_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EACCES: "permission denied",
    errno.EROFS: "read-only file system",
    errno.EDQUOT: "quota exceeded",
    errno.EPERM: "operation not permitted",
}
# A network file system whose server is away answers with these; the same write may work later.
_TRANSIENT = {errno.ETIMEDOUT, errno.EIO, errno.ESTALE, errno.EAGAIN, errno.EHOSTUNREACH, errno.ECONNREFUSED}


class LocalStore(Store):
    def __init__(self, location: Location):
        assert location.path is not None
        self.location = location
        self.root = location.path

    def _path(self, key: str) -> Path:
        key = check_key(key)
        path = self.root / key
        resolved_parent = path.parent.resolve()
        root = self.root.resolve()
        if resolved_parent != root and root not in resolved_parent.parents:
            raise StorageError(
                f"output path {key!r} leaves the output root {self.root} through a symbolic link"
            )
        target = resolved_parent / path.name
        if target.is_symlink() and root not in target.resolve().parents:
            raise StorageError(
                f"output path {key!r} leaves the output root {self.root} through a symbolic link"
            )
        return target

    def put(self, key: str, data: bytes, *, overwrite: bool, content_type: str | None = None) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a file stands where a folder of the path should be
            raise StorageError(f"cannot write {path}: a file stands where a folder should be") from None
        except OSError as exc:
            raise _error(exc, f"cannot write {path}") from exc
        try:
            write_atomic(path, [data], exclusive=not overwrite)
        except FileExistsError:
            raise OutputExistsError(f"{self.location.url(key)} exists already") from None
        except OSError as exc:
            raise _error(exc, f"cannot write {path}") from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{path} does not exist") from None
        except OSError as exc:
            raise _error(exc, f"cannot read {path}") from exc

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _error(exc, f"cannot look at {key}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise _error(exc, f"cannot delete {key}") from exc

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return
        for folder, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".") and name.endswith(".part"):
                    continue  # a write in progress
                full = Path(folder) / name
                try:
                    size = full.stat().st_size
                except OSError:
                    continue
                yield full.relative_to(self.root).as_posix(), size


def _error(exc: OSError, what: str) -> StorageError | StorageUnavailableError:
    if exc.errno in _TRANSIENT:
        return StorageUnavailableError(f"{what}: {exc.strerror or exc} (the file system may be back later)")
    return StorageError(f"{what}: {_REASONS.get(exc.errno or 0, exc.strerror or str(exc))}")
