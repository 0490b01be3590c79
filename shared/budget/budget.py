"""Spending limits, fleet-wide and exact: a batch's `--max-cost` and the fleet's daily budget.

Every attempt reserves its price before its creation, in the same round trip as its creation
token (the limiter sends `lua/budget_common.lua` in front of `token.lua`; `Reservation` is the
token call's argument): a reservation is made only if, for today's UTC day (Redis TIME) and for
the batch, spent + reserved + price stays within the limit, so with any number of workers
racing no limit is ever passed. After the prediction ends the reservation is settled to what
it cost (`settle`); an attempt that created nothing releases it (`release`); an ambiguous
create keeps it until reconciled. Money is integer micro-dollars (shared.budget.money).

An attempt that does not fit is `held` (`hold`): the item waits without a slot, and `wake`
(the recovery sweep, and `producer budget set/clear`) picks the held items that fit again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import redis

from shared import lua_scripts
from shared.budget.money import usd, usd_number
from shared.errors import BudgetExceededError
from shared.keys import Keys
from shared.redis_conn import as_text
from shared.settings import Settings

KEY_NAMES = ("budget", "budget:res", "budget:held")
SCRIPT_NAMES = ("reserve", "settle", "hold", "wake")
# What the limiter sends between its prelude and token.lua: (package, file).
TOKEN_INSERT = ("shared.budget.lua", "budget_common")
EPOCH = date(1970, 1, 1)


def budget_keys(keys: Keys) -> list[str]:
    """The budget's keys, under the limiter's hash tag: the LAST keys of any script using them."""
    return [keys.limiter_key(name) for name in KEY_NAMES]


def day_of(number: int) -> date:
    return EPOCH + timedelta(days=int(number))


@dataclass(frozen=True)
class Reservation:
    """What attempt `marker` ("batch:index:n") of `batch_id` reserves: `amount` micro-USD;
    `daily_default`: the caller's REPLICATE_DAILY_BUDGET (seeds Redis when it has none)."""

    marker: str
    batch_id: str
    amount: int
    daily_default: int | None = None

    def arg(self) -> str:
        if self.amount < 0:
            raise ValueError("a reservation cannot be negative")
        return json.dumps(
            {"m": self.marker, "b": self.batch_id, "a": int(self.amount), "d": _opt(self.daily_default)}
        )


@dataclass
class BatchSpend:
    batch_id: str
    limit: int | None  # micro-USD; None: no limit
    spent: int
    reserved: int
    held: int = 0  # items waiting for room

    @property
    def left(self) -> int | None:
        return None if self.limit is None else self.limit - self.spent - self.reserved

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "limit_usd": usd_number(self.limit),
            "spent_usd": usd_number(self.spent),
            "reserved_usd": usd_number(self.reserved),
            "left_usd": usd_number(self.left),
            "held": self.held,
        }


@dataclass
class BudgetStatus:
    day: date  # today, UTC, by Redis TIME
    daily_limit: int | None
    daily_source: str  # "redis" (set at run time or seeded), "settings" (not seeded yet), "none"
    spent_today: int
    reserved_today: int
    batches: list[BatchSpend] = field(default_factory=list)

    @property
    def left_today(self) -> int | None:
        return None if self.daily_limit is None else self.daily_limit - self.spent_today - self.reserved_today

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "daily_limit_usd": usd_number(self.daily_limit),
            "daily_limit_from": self.daily_source,
            "spent_today_usd": usd_number(self.spent_today),
            "reserved_today_usd": usd_number(self.reserved_today),
            "left_today_usd": usd_number(self.left_today),
            "batches": [b.to_dict() for b in self.batches],
        }


