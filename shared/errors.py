"""One exception hierarchy for the whole project.

Callers catch `FleetError` for anything we raise on purpose; the subclasses say what kind of
trouble it is, which decides what happens next (retry, fall back, fail the item, exit code).

    FleetError
    ├── ConfigError
    ├── SchemaError                 (a model's published schema cannot be used)
    ├── InputError                  (exit 2; carries every Problem)
    │   ├── UnknownModelError
    │   ├── UnpricedModelError
    │   ├── ParamValueError         (a value does not suit a model parameter)
    │   └── DuplicateBatchError     (the same content is a batch in Redis already)
    ├── DuplicateFingerprintError   (the ledger's atomic check behind DuplicateBatchError)
    ├── StillCancelingError         (retry while a canceled batch's items still run)
    ├── BatchBeingRecordedError     (another producer is recording the same batch id right now)
    ├── RedisUnavailableError
    ├── NoWorkerError
    ├── LimiterError
    │   ├── LeaseLostError
    │   └── AcquireTimeoutError
    ├── ReplicateCallError
    │   ├── TransientError
    │   ├── PermanentModelError
    │   └── ApiUnreachableError     (`producer init`: no usable answer from the account endpoint)
    ├── LocalError
    ├── CanceledError
    ├── RequeueError                (control flow in a worker's attempt: run it again later)
    │   ├── WriteRetryError
    │   └── UnsentPostError         (a creation's POST held back: too late after the last check)
    ├── SupersededError             (control flow: another run owns the attempt now)
    └── AttemptFailedError          (raised by a task once its outcome is recorded: Flower's FAILURE)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class FleetError(Exception):
    """Base of every error this project raises deliberately."""


class ConfigError(FleetError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input, pointing at the item and field."""

    message: str
    index: int | None = None  # item position in prompts.json (0-based), None for file-level
    item_id: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = []
        if self.index is not None:
            where.append(f"item {self.index}" + (f" (id {self.item_id!r})" if self.item_id else ""))
        if self.field:
            where.append(f"field {self.field!r}")
        return (", ".join(where) + ": " if where else "") + self.message


class InputError(FleetError):
    """The user's input is invalid; carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, (Problem, str)):
            problems = [problems if isinstance(problems, Problem) else Problem(problems)]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UnknownModelError(InputError):
    """A model name that the registry does not know."""


class UnpricedModelError(InputError):
    """A model without a known price where spending is limited (shared.models.pricing)."""


class SchemaError(FleetError):
    """A model's published schema cannot be used (none published, no Input, an output that is
    not files)."""


class ParamValueError(InputError):
    """A value does not suit a model parameter. `kind` says how ("type", "enum" or "range"), so
    routing can map, clamp or drop it; for "range", `clamped` is the nearest allowed value."""

    def __init__(self, message: str, kind: str, *, clamped: Any = None):
        super().__init__(message)
        self.kind = kind
        self.clamped = clamped


class DuplicateBatchError(InputError):
    """The same content (validated, routed requests and options) is already a batch in Redis.
    Nothing was recorded or enqueued. `batch_id` and `info` (its ledger BatchInfo) name it."""

    def __init__(self, problem: Problem | str, *, batch_id: str, info: Any = None):
        super().__init__(problem)
        self.batch_id = batch_id
        self.info = info


class DuplicateFingerprintError(FleetError):
    """The ledger found, in the same atomic step that would record a batch, a batch still in Redis
    with the same content fingerprint; nothing changed. `batch_id` names that batch."""

    def __init__(self, batch_id: str):
        super().__init__(f"batch {batch_id} has the same content")
        self.batch_id = batch_id


class BatchBeingRecordedError(FleetError):
    """Another producer is recording a batch with this id right now (its items are being staged),
    or one that died doing so less than half a minute ago; nothing was recorded."""

    def __init__(self, batch_id: str):
        super().__init__(
            f"batch {batch_id} is being recorded by another producer right now; try again in a minute"
        )
        self.batch_id = batch_id


class StillCancelingError(FleetError):
    """Resetting the items of a canceled batch while some of them are still running (being
    canceled by their workers); nothing changed."""

    def __init__(self, batch_id: str, open_items: int):
        super().__init__(f"batch {batch_id} is still being canceled: {open_items} item(s) not stopped yet")
        self.batch_id = batch_id
        self.open_items = open_items


class RedisUnavailableError(FleetError):
    """Redis (broker, limiter and ledger) cannot be reached."""


class NoWorkerError(FleetError):
    """No Celery worker is consuming the queue."""


class LimiterError(FleetError):
    """The distributed limiter could not grant what was asked."""


class LeaseLostError(LimiterError):
    """A slot lease expired (or was revoked) while its holder still thought it held it."""


class AcquireTimeoutError(LimiterError):
    """Waiting for a slot or token took longer than the caller allowed (or it was told to stop)."""

    def __init__(self, message: str = "", *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after  # seconds until a token would be free, when known


class BudgetExceededError(FleetError):
    """The attempt's price does not fit a spending limit (shared.budget): nothing was created,
    and the item waits as `held` until the limit is raised or the UTC day turns."""

    def __init__(self, scope: str, limit: int):
        from shared.budget.money import usd

        self.scope = scope  # "batch" | "daily"
        self.limit = limit  # micro-USD
        self.amount = 0  # micro-USD the refused attempt needed (set by the worker that was refused)
        what = "batch limit" if scope == "batch" else "daily budget"
        super().__init__(f"{what} {usd(limit)} USD reached")


class ReplicateCallError(FleetError):
    """Something went wrong talking to Replicate or with the prediction itself."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        prediction_id: str | None = None,
        ambiguous: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.prediction_id = prediction_id
        # A create that failed this way may have created the prediction anyway (5xx, a read
        # timeout, a dropped connection): it is reconciled before any new creation.
        self.ambiguous = ambiguous


