"""The producer: validate prompts, record batches, enqueue tasks, follow them (CLI: producer.cli)."""
from producer.api import (Batch, CancelOutcome, DuplicateBatchError, generate, limits_status, list_batches,
                          open_batch, set_limits, submit, validate)

__all__ = ["Batch", "CancelOutcome", "DuplicateBatchError", "submit", "validate", "generate", "open_batch",
           "list_batches", "limits_status", "set_limits"]
