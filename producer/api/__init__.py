"""The producer's Python API; the CLI (producer/cli.py) is a thin layer over it.

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
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from producer.progress import (
    Reporter,
    Snapshot,
    format_counts,
    format_duration,
    in_flight_by_batch,
    make_reporter,
    snapshot_from_info,
)
from shared.errors import (
    DuplicateBatchError,
    DuplicateFingerprintError,
    FleetError,
    InputError,
    NoWorkerError,
    Problem,
    RedisUnavailableError,
    ReplicateCallError,
    StillCancelingError,
)
from shared.keys import Keys
from shared.redis_conn import connect
from shared.request import ImageRequest
from shared.settings import Settings

if TYPE_CHECKING:
    from producer.prompts import ParsedRequests
    from producer.references import References
    from shared.ledger import Ledger
    from shared.models import ModelRegistry
    from shared.storage.store import Store

# How long `wait` gives workers to answer a ping, and how long without any progress before it
# asks again (a fleet that died mid-batch is reported instead of waited on forever).
WORKER_PING_SECONDS = 2.0
WORKER_RECHECK_SECONDS = 30.0
REVOKE_CHUNK = 500  # task ids per revoke broadcast


def _duplicate_batch_error(info: Any) -> DuplicateBatchError:
    """The error for content that batch `info` (still in Redis) already has, saying how to go on."""
    return DuplicateBatchError(
        Problem(
            f"the same items were submitted already as batch {info.id}, {describe_batch(info)}; "
            f"nothing was enqueued. Follow it with `producer status {info.id}` (files: "
            f"`producer results {info.id}`), or submit them again as a new batch on purpose, paying "
            "again, with --again (Python: again=True)"
        ),
        batch_id=info.id,
        info=info,
    )


def describe_batch(info: Any, now: float | None = None) -> str:
    """'created 3m12s ago, running: 40/100 done' — a batch's age and state in a few words."""
    now = time.time() if now is None else now
    snap = snapshot_from_info(info, now=now)
    age = format_duration(max(now - float(info.created_at), 0.0))
    if snap.finished:
        state = (
            f"finished, all {snap.total} succeeded"
            if snap.all_succeeded
            else f"finished{' (canceled)' if snap.canceled else ''}: {format_counts(snap.counts)}"
        )
    elif snap.canceled:
        state = f"being canceled: {snap.done}/{snap.total} done"
    else:
        state = f"running: {snap.done}/{snap.total} done"
    return f"created {age} ago, {state}"


@dataclass(frozen=True)
class CancelOutcome:
    """What `Batch.cancel()` did. `int(outcome)` is the number of items canceled now."""

    canceled: int  # queued items marked canceled now
    revoked: int  # their task messages revoked (best effort: workers drop them on receipt)
    revoke_error: str | None = None  # why revoking stopped early, if it did
    stopping: int = 0  # running items (waiting for a slot, at Replicate, saving) their workers stop
    at_replicate: int = 0  # of those, predictions in flight that the workers cancel at Replicate
    already_finished: bool = False  # the batch had ended: nothing to cancel, nothing changed

    def __int__(self) -> int:
        return self.canceled


# --- batch ids ----------------------------------------------------------------------------------
def new_batch_id() -> str:
    """The ledger's id format (b-YYYYMMDD-<6 hex>), so every tool names batches alike."""
    from shared.ledger import new_batch_id as ledger_batch_id

    return ledger_batch_id()


def check_batch_id(batch_id: str) -> str:
    from producer.prompts import batch_id_problem

    problem = batch_id_problem(batch_id)
    if problem is not None:
        raise InputError(problem)
    return batch_id


# --- the pieces other helpers provide, imported when first needed --------------------------------
def _ledger(settings: Settings, client=None):
    from shared.ledger import Ledger

    return Ledger(
        client if client is not None else connect(settings),
        Keys(settings.key_prefix),
        store_environ=settings.store_environ(),
    )


def _registry(registry: ModelRegistry | None = None, settings: Settings | None = None) -> ModelRegistry:
    if registry is not None:
        return registry
    from shared.models import load_registry

    # The same registry the workers load (FLEET_MODELS_FILE layered over the built-in models).
    return load_registry(extra=settings.models_file if settings is not None else None)


