"""The producer: validate prompts, record batches, enqueue tasks, follow them (CLI: producer.cli).

The errors its functions raise are re-exported here (all defined in shared.errors): catch
FleetError for any of them, InputError for bad input (every problem in `.problems`).
"""

from producer.api import (
    Batch,
    CancelOutcome,
    budget_status,
    generate,
    latest_batch,
    limit_sources,
    limits_status,
    list_batches,
    open_batch,
    reset_limits,
    set_batch_limit,
    set_daily_budget,
    set_limits,
    submit,
    validate,
    worker_modes,
)
from shared.errors import (
    BudgetExceededError,
    ConfigError,
    DuplicateBatchError,
    FleetError,
    InputError,
    NoWorkerError,
    Problem,
    RedisUnavailableError,
    ReplicateCallError,
)

__all__ = [
    "Batch",
    "CancelOutcome",
    "submit",
    "validate",
    "generate",
    "open_batch",
    "latest_batch",
    "list_batches",
    "limits_status",
    "limit_sources",
    "worker_modes",
    "set_limits",
    "reset_limits",
    "budget_status",
    "set_daily_budget",
    "set_batch_limit",
    "FleetError",
    "InputError",
    "Problem",
    "DuplicateBatchError",
    "ConfigError",
    "RedisUnavailableError",
    "NoWorkerError",
    "ReplicateCallError",
    "BudgetExceededError",
]
