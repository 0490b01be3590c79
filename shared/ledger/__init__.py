"""The batch ledger: every batch and item's state in Redis (ledger.py, README.md; Lua in shared/lua/)."""

from shared.ledger.identity import batch_fingerprint, comparable_request, new_batch_id
from shared.ledger.ledger import Ledger
from shared.ledger.manifest import item_keys
from shared.ledger.records import (
    STATUSES,
    TERMINAL,
    AttemptRecord,
    BatchInfo,
    CancelResult,
    ItemRecord,
    Transition,
    iso_time,
)
from shared.ledger.staging import CREATE_CHUNK

__all__ = [
    "CREATE_CHUNK",
    "STATUSES",
    "TERMINAL",
    "AttemptRecord",
    "BatchInfo",
    "CancelResult",
    "ItemRecord",
    "Ledger",
    "Transition",
    "batch_fingerprint",
    "comparable_request",
    "item_keys",
    "iso_time",
    "new_batch_id",
]