def load_source(source: Any) -> Any:
    """A path (str or PathLike) is read as prompts.json; anything else is already-loaded data
    (a list of prompt strings, a list of items, or an object with defaults and `items`)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(Problem(f"{str(path)!r} is not a readable file", field="FILE"))
        from producer.prompts import load_prompts_file

        return load_prompts_file(path)
    if isinstance(source, (list, tuple)):
        return list(source)
    if isinstance(source, dict):
        return source
    raise InputError(
        Problem(f"expected a file path, a list or an object, not {type(source).__name__}", field="source")
    )


def _settings(settings: Settings | None) -> Settings:
    """The given settings, else the environment's and .env's (Settings.load())."""
    return settings if settings is not None else Settings.load()


def validate(
    source: Any,
    *,
    settings: Settings | None = None,
    model: str | None = None,
    params: dict | None = None,
    batch_id: str | None = None,
    overwrite: bool = False,
    registry: ModelRegistry | None = None,
    fallback: bool = True,
) -> ParsedRequests:
    """Parse, validate and route every item; InputError with every problem. Writes nothing.
    The list's `notes` (producer.prompts.ParsedRequests) say what the user should still know;
    its `registry` is the one given, with the schemas of the models the items use.
    `fallback=False`: every item stays on its first model (no paid fallback)."""
    from producer.models import with_schemas_for
    from producer.prompts import parse_prompts
    from shared.storage import parse_location

    settings = _settings(settings)
    batch_id = check_batch_id(batch_id) if batch_id is not None else new_batch_id()
    data = load_source(source)
    # Models outside the registry are described by their published schema (read once, cached).
    registry = with_schemas_for(data, _registry(registry, settings), settings, model=model)
    # A folder is checked name by name here; on an object store, `submit` looks for existing
    # outputs once it has probed that the store can be written.
    requests = parse_prompts(
        data,
        batch_id=batch_id,
        output_root=parse_location(settings.output_dir).path,
        registry=registry,
        model=model,
        params=dict(params or {}),
        overwrite=overwrite,
        fallback=fallback,
    )
    requests.registry = registry
    return requests


# --- the batch handle ---------------------------------------------------------------------------
class Batch:
    """A submitted batch (or, with dry_run, the plan of one). Cheap to create; every method reads
    the current state from Redis."""

    def __init__(
        self,
        batch_id: str,
        settings: Settings | None = None,
        *,
        requests: Sequence[ImageRequest] | None = None,
        created: bool = True,
        dry_run: bool = False,
        registry: ModelRegistry | None = None,
    ):
        self.id = batch_id
        self.settings = _settings(settings)
        self.requests = list(requests) if requests is not None else None
        # What validation wants the user to know (e.g. the default model was used).
        self.notes: list[str] = list(getattr(requests, "notes", None) or [])
        # False when the batch id existed already (nothing was enqueued) or for a dry run.
        self.created = created
        self.dry_run = dry_run
        self.registry = registry
        # Another batch still in Redis with the same content (submitted with again=True or an
        # explicit new batch id): its BatchInfo, for a note. None otherwise.
        self.duplicate_of: Any = None
        self._ledger_obj = None
        # The spending limits in force at submit (micro-USD; None: none), for the plan.
        self.max_cost: int | None = None
        self.daily_limit: int | None = None

    def __repr__(self) -> str:
        return f"Batch({self.id!r}{', dry_run' if self.dry_run else ''})"

    @property
    def ledger(self):
        if self.dry_run:
            raise FleetError(f"batch {self.id} is a dry run: nothing was recorded")
        if self._ledger_obj is None:
            self._ledger_obj = _ledger(self.settings)
        return self._ledger_obj

    # --- reading -------------------------------------------------------------------------------
    def info(self):
        info = self.ledger.batch(self.id)
        if info is None:
            raise InputError(
                Problem(
                    f"no batch {self.id!r} in Redis (prefix {self.settings.key_prefix!r}); "
                    "`producer list` shows the recent ones",
                    field="BATCH",
                )
            )
        return info

    def status(self, *, with_slots: bool = True) -> Snapshot:
        """Counts by state, rate, elapsed, ETA (one ledger read) and the account's slots."""
        return snapshot_from_info(
            self.info(), limiter_status=_limiter_status_or_none(self.settings) if with_slots else None
        )

    def spend(self):
        """The batch's limit, spend, reservations and held items (shared.budget.BatchSpend)."""
        self.info()
        return _budget(self.settings, self.ledger.redis).batch(self.id)

    def held_items(self) -> dict[int, str]:
        """Index -> why each held item waits ("batch limit 0.50 USD reached")."""
        self.info()
        return {
            item.index: item.held_reason or "held by a spending limit"
            for item in self.ledger.items(self.id)
            if item.status == "held"
        }

    def results(self) -> list[dict[str, Any]]:
        """The manifest records, one per item, in submission order."""
        self.info()
        return [item.to_result() for item in self.ledger.items(self.id)]

    def write_manifest(self) -> Path | str:
        """Writes the manifest and the gallery beside it; returns the manifest's local Path, or
        its store URL."""
        return self.ledger.write_manifest(self.id, cost_of=self._cost_of)

    def model_registry(self) -> ModelRegistry:
        """The registry the batch was validated with, else the one the workers load."""
        return self.registry if self.registry is not None else _registry(None, self.settings)

    def _cost_of(self, request: ImageRequest, model: str) -> float | None:
        from shared.routing import adapt_params

        registry = self.model_registry()
        params, _, _ = adapt_params(request.params, model, registry, strict=False)
        return registry.get(model).cost(params)

    @property
    def output_root(self) -> Path | str:
        """Where the batch's files are, as recorded at submit: a local Path or a store URL."""
        from shared.storage import is_remote

        root = getattr(self.info(), "output_root", None) or self.settings.output_dir
        return str(root) if is_remote(root) else Path(root)

    def output_paths(self, record: dict[str, Any]) -> list[Path | str]:
        """An item's outputs: local Paths, or store URLs (`producer fetch` brings those home)."""
        from shared.storage import is_remote

        root = self.output_root
        if isinstance(root, str):
            return [str(p) for p in record.get("outputs") or []]
        return [
            p if is_remote(p) else (Path(p) if Path(p).is_absolute() else root / p)
            for p in record.get("outputs") or []
        ]

    def fetch(self, to: str | os.PathLike = ".", *, progress: Any = None):
        """Copy the batch's outputs, manifest and gallery from its output location into `to`
        (`to/<batch>/...`, as laid out in the store). Resumable; returns a FetchReport whose
        `.complete` says whether every output of every succeeded item is there."""
        from producer.fetch import fetch_batch
        from shared.storage import open_store

        self.info()
        manifest = self.ledger.manifest(self.id, cost_of=self._cost_of)
        store = open_store(self.output_root, environ=self.settings.store_environ())
        return fetch_batch(manifest, store, Path(to), progress=progress)

    # --- acting --------------------------------------------------------------------------------
    def cancel(self) -> CancelOutcome:
        """Flags the batch canceled: queued (pending) items become canceled at once and their
        task messages are revoked (best effort: a worker that gets one anyway sees the item is
        canceled and does nothing); workers cancel the running predictions at Replicate and free
        their slots. `int()` of the outcome is how many items were canceled now."""
        from shared.scheduler import Scheduler

        self.info()
        result = self.ledger.cancel(self.id)
        if result.already_finished:
            return CancelOutcome(canceled=0, revoked=0, already_finished=True)
        _budget(self.settings, self.ledger.redis).drop_held(self.id)  # held items are canceled too
        status = _limiter_status_or_none(self.settings)
        at_replicate = in_flight_by_batch(status.holders if status else []).get(self.id, 0)
        # Sends still held in the schedule are dropped (the feeder would skip them anyway: their
        # items are canceled); only the few messages already in the broker need revoking.
        Scheduler(self.ledger.redis, self.ledger.keys).drop_batch(self.id)
        revoked, error = revoke_tasks(self.settings, result.task_ids)
        return CancelOutcome(
            canceled=result.canceled,
            revoked=revoked,
            revoke_error=error,
            stopping=result.stopping,
            at_replicate=min(at_replicate, result.stopping),
        )

    def retry(self, *, include_canceled: bool = False) -> list[int]:
        """Failed items (and canceled ones with `include_canceled`) back to pending, each with a
        fresh attempt on the first model of its route, and enqueued again; returns their indexes.

        On a canceled batch this lifts the cancel, so the retried items run (the other canceled
        items stay canceled); it is refused (InputError) while items of that batch are still
        running, i.e. still being canceled."""
        from workers.dispatch import enqueue_items

        self.info()
        # An item whose prediction succeeded but whose outputs were not written (the output
        # location refused them) is retried on that prediction: downloaded again while its
        # output URL is valid (an hour; after that the next attempt creates anew), never paid twice.
        unwritten = {
            item.index: record
            for item in self.ledger.items(self.id)
            if item.status == "failed" and (record := _unwritten_prediction(item)) is not None
        }
        try:
            indexes = list(
                self.ledger.reset_failed(
                    self.id,
                    include_canceled=include_canceled,
                    models={index: str(record.model) for index, record in unwritten.items()},
                )
            )
        except StillCancelingError as exc:
            raise InputError(
                Problem(
                    f"batch {self.id} is still being canceled: {exc.open_items} item(s) have not stopped yet. "
                    f"Retry once `producer status {self.id}` shows it finished",
                    field="BATCH",
                )
            ) from None
        if unwritten:
            from workers.attempts import AttemptRef, CreationRecords

            records = CreationRecords(self.ledger.redis, self.ledger.keys)
            for index in set(indexes) & set(unwritten):
                record = unwritten[index]
                old = AttemptRef(self.id, index, record.attempt)
                records.carry_over(old, old._replace(attempt=record.attempt + 1), str(record.prediction_id))
        if indexes:
            enqueue_items(self.settings, self.id, [self.ledger.request(self.id, i) for i in indexes])
        return indexes

    def wait(
        self,
        progress: Any = None,
        timeout: float | None = None,
        *,
        poll_interval: float = 1.0,
        check_workers: bool = True,
        interval: float = 10.0,
    ) -> Snapshot:
        """Block until every item is terminal, or all that is left is held by a spending limit
        (`.stalled_on_budget`), or `timeout` seconds passed (check `.finished` on the returned
        snapshot). `progress`: see producer.progress.make_reporter.

        Raises NoWorkerError within a few seconds when unfinished work has no worker consuming
        the queue. Ctrl-C (KeyboardInterrupt) propagates; the batch keeps running either way.
        """
        reporter: Reporter | None = make_reporter(progress, interval=interval)
        ledger = self.ledger
        limiter = _limiter_or_none(self.settings)
        deadline = None if timeout is None else time.monotonic() + timeout
        pinger: _WorkerWatch | None = None  # started only if there is something left to wait for
        snap: Snapshot | None = None
        try:
            last_done, last_change = -1, time.monotonic()
            while True:
                snap = snapshot_from_info(self._info_from(ledger), limiter_status=_safe_status(limiter))
                if reporter is not None:
                    reporter.update(snap)
                if snap.finished or snap.stalled_on_budget:
                    break
                if pinger is None:
                    pinger = _WorkerWatch(self.settings, enabled=check_workers)
                now = time.monotonic()
                if snap.done != last_done:
                    last_done, last_change = snap.done, now
                pinger.poll(stalled_for=now - last_change, batch_id=self.id)
                if deadline is not None and now >= deadline:
                    break
                time.sleep(poll_interval if deadline is None else max(min(poll_interval, deadline - now), 0))
        finally:
            if pinger is not None:
                pinger.close()
            if reporter is not None:
                reporter.close(snap)
            if limiter is not None:
                _close_quietly(limiter)
        return snap

    def _info_from(self, ledger):
        info = ledger.batch(self.id)
        if info is None:
            raise InputError(Problem(f"no batch {self.id!r}", field="BATCH"))
        return info