class Budget:
    """One per process. `daily_default`: the caller's REPLICATE_DAILY_BUDGET (micro-USD), used
    while Redis has no daily budget yet (seeded by the first reservation)."""

    def __init__(self, redis_client: redis.Redis, keys: Keys, daily_default: int | None = None):
        self.redis = redis_client
        self.keys = keys
        self.daily_default = daily_default
        self._keys = budget_keys(keys)
        self._state, self._res, self._held = self._keys
        self._scripts = lua_scripts.register(
            redis_client, "shared.budget.lua", SCRIPT_NAMES, prelude="budget_common"
        )

    @classmethod
    def from_settings(cls, redis_client: redis.Redis, settings: Settings) -> Budget:
        return cls(redis_client, Keys(settings.key_prefix), settings.daily_budget_micro)

    def load(self) -> None:
        for script in self._scripts.values():
            script.load()

    # --- reservations -----------------------------------------------------------------------------
    def reserve(self, reservation: Reservation) -> bool:
        """Reserve without a creation token (the workers reserve in the token's round trip).
        True if reserved now (False: the attempt held one already); BudgetExceededError if it
        does not fit."""
        if reservation.daily_default is None and self.daily_default is not None:
            reservation = replace(reservation, daily_default=self.daily_default)
        reply = self._scripts["reserve"](keys=self._keys, args=[reservation.arg()])
        if int(reply[0]) == 0:
            raise BudgetExceededError(as_text(reply[1]), int(reply[2]))
        return int(reply[1]) == 1

    def settle(self, marker: str, cost: int | None = None) -> int | None:
        """The attempt's prediction ended: its reservation becomes spend of `cost` micro-USD (None:
        the amount reserved). Returns the cost settled, None if the attempt held no reservation."""
        reply = self._scripts["settle"](
            keys=self._keys, args=[marker, "" if cost is None else str(int(cost))]
        )
        return int(reply[2]) if int(reply[0]) == 1 else None

    def release(self, marker: str) -> bool:
        """The attempt created nothing: its reservation is given back. True if it held one."""
        return self.settle(marker, 0) is not None

    def reservation(self, marker: str) -> int | None:
        raw = self.redis.hget(self._res, marker)
        return None if raw is None else int(as_text(raw).split(" ", 1)[0])

    # --- held items -------------------------------------------------------------------------------
    def hold(self, batch_id: str, index: int, attempt: int, amount: int, scope: str) -> None:
        self._scripts["hold"](keys=self._keys, args=[batch_id, str(index), str(attempt), str(amount), scope])

    def unhold(self, batch_id: str, index: int) -> None:
        self.redis.hdel(self._held, f"{batch_id}:{index}")

    def held(self, batch_id: str | None = None) -> dict[tuple[str, int], dict[str, Any]]:
        """(batch, index) -> {amount, attempt, scope, held_at, woken_at} of the held items (of
        one batch, or all)."""
        out: dict[tuple[str, int], dict[str, Any]] = {}
        match = None if batch_id is None else f"{_glob_escape(batch_id)}:*"
        for key, raw in self.redis.hscan_iter(self._held, match=match, count=1000):
            batch, _, index = as_text(key).rpartition(":")
            rec = json.loads(as_text(raw))
            out[(batch, int(index))] = {
                "amount": int(rec.get("a", 0)),
                "attempt": int(rec.get("n", 0)),
                "scope": rec.get("s", ""),
                "held_at": rec.get("t"),
                "woken_at": rec.get("w"),
            }
        return out

    def drop_held(self, batch_id: str) -> int:
        """Forget the batch's held items (it was canceled). Returns how many."""
        fields = [f"{batch}:{index}" for batch, index in self.held(batch_id)]
        return int(self.redis.hdel(self._held, *fields)) if fields else 0

    def wake(self, again_after: float = 600.0) -> dict[str, list[int]]:
        """The held items that fit the room left now (oldest first), by batch: send them again.
        Each is not picked again for `again_after` seconds (its run removes the record; its
        amount counts as spoken for meanwhile, so a raise is not over-woken). The send is held
        in the schedule, whose items the recovery sweep looks after: picking again is only the
        safety net for a waker that died between picking and sending."""
        flat = self._scripts["wake"](keys=self._keys, args=[_opt(self.daily_default), str(again_after)])
        out: dict[str, list[int]] = {}
        for i in range(0, len(flat), 2):
            out.setdefault(as_text(flat[i]), []).append(int(flat[i + 1]))
        return out

    # --- limits -----------------------------------------------------------------------------------
    def set_daily(self, micro: int | None) -> None:
        """The fleet's daily budget from now on (None: no daily budget, whatever the settings)."""
        self.redis.hset(self._state, "daily", "none" if micro is None else str(int(micro)))

    def set_batch_limit(self, batch_id: str, micro: int | None) -> None:
        if micro is None:
            self.redis.hdel(self._state, f"limit:{batch_id}")
        else:
            self.redis.hset(self._state, f"limit:{batch_id}", str(int(micro)))

    def forget_batch(self, batch_id: str) -> None:
        """A forgotten batch's limit and spend (its day's spend stays in the day)."""
        self.redis.hdel(self._state, f"limit:{batch_id}", f"spent:b:{batch_id}", f"reserved:b:{batch_id}")
        self.drop_held(batch_id)

    # --- reading ----------------------------------------------------------------------------------
    def today(self) -> int:
        sec, _usec = self.redis.time()
        return int(sec) // 86400

    def batch(self, batch_id: str) -> BatchSpend:
        return self.status([batch_id]).batches[0]

    def status(self, batch_ids: list[str] | tuple[str, ...] = ()) -> BudgetStatus:
        """Today's daily budget, spend and reservations, and each batch's (one round trip)."""
        day = self.today()
        fields = ["daily", f"spent:d:{day}", f"reserved:d:{day}"]
        for b in batch_ids:
            fields += [f"limit:{b}", f"spent:b:{b}", f"reserved:b:{b}"]
        values = [None if v is None else as_text(v) for v in self.redis.hmget(self._state, fields)]
        daily, source = values[0], "redis"
        if daily is None:
            daily, source = _opt(self.daily_default) or "none", "settings"
        limit = None if daily == "none" else int(daily)
        if limit is None:
            source = "none"
        held_counts: dict[str, int] = {}
        if batch_ids:
            for batch, _index in self.held():
                held_counts[batch] = held_counts.get(batch, 0) + 1
        batches = []
        for n, b in enumerate(batch_ids):
            lim, spent, reserved = values[3 + 3 * n : 6 + 3 * n]
            batches.append(
                BatchSpend(
                    b,
                    None if lim is None else int(lim),
                    int(spent or 0),
                    int(reserved or 0),
                    held_counts.get(b, 0),
                )
            )
        return BudgetStatus(
            day=day_of(day),
            daily_limit=limit,
            daily_source=source,
            spent_today=int(values[1] or 0),
            reserved_today=int(values[2] or 0),
            batches=batches,
        )

    def totals(self) -> dict[str, int]:
        """Every batch's spend and reservations, and the number of held items (for metrics)."""
        out = {"spent_today": 0, "reserved_today": 0, "reserved": 0, "held": 0}
        day = self.today()
        for key, value in self.redis.hscan_iter(self._state, count=1000):
            name = as_text(key)
            if name == f"spent:d:{day}":
                out["spent_today"] = int(value)
            elif name == f"reserved:d:{day}":
                out["reserved_today"] = int(value)
            elif name.startswith("reserved:d:"):
                out["reserved"] += int(value)
        out["reserved"] += out["reserved_today"]
        out["held"] = int(self.redis.hlen(self._held))
        return out


def reason(scope: str, limit: int) -> str:
    """The held reason shown to users: "batch limit 0.50 USD reached"."""
    return str(BudgetExceededError(scope, limit))


def _opt(micro: int | None) -> str:
    return "" if micro is None else str(int(micro))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


__all__ = ["Budget", "BudgetStatus", "BatchSpend", "Reservation", "budget_keys", "reason", "usd"]