class TransientError(ReplicateCallError):
    """Worth retrying the same model later: 429, 5xx, timeouts, connection errors, `aborted`."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class PermanentModelError(ReplicateCallError):
    """This model will not produce this image (prediction failed, NSFW, input rejected):
    move on along the fallback route."""


class ApiUnreachableError(ReplicateCallError):
    """The account endpoint gave no usable answer (connection refused, DNS, TLS, timeout, an
    error status, not JSON): the address is wrong or the service is down. `reason` says which."""

    def __init__(self, url: str, reason: str, *, status: int | None = None):
        super().__init__(f"cannot reach {url}: {reason}", status=status)
        self.url = url
        self.reason = reason


class LocalError(FleetError):
    """A problem on our side (disk full, unwritable output dir, bad download). Never triggers a
    paid fallback: the item fails with this reason."""


class RefusedOutputURLError(LocalError):
    """An output URL (or a redirect from it) leads to an address outputs may not come from:
    loopback, private, link-local (cloud metadata), multicast or reserved. Fetching it could hand
    an internal service's answer to whoever controls the URL (a model, a compromised CDN)."""


# Storage errors are OSErrors too: they are input/output failures, and code that guarded a local
# write with `except OSError` (manifests, the recovery sweep) keeps guarding it on any store.
class StorageError(LocalError, OSError):
    """The output store refused for good (403, no such bucket or container, disk full, an object
    that exists and may not be overwritten): the item fails as a local error, no paid fallback."""


class OutputExistsError(StorageError):
    """An output object exists already with other content, and the batch may not overwrite it."""


class StorageUnavailableError(FleetError, OSError):
    """The output store did not answer (timeout, 5xx, connection refused). The same write is
    tried again later; the prediction is never made again for it."""


class WebhookRejectedError(FleetError):
    """A delivery at the webhook receiver that is not Replicate's: malformed (status 400), or
    forged or outside the timestamp tolerance (401). It changes nothing."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


class CanceledError(FleetError):
    """The batch or item was canceled."""


# --- control flow of an attempt (workers) --------------------------------------------------------
# Not failures: raised inside an attempt's run to unwind it to the place that decides what happens
# next (workers.runner). They never reach a caller outside the workers.
class RequeueError(FleetError):
    """Control flow, not a failure: run this same attempt again later (it then resumes its
    prediction or reconciles its unresolved create). `counted` re-runs are bounded by
    max_transient_retries; uncounted ones (no slot, no token in time, a shutdown, a create still
    settling) cost nothing and are bounded by their own waits."""

    def __init__(self, reason: str, *, countdown: float = 0.0, counted: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.countdown = countdown
        self.counted = counted


class WriteRetryError(RequeueError):
    """A succeeded prediction's outputs could not be written yet (the store did not answer): the
    same attempt runs again later and writes them (downloading again while the output URLs are
    valid), never creating a prediction again; once the retries are spent, the item fails as a
    local error."""


class UnsentPostError(RequeueError):
    """A creation's POST was held back just before it left the process: more time passed since
    the last check (which stamped `posting_at`) than the settling window allows for (the process
    stalled: SIGSTOP, a VM or GC pause). Sent now, it could reach Replicate after another run
    concluded from `posting_at` that nothing was created, and be paid twice. Nothing was sent;
    `posting_at` stays, so the attempt's next run reconciles before any creation."""

    def __init__(self, reason: str):
        super().__init__(reason, counted=False)


class SupersededError(FleetError):
    """Control flow, not a failure: another run owns this attempt now (its claim was taken, or a
    prediction was recorded meanwhile); this run stops without a trace."""


class AttemptFailedError(FleetError):
    """What a task raises once its attempt failed and everything that follows is recorded and
    held (the item's end, or the next attempt's send): the task shows as FAILURE with this reason
    in Flower. Nothing acts on it; the message is acked like any other (acks_on_failure)."""