class _WorkerWatch:
    """Asks Celery in the background whether any worker consumes the queue: at the start, and
    again whenever the batch has made no progress for WORKER_RECHECK_SECONDS."""

    def __init__(self, settings: Settings, *, enabled: bool):
        self.settings = settings
        self.enabled = enabled
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="worker-ping") if enabled else None
        )
        self._future = self._ping()
        self._last_ping = time.monotonic()

    def _ping(self) -> concurrent.futures.Future[list[str]] | None:
        from workers.dispatch import workers_alive

        if self._pool is None:  # not enabled
            return None
        return self._pool.submit(workers_alive, self.settings, WORKER_PING_SECONDS)

    def poll(self, *, stalled_for: float, batch_id: str) -> None:
        if not self.enabled:
            return
        if self._future is not None and self._future.done():
            names = self._future.result()
            self._future = None
            if not names:
                raise NoWorkerError(
                    f"no worker is consuming queue {self.settings.queue!r}; batch {batch_id} is recorded "
                    f"and queued. Start one (celery -A workers worker -Q {self.settings.queue}), "
                    f"then run: producer wait {batch_id}"
                )
        if (
            self._future is None
            and stalled_for >= WORKER_RECHECK_SECONDS
            and time.monotonic() - self._last_ping >= WORKER_RECHECK_SECONDS
        ):
            self._future = self._ping()
            self._last_ping = time.monotonic()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


