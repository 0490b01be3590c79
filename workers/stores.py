"""Each batch's output location, as recorded at submit, opened once per process.

The location is decided by the producer (OUTPUT_DIR or --output-dir, probed there) and recorded
with the batch; every worker writes the batch's outputs, manifest and gallery there, whatever its
own OUTPUT_DIR says. A batch recorded without one (before locations were recorded) uses this
worker's OUTPUT_DIR.
"""

from __future__ import annotations

import threading

from shared.ledger import Ledger
from shared.settings import Settings
from shared.storage import Store, open_store


class BatchStores:
    def __init__(self, ledger: Ledger, settings: Settings):
        self.ledger = ledger
        self.settings = settings
        self._roots: dict[str, str] = {}  # batch id -> its output root (never changes)
        self._stores: dict[str, Store] = {}  # output root -> its store (obstore clients pool connections)
        self._lock = threading.Lock()

    def root_of(self, batch_id: str) -> str:
        root = self._roots.get(batch_id)
        if root is None:
            info = self.ledger.batch(batch_id)
            root = (info.output_root if info is not None else "") or str(self.settings.output_dir)
            with self._lock:
                if len(self._roots) > 10_000:
                    self._roots.clear()
                self._roots[batch_id] = root
        return root

    def for_batch(self, batch_id: str) -> Store:
        root = self.root_of(batch_id)
        with self._lock:
            store = self._stores.get(root)
            if store is None:
                store = self._stores[root] = open_store(
                    root, environ=self.settings.store_environ(), timeout=self.settings.store_timeout
                )
            return store
