"""The fleet's spending limits: today's daily budget and each batch's limit, read and changed at
run time (held items that fit then are sent again)."""

from __future__ import annotations

from collections.abc import Sequence

from producer.api.batch import open_batch
from producer.api.connections import fleet_redis, open_budget, settings_or_load
from producer.api.fleet import list_batches
from shared.errors import InputError, Problem
from shared.settings import Settings


def budget_status(settings: Settings | None = None, batch_ids: Sequence[str] | None = None):
    """Today's daily budget (UTC, Redis TIME), spent, reserved, left; and each batch's (the
    recent ones when `batch_ids` is None). shared.budget.BudgetStatus (`.to_dict()`)."""
    settings = settings_or_load(settings)
    if batch_ids is None:
        batch_ids = [info.id for info in list_batches(settings)]
    return open_budget(settings).status(list(batch_ids))


def set_daily_budget(settings: Settings | None, usd_amount: str | float | None) -> int:
    """The fleet's daily budget from now on (None: no daily budget, whatever
    REPLICATE_DAILY_BUDGET says); held items that fit now are sent again. Returns how many."""
    settings = settings_or_load(settings)
    open_budget(settings).set_daily(None if usd_amount is None else _usd(usd_amount, "--daily"))
    return wake_held(settings)


def set_batch_limit(settings: Settings | None, batch_id: str, usd_amount: str | float | None) -> int:
    """BATCH's spending limit from now on (None: no limit); held items that fit now are sent
    again. Returns how many."""
    settings = settings_or_load(settings)
    batch = open_batch(batch_id, settings)
    batch.info()
    limit = None if usd_amount is None else _usd(usd_amount, "--batch")
    open_budget(settings, batch.ledger.redis).set_batch_limit(batch_id, limit)
    return wake_held(settings)


def wake_held(settings: Settings | None = None) -> int:
    """Send again the held items that fit the room left now (the recovery sweep does the same
    every sweep interval, e.g. when the UTC day turns). Returns how many were sent."""
    from shared.budget import Budget
    from workers.dispatch import send_again

    settings = settings_or_load(settings)
    with fleet_redis(settings) as client:
        picked = Budget.from_settings(client, settings).wake()
    return sum(send_again(settings, batch_id, indexes) for batch_id, indexes in picked.items())


def _usd(amount: str | float, flag: str) -> int:
    from shared.budget import parse_usd

    try:
        return parse_usd(amount)
    except ValueError as exc:
        raise InputError(Problem(f"{flag}: {exc}", field=flag)) from None