# --- module-level API ----------------------------------------------------------------------------
def submit(
    source: Any,
    *,
    settings: Settings | None = None,
    model: str | None = None,
    params: dict | None = None,
    batch_id: str | None = None,
    overwrite: bool = False,
    substitute_on_failure: bool = False,
    dry_run: bool = False,
    again: bool = False,
    priority: str = "normal",
    registry: ModelRegistry | None = None,
    on_plan: Callable[[Batch], None] | None = None,
    price_per_call: float | None = None,
    fallback: bool = True,
    max_cost: str | float | None = None,
) -> Batch:
    """Validate every item, then record the batch and enqueue one task per item.

    source: a path to prompts.json, or the loaded data (a list of prompt strings, a list of
    items, or an object with shared defaults and `items`). settings: Settings.load() if None.
    Raises InputError (every problem; nothing written).

    Paying twice by mistake is refused: without `batch_id`, content (validated requests and
    options) that a batch still in Redis already has raises DuplicateBatchError naming it;
    `again=True` submits it as a new batch on purpose. With `batch_id`, resubmitting an existing
    id enqueues nothing new and returns the existing batch with `.created == False` (only items
    that were recorded but never enqueued, because the first submission died in between, are
    sent); other content under a used id is an InputError.

    price_per_call: USD per call for the models whose price the registry does not know (shown in
    the plan and kept with each item, for spending limits).

    priority: "high", "normal" or "low": the batch's place among the fleet's batches (higher
    first; batches of one priority share the fleet in turn), recorded with the batch.

    fallback: False keeps every item on its first model: a model that fails for good fails the
    item instead of paying for the next model of its route (`"fallback": false` in the file's
    defaults or an item does the same for those items).

    max_cost: the batch's spending limit in USD (else the file's "max_cost"; None: none). Under
    it, or under the fleet's daily budget, every model an item may run must have a price (or
    `price_per_call`), else InputError. Items whose next attempt does not fit wait as `held`.

    on_plan: called with the validated, not yet recorded Batch (`.requests`, `.notes`,
    `.duplicate_of`) right before it is recorded and enqueued (not for dry runs or for a batch
    id that exists already), so callers can show the routing plan first.
    """
    from shared.scheduler import priority_problem

    settings = _settings(settings)
    problem = priority_problem(priority)
    if problem is not None:
        raise InputError(problem)
    explicit_id = batch_id is not None
    batch_id = check_batch_id(batch_id) if batch_id is not None else new_batch_id()
    registry = _registry(registry, settings)
    options_for = partial(_batch_options, substitute_on_failure, overwrite, model, params, priority)
    validate_as = partial(
        validate,
        source,
        settings=settings,
        model=model,
        params=params,
        batch_id=batch_id,
        registry=registry,
        fallback=fallback,
    )
    validated = _validated(
        validate_as,
        settings,
        batch_id,
        registry,
        overwrite=overwrite,
        explicit_id=explicit_id,
        again=again,
        dry_run=dry_run,
        price_per_call=price_per_call,
        max_cost=max_cost,
        options_for=options_for,
    )
    registry = validated.registry or registry  # with the schemas of the models it uses
    requests: list[ImageRequest] = _priced(validated, registry, price_per_call)
    limit = _batch_limit(max_cost, validated.max_cost)
    daily = _daily_limit(settings, quiet=dry_run)
    _refuse_unpriced(requests, registry, limit, daily)
    plan = _Plan(batch_id, settings, requests, registry, limit, daily)
    if dry_run:
        return plan.batch(created=False, dry_run=True)
    return _record_and_enqueue(
        plan,
        options_for(limit),
        overwrite=overwrite,
        explicit_id=explicit_id,
        unique=not explicit_id and not again,
        on_plan=on_plan,
    )


def _validated(
    validate_as: Callable[..., ParsedRequests],
    settings: Settings,
    batch_id: str,
    registry: ModelRegistry,
    *,
    overwrite: bool,
    explicit_id: bool,
    again: bool,
    dry_run: bool,
    price_per_call: float | None,
    max_cost: str | float | None,
    options_for: Callable[[int | None], dict[str, Any]],
) -> ParsedRequests:
    """`validate_as(overwrite=...)`, knowing what a submission of the same input again meets
    first: outputs that exist already."""
    try:
        return validate_as(overwrite=overwrite)
    except InputError as exc:
        if not explicit_id and not again and not dry_run and _only_existing_outputs(exc):
            # The same file submitted again: its outputs exist because the first batch wrote
            # them. Say that first (DuplicateBatchError), not "pass --overwrite", which would
            # only lead to the duplicate refusal next (or, with --again, to paying twice).
            _raise_if_duplicate(
                validate_as, settings, batch_id, registry, price_per_call, max_cost, options_for
            )
            raise
        # The same batch submitted again (a retry after a crash, a second click): its own outputs
        # exist by now, which is not a problem for a submission that enqueues nothing.
        if not explicit_id or dry_run or not _batch_exists(settings, batch_id):
            raise
        return validate_as(overwrite=True)


@dataclass
class _Plan:
    """A validated, priced submission: what `submit` records, or a dry run shows."""

    batch_id: str
    settings: Settings
    requests: list[ImageRequest]
    registry: ModelRegistry
    limit: int | None  # the batch's spending limit (micro-USD)
    daily: int | None  # the fleet's daily budget in force (micro-USD)
    notes: list[str] = field(default_factory=list)  # found while recording (what --overwrite replaces)

    def batch(self, *, created: bool, dry_run: bool = False, duplicate_of: Any = None) -> Batch:
        batch = Batch(
            self.batch_id,
            self.settings,
            requests=self.requests,
            created=created,
            dry_run=dry_run,
            registry=self.registry,
        )
        batch.notes += self.notes
        batch.duplicate_of = duplicate_of
        batch.max_cost, batch.daily_limit = self.limit, self.daily
        return batch


