"""`producer`: submit batches, follow them, read results, adjust the account-wide limits.

A thin layer over producer.api: its modules only parse options, print and pick exit codes.
One module per command group: submit (with plan: what it shows first), following (`wait`),
batches (`status`, `results`, `list`), batch_actions (`cancel`, `retry`), fetching (`fetch`),
fleet (`info`, `flower`, `metrics`), budget, limits, models, init; exits holds the exit codes
and turns errors into them, app the group, main adds the commands and is the entry point.

Exit codes: 0 every item succeeded (or the command did what it was asked), 1 some item failed,
was canceled or substituted (or another error), 2 bad input or usage, 3 Redis unreachable or
no worker consuming the queue (for `init`: the Replicate API unreachable), 130 stopped waiting
with Ctrl-C (the batch keeps running).
"""

from producer.cli.main import cli, main

__all__ = ["cli", "main"]
