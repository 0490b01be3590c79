"""The batch ledger: every batch and item's state in Redis, the result store of the fleet.

Celery results are ignored; this ledger is what `producer status/results` read and what workers
write. Every state change is one Lua script (shared/lua/ledger_*.lua) that updates the per-status
counters in the same step, so a batch's progress is one HGETALL, and terminal states are final: a late or
duplicate execution can never turn `succeeded` into `failed`.

Layout under the key prefix (shared.keys.Keys):
- `batches` (zset batch id -> created_at) for listing;
- `batch:<id>` (hash) batch fields + `n:<status>` counters;
- `batch:<id>:item:<i>` (hash) status, current attempt/model, request JSON, outcome,
  `enqueued_at` (when a message for it was last sent; absent: never enqueued), and one
  `att:<n>` JSON record per attempt (model, prediction_id, status, error, seconds);
- `batch:<id>:live` (zset index -> last sign of life) of the non-terminal items, kept by the same
  scripts, so the recovery sweep (workers.recovery) reads only the items that look abandoned;
- `fingerprint:<sha256>` (string -> batch id): the latest batch with that content (see
  `batch_fingerprint`), so submitting the same file twice is noticed instead of paid twice. It is
  trusted only while that batch exists, and removed with it by `prune_finished`.
Items also keep `sent_tasks`: the ids of the last task messages sent for them (for revoking at
cancel).
"""

from __future__ import annotations

from shared.ledger.cancel_reset import LedgerCancelReset
from shared.ledger.liveness import LedgerLiveness
from shared.ledger.staging import LedgerStaging
from shared.ledger.transitions import LedgerTransitions


class Ledger(LedgerStaging, LedgerTransitions, LedgerCancelReset, LedgerLiveness):
    """Thread-safe (redis-py clients are); one per process is plenty."""
