"""The producer's Python API; the CLI (producer/cli/) is a thin layer over it.

    from producer import submit, generate
    batch = submit("prompts.json")              # settings: Settings.load() (.env + environment)
    batch.wait(progress=True)
    for record in batch.results(): ...

    paths = generate("a red fox in snow", "black-forest-labs/flux-dev", aspect_ratio="16:9")

Every function takes `settings=` (a shared.settings.Settings) to use another configuration.
Everything is validated before anything is written: a bad input raises InputError listing every
problem, and neither Redis nor the disk has changed. Submitting content that a batch still in
Redis already has (the same file twice) raises DuplicateBatchError instead of paying twice;
`again=True` submits it as a new batch on purpose.

One module per job: validation (ids, the source, `validate`), submission (`submit`; with
pricing and resubmission), one_image (`generate`), batch (the `Batch` handle; its cancel, retry
and wait in canceling, retrying, waiting), fleet (`list_batches`, `queue_depths`, `fleet_info`), overview (`batch_overviews`),
limits, budget; connections opens the ledger, registry, budget and limiter from settings.
"""

from producer.api.batch import Batch, describe_batch, fetch_from_store, latest_batch, open_batch
from producer.api.budget import budget_status, set_batch_limit, set_daily_budget, wake_held
from producer.api.canceling import CancelOutcome, revoke_tasks
from producer.api.fleet import fleet_info, list_batches, queue_depths, worker_modes
from producer.api.limits import limit_sources, limits_status, reset_limits, set_limits
from producer.api.one_image import generate
from producer.api.overview import BatchOverview, batch_overviews
from producer.api.submission import submit
from producer.api.validation import check_batch_id, load_source, new_batch_id, validate
from shared.errors import (
    DuplicateBatchError,
    FleetError,
    InputError,
    NoWorkerError,
    Problem,
    RedisUnavailableError,
    ReplicateCallError,
)

__all__ = [
    # submitting
    "validate",
    "submit",
    "generate",
    "load_source",
    "new_batch_id",
    "check_batch_id",
    # one batch
    "Batch",
    "CancelOutcome",
    "open_batch",
    "latest_batch",
    "describe_batch",
    "fetch_from_store",
    "revoke_tasks",
    # the fleet
    "list_batches",
    "batch_overviews",
    "BatchOverview",
    "queue_depths",
    "fleet_info",
    "worker_modes",
    "limits_status",
    "limit_sources",
    "set_limits",
    "reset_limits",
    "budget_status",
    "set_daily_budget",
    "set_batch_limit",
    "wake_held",
    # the errors its functions raise (defined in shared.errors)
    "FleetError",
    "InputError",
    "Problem",
    "DuplicateBatchError",
    "RedisUnavailableError",
    "NoWorkerError",
    "ReplicateCallError",
]