def _refuse_unpriced(
    requests: Sequence[ImageRequest], registry: ModelRegistry, limit: int | None, daily: int | None
) -> None:
    """Under a spending limit every model an item may run must have a price: InputError otherwise."""
    if limit is None and daily is None:
        return
    from shared.budget import usd
    from shared.models.pricing import refuse_unpriced

    in_force = [f"--max-cost {usd(limit)} USD"] if limit is not None else []
    in_force += [f"daily budget {usd(daily)} USD"] if daily is not None else []
    refuse_unpriced(requests, registry, limit=" and ".join(in_force))


def _record_and_enqueue(
    plan: _Plan,
    options: dict[str, Any],
    *,
    overwrite: bool,
    explicit_id: bool,
    unique: bool,
    on_plan: Callable[[Batch], None] | None,
) -> Batch:
    """Record the planned batch and enqueue its items (for an id that exists already, only the
    items its first submission never enqueued). `unique`: refuse content another batch has."""
    ledger = _ledger(plan.settings)  # RedisUnavailableError before anything else is imported or written
    from producer.output_checks import check_writable
    from producer.references import References
    from shared.ledger import batch_fingerprint
    from shared.storage import open_store

    references = References(plan.requests)  # each distinct local file read once, named by its content
    fingerprint = batch_fingerprint(plan.batch_id, references.for_fingerprint(plan.requests), options)
    store = open_store(plan.settings.output_dir, environ=plan.settings.store_environ())
    # Every worker writes to this one location (recorded with the batch): refused here, before
    # anything is recorded or paid, if a probe object cannot be written and deleted there.
    check_writable(store)
    same = None  # another batch still in Redis with this content
    if not (explicit_id and ledger.batch(plan.batch_id) is not None):
        same = _prepare_new_batch(
            plan, ledger, store, references, fingerprint, overwrite=overwrite, unique=unique, on_plan=on_plan
        )
    created = _create_batch(ledger, plan, store.url(), options, fingerprint, unique=unique)
    _enqueue(ledger, plan, fingerprint, created=created)
    batch = plan.batch(created=created, duplicate_of=same)
    batch._ledger_obj = ledger
    return batch


def _prepare_new_batch(
    plan: _Plan,
    ledger: Ledger,
    store: Store,
    references: References,
    fingerprint: str,
    *,
    overwrite: bool,
    unique: bool,
    on_plan: Callable[[Batch], None] | None,
) -> Any:
    """The last checks and steps before a new batch is recorded: its outputs on a remote store,
    another batch with the same content (refused when `unique`, else returned), the plan shown,
    the reference files uploaded (`plan.requests` then point at their URLs), the batch's
    spending limit set."""
    from producer.output_checks import existing_outputs

    if store.location.remote:
        plan.notes += existing_outputs(store, plan.requests, plan.registry, overwrite=overwrite)
    same = ledger.find_fingerprint(fingerprint)
    if same is not None and unique:
        raise _duplicate_batch_error(same)
    if on_plan is not None:
        on_plan(plan.batch(created=False, duplicate_of=same))
    if len(references):
        _upload_references(references, plan.settings)
        plan.requests = references.with_urls(plan.requests)
    if plan.limit is not None:  # before any item can be sent, so the first one is already limited
        _budget(plan.settings, ledger.redis).set_batch_limit(plan.batch_id, plan.limit)
    return same


def _create_batch(
    ledger: Ledger, plan: _Plan, output_root: str, options: dict[str, Any], fingerprint: str, *, unique: bool
) -> bool:
    """Record the batch (False: its id exists already); DuplicateBatchError when an identical
    submission recorded its batch since the check."""
    try:
        return ledger.create_batch(
            plan.batch_id,
            plan.requests,
            output_root=output_root,
            options=options,
            fingerprint=fingerprint,
            unique_fingerprint=unique,
        )
    except DuplicateFingerprintError as exc:  # an identical submission won the race since the check
        info = ledger.batch(exc.batch_id)
        if info is None:
            raise
        raise _duplicate_batch_error(info) from None


def _enqueue(ledger: Ledger, plan: _Plan, fingerprint: str, *, created: bool) -> None:
    """One task per item of a batch just recorded; for an id that existed, the same items are
    required and only those never enqueued are sent."""
    from workers.dispatch import enqueue_items

    if created:
        enqueue_items(plan.settings, plan.batch_id, plan.requests)
        return
    _check_same_items(ledger, plan.batch_id, plan.requests, fingerprint)
    # A producer that died between recording the batch and enqueueing it left items no
    # message was ever sent for: sending those is finishing the first submission, not
    # enqueuing anything new (items already sent or finished are left alone).
    never_sent = set(ledger.never_enqueued(plan.batch_id))
    if never_sent:
        enqueue_items(
            plan.settings, plan.batch_id, [ledger.request(plan.batch_id, i) for i in sorted(never_sent)]
        )


def _batch_limit(flag: str | float | None, from_file: int | None) -> int | None:
    """--max-cost (USD), else the file's "max_cost" (micro-USD): the batch's limit in micro-USD."""
    return from_file if flag is None else _usd(flag, "--max-cost")


def _budget(settings: Settings, client=None):
    from shared.budget import Budget

    return Budget.from_settings(client if client is not None else _ledger(settings).redis, settings)


def _daily_limit(settings: Settings, *, quiet: bool = False) -> int | None:
    """The fleet's daily budget in force (Redis, else REPLICATE_DAILY_BUDGET). `quiet`: a dry run
    without Redis falls back to the settings."""
    try:
        return _budget(settings).status().daily_limit
    except (FleetError, redis.RedisError):
        if not quiet:
            raise
        return settings.daily_budget_micro


