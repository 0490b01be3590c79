"""What a submission costs and may spend: each item's price, the batch's limit and the fleet's
daily budget in force, and the refusal of unpriced models under a limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis

from producer.api.budget import _usd
from producer.api.connections import open_budget
from shared.errors import FleetError, InputError, Problem
from shared.request import ImageRequest
from shared.settings import Settings

if TYPE_CHECKING:
    from producer.prompts import ParsedRequests
    from shared.models import ModelRegistry


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


def _batch_limit(flag: str | float | None, from_file: int | None) -> int | None:
    """--max-cost (USD), else the file's "max_cost" (micro-USD): the batch's limit in micro-USD."""
    return from_file if flag is None else _usd(flag, "--max-cost")


def _daily_limit(settings: Settings, *, quiet: bool = False) -> int | None:
    """The fleet's daily budget in force (Redis, else REPLICATE_DAILY_BUDGET). `quiet`: a dry run
    without Redis falls back to the settings."""
    try:
        return open_budget(settings).status().daily_limit
    except (FleetError, redis.RedisError):
        if not quiet:
            raise
        return settings.daily_budget_micro
