"""Where the fleet's files go: one interface for a local folder and for object stores.

    store = open_store(settings.output_dir)       # "./output", "s3://bucket/prefix", "gs://...", "az://..."
    write_once(store, "b-20261204-ab12cd/0000_fox.png", data, content_type="image/png")
    store.url("b-20261204-ab12cd/0000_fox.png")   # "s3://bucket/prefix/b-.../0000_fox.png" or a local path

Workers write outputs, manifests and galleries through it, the producer probes it at submit and
fetches from it; nothing else touches output files directly.
"""

from __future__ import annotations

import os

from shared.storage.location import Location, check_key, is_remote, parse_location
from shared.storage.sniff import MediaType, sniff
from shared.storage.store import Store, Written, probe, sha256_of, write_once

__all__ = [
    "Location",
    "MediaType",
    "Store",
    "Written",
    "check_key",
    "is_remote",
    "open_store",
    "parse_location",
    "probe",
    "sha256_of",
    "sniff",
    "write_once",
]


def open_store(
    where: str | os.PathLike | Location,
    *,
    environ: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Store:
    """The store for an output root (a Location, or what OUTPUT_DIR holds). ConfigError for a
    URL it cannot serve (unknown scheme, the object-store extra not installed). `timeout`: the
    seconds one request to an object store may take (FLEET_STORE_TIMEOUT)."""
    location = where if isinstance(where, Location) else parse_location(where)
    if location.remote:
        from datetime import timedelta

        from shared.storage.cloud import REQUEST_TIMEOUT, CloudStore

        return CloudStore(
            location, environ=environ, timeout=timedelta(seconds=timeout) if timeout else REQUEST_TIMEOUT
        )
    from shared.storage.local import LocalStore

    return LocalStore(location)