def _unwritten_prediction(item: Any) -> Any:
    """The last attempt of a failed item when its prediction exists and the item failed after it
    as a local error (its outputs could not be written or fetched): that prediction can be
    resumed instead of paid for again. None otherwise."""
    if not item.attempts:
        return None
    last = max(item.attempts, key=lambda a: a.attempt)
    if last.attempt != item.attempt or last.kind != "local" or not last.prediction_id or not last.model:
        return None
    return last


def _only_existing_outputs(exc: InputError) -> bool:
    """Every problem is an output that exists already (what a resubmitted file meets first)."""
    return bool(exc.problems) and all(
        p.field == "output" and "already exists" in p.message for p in exc.problems
    )


def _batch_options(
    substitute_on_failure: bool, overwrite: bool, model, params, priority: str, limit: int | None
) -> dict[str, Any]:
    """The options recorded with a batch (and part of its fingerprint)."""
    options: dict[str, Any] = {
        "substitute_on_failure": bool(substitute_on_failure),
        "overwrite": bool(overwrite),
        "model": model,
        "params": dict(params or {}),
        "priority": priority,
    }
    if limit is not None:
        options["max_cost_micro"] = limit
    return options


def _raise_if_duplicate(
    validate_as: Callable[..., ParsedRequests],
    settings: Settings,
    batch_id: str,
    registry: ModelRegistry,
    price_per_call: float | None,
    max_cost: str | float | None,
    options_for: Callable[[int | None], dict[str, Any]],
) -> None:
    """DuplicateBatchError when a batch in Redis has this very content (as `submit` would find
    it once past the output check); nothing otherwise."""
    from producer.references import References
    from shared.ledger import batch_fingerprint

    try:
        validated = validate_as(overwrite=True)
        options = options_for(_batch_limit(max_cost, validated.max_cost))
        requests = _priced(validated, validated.registry or registry, price_per_call)
        fingerprint = batch_fingerprint(batch_id, References(requests).for_fingerprint(requests), options)
        same = _ledger(settings).find_fingerprint(fingerprint)
    except (InputError, RedisUnavailableError, redis.RedisError):
        return  # cannot tell: the output problem stands
    if same is not None:
        raise _duplicate_batch_error(same)


def _upload_references(references, settings: Settings) -> None:
    """Upload the batch's distinct local reference files, each on a read token of the account's
    shared budget (the files API counts as a read)."""
    limiter = _limiter_or_none(settings)
    try:
        take = (lambda: limiter.take_read_token(timeout=120.0)) if limiter is not None else None
        references.upload(settings, take_read_token=take)
    finally:
        if limiter is not None:
            _close_quietly(limiter)


def _priced(
    requests: ParsedRequests, registry: ModelRegistry, price_per_call: float | None
) -> ParsedRequests:
    """The requests with `price_per_call` and their first model's price in words ("price
    unknown" included, which the manifest shows), keeping the list's notes."""
    from dataclasses import replace

    if price_per_call is not None and not (0 <= price_per_call < float("inf")):
        raise InputError(
            Problem(
                f"price per call must be a number of USD >= 0, not {price_per_call!r}",
                field="--price-per-call",
            )
        )
    priced = type(requests)()
    for request in requests:
        spec = registry.get(request.model)
        price = spec.price_text()
        if not spec.priced and price_per_call is not None:
            price = f"${price_per_call:g}/call (--price-per-call)"
        priced.append(replace(request, price_per_call=price_per_call, price=price))
    priced.__dict__.update(requests.__dict__)
    return priced


def _batch_exists(settings: Settings, batch_id: str) -> bool:
    try:
        return _ledger(settings).batch(batch_id) is not None
    except FleetError:
        return False  # Redis down: the input problems are what the user must see


def _check_same_items(ledger, batch_id: str, requests: Sequence[ImageRequest], fingerprint: str) -> None:
    """A resubmission must be the same batch; another input under a used id is a mistake.
    Batches recorded with a fingerprint compare everything (params, references, outputs,
    options); older ones compare id, prompt and model per item."""
    from shared.ledger import comparable_request

    recorded_fp = ledger.fingerprint_of(batch_id)
    if recorded_fp == fingerprint:
        return
    full = recorded_fp is not None
    recorded_requests = [item.request for item in ledger.items(batch_id)]

    def key(request: ImageRequest):
        return (
            comparable_request(batch_id, request)
            if full
            else {"id": request.id, "prompt": request.prompt, "requested_model": request.requested_model}
        )

    recorded = [key(r) for r in recorded_requests]
    given = [key(r) for r in requests]
    if recorded == given:
        if not full:
            return
        what = "the same items but other options (--substitute-on-failure)"
    else:
        differ = next(
            (i for i, (a, b) in enumerate(zip(recorded, given)) if a != b), min(len(recorded), len(given))
        )
        fields = ""
        if differ < min(len(recorded), len(given)):
            names = sorted(
                k
                for k in set(recorded[differ]) | set(given[differ])
                if recorded[differ].get(k) != given[differ].get(k)
            )
            fields = f", field {', '.join(names)}" if names else ""
        what = (
            f"other items ({len(recorded)} recorded, {len(given)} given; first difference at item "
            f"{differ}{fields})"
        )
    raise InputError(
        Problem(
            f"batch {batch_id!r} exists already with {what}; nothing was enqueued. Choose another --batch-id",
            field="batch_id",
        )
    )


def revoke_tasks(settings: Settings, task_ids: Sequence[str]) -> tuple[int, str | None]:
    """Revoke queued task messages (in chunks, one broadcast each) so workers drop them on
    receipt. Best effort: workers started later never hear of it (they find the item final in
    the ledger and do nothing). Returns (ids revoked, why it stopped early or None)."""
    ids = [t for t in dict.fromkeys(task_ids) if t]
    if not ids:
        return 0, None
    from workers.dispatch import producer_app

    app = producer_app(settings)
    done = 0
    for start in range(0, len(ids), REVOKE_CHUNK):
        chunk = ids[start : start + REVOKE_CHUNK]
        try:
            app.control.revoke(chunk)
        except Exception as exc:  # noqa: BLE001 - best effort; the ledger already has the cancel
            return done, f"{type(exc).__name__}: {exc}"
        done += len(chunk)
    return done, None


