"""The batch ledger: every batch and item's state in Redis (ledger.py says how it is kept; its Lua
in shared/lua/). `Ledger` is the sum of one class per job:

- records.py: what is stored, read back (BatchInfo, ItemRecord, AttemptRecord, Transition,
  CancelResult; STATUSES, TERMINAL) and the parsing of stored text;
- identity.py: a batch's id and its content fingerprint;
- base.py: the client, keys and scripts every part works on;
- queries.py: read-only questions (a batch, the list, options, items);
- staging.py: recording a batch (staged in chunks, then one short call);
- transitions.py: an item's state changes;
- cancel_reset.py: canceling a batch, resetting its failed items;
- liveness.py: what the recovery sweep reads and keeps, and pruning;
- manifest.py: the manifest and the gallery written beside the outputs.
"""

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
