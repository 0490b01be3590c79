"""A batch's manifest: its record and every item's, as `producer results --json` prints them and
as written beside the outputs (manifest.json, and the gallery index.html)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shared.ledger.queries import LedgerQueries
from shared.ledger.records import iso_time
from shared.request import ImageRequest
from shared.storage.location import Location


class LedgerManifests(LedgerQueries):
    """The manifest as data, and written (with the gallery) into the output store."""

    def manifest(
        self, batch_id: str, *, cost_of: Callable[[ImageRequest, str], float | None] | None = None
    ) -> dict[str, Any]:
        info = self.batch(batch_id)
        if info is None:
            raise KeyError(f"no batch {batch_id}")
        records = []
        for item in self.items(batch_id):
            record = item.to_result()
            if cost_of is not None and item.status == "succeeded" and item.model:
                try:
                    record["cost_usd"] = cost_of(item.request, item.model)
                except Exception:  # noqa: BLE001 - an estimate for the reader, never a reason to fail
                    pass
            records.append(record)
        batch = info.to_dict()
        for name in ("created_at", "started_at", "finished_at"):
            batch[name] = iso_time(batch[name])
        return {"batch": batch, "items": records}

    def write_manifest(
        self,
        batch_id: str,
        output_root: str | os.PathLike | None = None,
        *,
        cost_of: Callable[[ImageRequest, str], float | None] | None = None,
    ) -> Path | str:
        """Write `<output_root>/<batch_id>/manifest.json` and the gallery `index.html` beside it,
        each whole (shared.storage); returns the manifest's address (a local Path, or a store
        URL). output_root defaults to the one recorded with the batch. `cost_of(request, model)`
        estimates what a succeeded item cost (`cost_usd` in the manifest and the gallery).
        OSError (StorageError, StorageUnavailableError) when the store refuses or does not answer."""
        from shared.gallery import render_gallery
        from shared.storage import open_store

        data = self.manifest(batch_id, cost_of=cost_of)
        store = open_store(
            output_root if output_root is not None else data["batch"]["output_root"],
            environ=None if self.store_environ is None else dict(self.store_environ),
        )
        page = render_gallery(data, keys_of=lambda item: item_keys(item, store.location))
        # Recorded text that UTF-8 cannot encode (a lone surrogate, from before submit refused it)
        # must not stop the manifest: it is written as a character reference in the page and as a
        # JSON \u escape in the manifest, which reads back as the same string.
        store.put(
            f"{batch_id}/index.html",
            page.encode("utf-8", "xmlcharrefreplace"),
            overwrite=True,
            content_type="text/html; charset=utf-8",
        )
        manifest_key = f"{batch_id}/manifest.json"
        manifest = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        store.put(
            manifest_key,
            manifest.encode("utf-8", "backslashreplace"),
            overwrite=True,
            content_type="application/json",
        )
        if data["batch"].get("finished_at"):
            self.redis.hset(self.keys.batch(batch_id), "manifest_at", str(time.time()))
        return Path(store.url(manifest_key)) if not store.location.remote else store.url(manifest_key)


def item_keys(item: Mapping[str, Any], location: Location) -> list[str]:
    """An item's output keys, relative to the output root: from its `files` records, else from
    its `outputs` addresses (records written before files were recorded)."""
    files = item.get("files") or []
    if files:
        return [str(f["key"]) for f in files]
    keys = [location.key_of(str(address)) for address in item.get("outputs") or []]
    return [k for k in keys if k]