def open_batch(batch_id: str, settings: Settings | None = None) -> Batch:
    """A handle on an existing batch; InputError if Redis has no such batch."""
    batch = Batch(check_batch_id(batch_id), _settings(settings))
    batch.info()
    return batch


def latest_batch(settings: Settings | None = None) -> Batch:
    """A handle on the most recently created batch; InputError when Redis holds none."""
    settings = _settings(settings)
    newest = _ledger(settings).list_batches(limit=1)
    if not newest:
        raise InputError(
            Problem(
                f"no batch in Redis yet (prefix {settings.key_prefix!r}): `producer submit FILE` makes one",
                field="BATCH",
            )
        )
    return Batch(newest[0].id, settings)


def fetch_from_store(
    batch_id: str,
    location: str | os.PathLike,
    to: str | os.PathLike = ".",
    *,
    progress: Any = None,
    settings: Settings | None = None,
):
    """`Batch.fetch` for a batch Redis no longer holds: its manifest is read from the store at
    `location` (`<location>/<batch>/manifest.json`), opened with the settings' store variables."""
    import json

    from producer.fetch import fetch_batch
    from shared.errors import StorageError
    from shared.storage import open_store

    store = open_store(location, environ=_settings(settings).store_environ())
    try:
        manifest = json.loads(store.get(f"{check_batch_id(batch_id)}/manifest.json"))
    except StorageError as exc:
        raise InputError(
            Problem(f"no manifest of batch {batch_id} in {store.url()}: {exc}", field="BATCH")
        ) from None
    return fetch_batch(manifest, store, Path(to), progress=progress)


def list_batches(settings: Settings | None = None, limit: int = 20) -> list:
    """The most recent batches (ledger BatchInfo objects), newest first."""
    return list(_ledger(_settings(settings)).list_batches(limit=limit))


def budget_status(settings: Settings | None = None, batch_ids: Sequence[str] | None = None):
    """Today's daily budget (UTC, Redis TIME), spent, reserved, left; and each batch's (the
    recent ones when `batch_ids` is None). shared.budget.BudgetStatus (`.to_dict()`)."""
    settings = _settings(settings)
    if batch_ids is None:
        batch_ids = [info.id for info in list_batches(settings)]
    return _budget(settings).status(list(batch_ids))


def set_daily_budget(settings: Settings | None, usd_amount: str | float | None) -> int:
    """The fleet's daily budget from now on (None: no daily budget, whatever
    REPLICATE_DAILY_BUDGET says); held items that fit now are sent again. Returns how many."""
    settings = _settings(settings)
    _budget(settings).set_daily(None if usd_amount is None else _usd(usd_amount, "--daily"))
    return wake_held(settings)


def set_batch_limit(settings: Settings | None, batch_id: str, usd_amount: str | float | None) -> int:
    """BATCH's spending limit from now on (None: no limit); held items that fit now are sent
    again. Returns how many."""
    settings = _settings(settings)
    batch = open_batch(batch_id, settings)
    batch.info()
    limit = None if usd_amount is None else _usd(usd_amount, "--batch")
    _budget(settings, batch.ledger.redis).set_batch_limit(batch_id, limit)
    return wake_held(settings)


def wake_held(settings: Settings | None = None) -> int:
    """Send again the held items that fit the room left now (the recovery sweep does the same
    every sweep interval, e.g. when the UTC day turns). Returns how many were sent."""
    from shared.budget import Budget
    from workers.dispatch import send_again

    settings = _settings(settings)
    client = connect(settings)
    try:
        picked = Budget.from_settings(client, settings).wake()
    finally:
        client.close()
    return sum(send_again(settings, batch_id, indexes) for batch_id, indexes in picked.items())


def _usd(amount: str | float, flag: str) -> int:
    from shared.budget import parse_usd

    try:
        return parse_usd(amount)
    except ValueError as exc:
        raise InputError(Problem(f"{flag}: {exc}", field=flag)) from None


def queue_depths(settings: Settings | None = None):
    """What waits to run, fleet-wide (shared.scheduler.QueueDepths): per priority (high, normal,
    low) the sends held and due (`ready`), the batches they belong to (`batches`) and the
    messages in the broker's queue (`broker`); the delayed sends (`scheduled`: backoff,
    retry_after, rechecks) and when the next one is due. One script call."""
    from shared.scheduler import Scheduler

    settings = _settings(settings)
    client = connect(settings)
    try:
        return Scheduler(client, Keys(settings.key_prefix)).depths(settings.queue)
    finally:
        client.close()


def fleet_info(settings: Settings | None = None, *, batches: int = 200):
    """The fleet on one screen (producer.info.FleetInfo, like `rq info`): queue depth per
    priority, the workers consuming the queue (host, pid, threads, busy), slots in use and
    waiting, the windows and a pause, and the unfinished batches among the latest `batches`
    with their progress. `.to_dict()` is what `producer info --json` prints."""

    from producer.info import FleetInfo, active_batches, workers_of
    from workers.dispatch import producer_app

    settings = _settings(settings)
    limits = _limiter_status_or_none(settings)
    at_replicate = in_flight_by_batch(limits.holders if limits else [])
    return FleetInfo(
        queue=settings.queue,
        depths=queue_depths(settings),
        workers=workers_of(producer_app(settings), settings.queue),
        limits=limits,
        batches=active_batches(list_batches(settings, limit=batches)),
        at_replicate=dict(at_replicate),
        wait_modes=worker_modes(settings),
    )


