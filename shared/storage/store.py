"""The one interface every output goes through, and the guarantees built on it.

A Store puts whole objects (never a partial one: one PUT, a multipart upload completed at the
end, or a local temporary file renamed into place), refuses to replace an existing object unless
told to (a conditional write where the store has one), and reports trouble in two kinds only:
StorageError (refused for good: the item fails as a local error) and StorageUnavailableError
(no answer: the same write is tried again later).

`write_once` is how outputs are written: an object already there with the very same bytes is a
write that happened before (a redelivered task, an answer lost on the way back), not a conflict.
"""

from __future__ import annotations

import hashlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from shared.errors import OutputExistsError
from shared.storage.location import Location

PROBE_PREFIX = ".fleet-write-probe-"


class Store(ABC):
    location: Location

    @abstractmethod
    def put(self, key: str, data: bytes, *, overwrite: bool, content_type: str | None = None) -> None:
        """Write `data` whole at `key`; OutputExistsError if it exists and `overwrite` is False."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes at `key`; StorageError if there is no such object."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size, None if there is none."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key` (nothing if absent)."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(key, size) of every object under `prefix` (a folder, without trailing '/')."""

    def url(self, key: str = "") -> str:
        return self.location.url(key)


@dataclass(frozen=True)
class Written:
    key: str
    size: int
    sha256: str
    fresh: bool  # False: the same bytes were there already (an earlier write of this output)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_once(
    store: Store, key: str, data: bytes, *, overwrite: bool = False, content_type: str | None = None
) -> Written:
    """Put `data` at `key` unless it is there already: the same bytes count as written (an
    earlier run of this write), other bytes raise OutputExistsError unless `overwrite`."""
    digest = sha256_of(data)
    try:
        store.put(key, data, overwrite=overwrite, content_type=content_type)
        return Written(key, len(data), digest, fresh=True)
    except OutputExistsError:
        if store.size(key) == len(data) and sha256_of(store.get(key)) == digest:
            return Written(key, len(data), digest, fresh=False)
        raise OutputExistsError(
            f"{store.url(key)} exists already with other content; not replaced "
            "(submit with --overwrite to allow it)"
        ) from None


def probe(store: Store) -> None:
    """Write and delete a small object, as every output will be written: StorageError or
    StorageUnavailableError (with the store's reason) if that cannot be done."""
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    store.put(key, b"replicate-fleet write probe\n", overwrite=False, content_type="text/plain")
    store.delete(key)
