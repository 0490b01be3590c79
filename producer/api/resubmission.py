"""The same input submitted again: content that a batch in Redis already has is refused
(DuplicateBatchError) instead of paid twice, and a used batch id must name the same items."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis

from producer.api.batch import describe_batch
from producer.api.connections import open_ledger
from producer.api.pricing import _batch_limit, _priced
from shared.errors import DuplicateBatchError, FleetError, InputError, Problem, RedisUnavailableError
from shared.request import ImageRequest
from shared.settings import Settings

if TYPE_CHECKING:
    from producer.prompts import ParsedRequests
    from shared.models import ModelRegistry


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
        same = open_ledger(settings).find_fingerprint(fingerprint)
    except (InputError, RedisUnavailableError, redis.RedisError):
        return  # cannot tell: the output problem stands
    if same is not None:
        raise _duplicate_batch_error(same)


def _only_existing_outputs(exc: InputError) -> bool:
    """Every problem is an output that exists already (what a resubmitted file meets first)."""
    return bool(exc.problems) and all(
        p.field == "output" and "already exists" in p.message for p in exc.problems
    )


def _batch_exists(settings: Settings, batch_id: str) -> bool:
    try:
        return open_ledger(settings).batch(batch_id) is not None
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