def limits_status(settings: Settings | None = None):
    """The limiter's LimiterStatus (limits, in use, waiters, holders, window counts, pause)."""
    limiter = _limiter(_settings(settings))
    try:
        return limiter.status()
    finally:
        _close_quietly(limiter)


def worker_modes(settings: Settings | None = None) -> list:
    """The wait mode of each live worker process (shared.presence.WorkerMode), as they publish it."""
    from shared.presence import live_modes

    settings = _settings(settings)
    client = connect(settings)
    try:
        return live_modes(client, Keys(settings.key_prefix))
    finally:
        client.close()


def limit_sources(settings: Settings | None = None, status: Any = None) -> list:
    """Each limit in force with where it comes from (producer.limits.LimitSource): this
    environment's settings, another process's, or `producer limits set` (when, from which host)."""
    from producer.limits import sources

    settings = _settings(settings)
    status = status if status is not None else limits_status(settings)
    client = connect(settings)
    try:
        return sources(client, Keys(settings.key_prefix), status, settings)
    finally:
        client.close()


def set_limits(
    settings: Settings | None = None,
    *,
    concurrency_limit: int | None = None,
    create_limit: int | None = None,
    read_limit: int | None = None,
    rate_window: float | None = None,
):
    """Change the account-wide limits for every host at once; returns the new status. Each
    limit set is recorded as such (`limit_sources`) until `reset_limits` puts it back."""
    from producer.limits import record_set

    asked = {
        "concurrency_limit": concurrency_limit,
        "create_limit": create_limit,
        "read_limit": read_limit,
        "rate_window": rate_window,
    }
    given: dict[str, float] = {name: value for name, value in asked.items() if value is not None}
    if not given:
        raise InputError(
            Problem(
                "give at least one of concurrency_limit, create_limit, read_limit, rate_window",
                field="limits",
            )
        )
    settings = _settings(settings)
    limiter = _limiter(settings)
    try:
        try:
            limiter.set_limits(**given)
        except ValueError as exc:
            raise InputError(Problem(str(exc), field="limits")) from exc
        record_set(limiter.redis, limiter.keys, given)
        return limiter.status()
    finally:
        _close_quietly(limiter)


def reset_limits(settings: Settings | None = None, names: Sequence[str] | None = None):
    """Put the limits `names` (default: all four) back to this environment's settings
    (REPLICATE_GLOBAL_MAX_CONCURRENT, ...) for every host, and forget that `producer limits
    set` gave them; returns the new status."""
    from producer.limits import LIMIT_NAMES, forget_set

    names = list(names or LIMIT_NAMES)
    unknown = [n for n in names if n not in LIMIT_NAMES]
    if unknown:
        raise InputError(
            Problem(f"unknown limit {unknown[0]!r}: one of {', '.join(LIMIT_NAMES)}", field="limits")
        )
    settings = _settings(settings)
    limiter = _limiter(settings)
    try:
        limiter.set_limits(**{name: getattr(settings, name) for name in names})
        forget_set(limiter.redis, limiter.keys, names)
        return limiter.status()
    finally:
        _close_quietly(limiter)


def generate(
    prompt: str,
    model: str,
    *,
    settings: Settings | None = None,
    output: str | os.PathLike | None = None,
    timeout: float | None = None,
    progress: Any = None,
    again: bool = False,
    registry: ModelRegistry | None = None,
    price_per_call: float | None = None,
    fallback: bool = True,
    **params: Any,
) -> list[Path | str]:
    """One image (or video), blocking: submit a batch of one, wait, return the output paths
    (store URLs where OUTPUT_DIR is an object store).

    `image_input=[...]` / `input_image=...` are reference images; other keyword arguments are the
    model's parameters. settings: Settings.load() if None. Raises ReplicateCallError when the
    item did not succeed (with the last attempt's error), NoWorkerError when no worker runs,
    InputError for bad input, DuplicateBatchError when the very same request is a batch in Redis
    already (`again=True` makes it once more, paying again).
    """
    settings = _settings(settings)
    item: dict[str, Any] = {"prompt": prompt, "model": model}
    for ref in ("image_input", "input_image"):
        if ref in params:
            item[ref] = params.pop(ref)
    if params:
        item["params"] = params
    if output is not None:
        item["output"] = os.fspath(output)
    batch = submit(
        [item],
        settings=settings,
        registry=registry,
        again=again,
        price_per_call=price_per_call,
        fallback=fallback,
    )
    snap = batch.wait(progress=progress, timeout=timeout)
    if not snap.finished and snap.done < snap.total:
        raise FleetError(
            f"batch {batch.id} did not finish within {timeout} s; it keeps running (producer wait {batch.id})"
        )
    record = batch.results()[0]
    if record.get("status") != "succeeded":
        raise ReplicateCallError(
            f"{model}: image {record.get('status')}: {record.get('error') or 'no output'}"
        )
    return batch.output_paths(record)


# --- limiter helpers -----------------------------------------------------------------------------
def _limiter(settings: Settings, client=None):
    from shared.limiter import Limiter

    return Limiter.from_settings(
        client if client is not None else connect(settings), Keys(settings.key_prefix), settings
    )


def _limiter_or_none(settings: Settings):
    """Progress shows slots when the limiter is available; waiting must not depend on it."""
    try:
        return _limiter(settings)
    except FleetError:
        return None


def _limiter_status_or_none(settings: Settings):
    limiter = _limiter_or_none(settings)
    if limiter is None:
        return None
    try:
        return _safe_status(limiter)
    finally:
        _close_quietly(limiter)


def _safe_status(limiter):
    if limiter is None:
        return None
    try:
        return limiter.status()
    except Exception:  # noqa: BLE001 - slots are decoration on the progress line
        return None


def _close_quietly(limiter) -> None:
    try:
        limiter.close()
    except Exception:  # noqa: BLE001
        pass
