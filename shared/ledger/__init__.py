"""The batch ledger: every batch and item's state in Redis (see ledger.py; its Lua in shared/lua/)."""

from shared.ledger.ledger import (
    CREATE_CHUNK,
    STATUSES,
    TERMINAL,
    AttemptRecord,
    BatchInfo,
    CancelResult,
    ItemRecord,
    Ledger,
    Transition,
    batch_fingerprint,
    comparable_request,
    iso_time,
    item_keys,
    new_batch_id,
)

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
