"""`submit`: validate every item, then record the batch and enqueue one task per item (or, for
a dry run, only the plan)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from producer.api.batch import Batch
from producer.api.connections import (
    close_quietly,
    limiter_or_none,
    open_budget,
    open_ledger,
    registry_or_load,
    settings_or_load,
)
from producer.api.pricing import _batch_limit, _daily_limit, _priced, _refuse_unpriced
from producer.api.resubmission import _check_same_items, _duplicate_batch_error, _validated
from producer.api.validation import check_batch_id, new_batch_id, validate
from shared.errors import DuplicateFingerprintError, InputError
from shared.request import ImageRequest
from shared.settings import Settings

if TYPE_CHECKING:
    from producer.references import References
    from shared.ledger import Ledger
    from shared.models import ModelRegistry
    from shared.storage.store import Store


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

    settings = settings_or_load(settings)
    problem = priority_problem(priority)
    if problem is not None:
        raise InputError(problem)
    explicit_id = batch_id is not None
    batch_id = check_batch_id(batch_id) if batch_id is not None else new_batch_id()
    registry = registry_or_load(registry, settings)
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
    ledger = open_ledger(plan.settings)  # RedisUnavailableError before anything else is imported or written
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
        open_budget(plan.settings, ledger.redis).set_batch_limit(plan.batch_id, plan.limit)
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


def _upload_references(references, settings: Settings) -> None:
    """Upload the batch's distinct local reference files, each on a read token of the account's
    shared budget (the files API counts as a read)."""
    limiter = limiter_or_none(settings)
    try:
        take = (lambda: limiter.take_read_token(timeout=120.0)) if limiter is not None else None
        references.upload(settings, take_read_token=take)
    finally:
        if limiter is not None:
            close_quietly(limiter)
