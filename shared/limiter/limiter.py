"""The account-wide limiter: a leased FIFO semaphore plus two exact sliding-window rate limits.

All state and all time live in Redis (Lua scripts, `TIME`), so hosts with wrong clocks cannot
break the limits; see README.md in this folder for the design, the guarantees and what happens
when Redis restarts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from shared import lua_scripts
from shared.budget import TOKEN_INSERT, Reservation, budget_keys
from shared.errors import (
    AcquireTimeoutError,
    BudgetExceededError,
    ConfigError,
    LimiterError,
    RedisUnavailableError,
)
from shared.keys import Keys
from shared.limiter import replies
from shared.limiter.agent import ProcessAgent
from shared.limiter.lease import Lease
from shared.limiter.types import HolderInfo, LimiterStatus, Limits
from shared.wakeup import blocking_client, text

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings

log = logging.getLogger(__name__)

# One file per operation in lua/, each sent after the prelude common.lua.
SCRIPT_NAMES = (
    "abandon",
    "acquire",
    "adopt",
    "confirm",
    "drop",
    "give_back",
    "heartbeat",
    "pause",
    "set_limits",
    "set_prediction",
    "settle",
    "status",
    "token",
)
# The order is the scripts' KEYS order (common.lua).
KEY_NAMES = (
    "holders",
    "info",
    "fence",
    "limits",
    "waiters",
    "waiter_exp",
    "ticket",
    "epoch",
    "creates",
    "reads",
    "pause",
    "bypred",
    "byattempt",
    "woken",
    "rates",
    "recovery",
)
STOP_POLL_SECONDS = 0.25  # how often a waiting call asks should_stop()
LIMITS_CACHE_SECONDS = 5.0  # how stale `limits()` may be (a run-time change reaches it this late)
RECOVERY_RECHECK_JITTER = 0.05  # waiters re-check within this after the post-loss freeze ends

# Accepted limit values (the Lua scripts check the same bounds, common.lua LIMIT_BOUNDS): beyond
# them a value is surely a typo (`--concurrency-limit 1e20`), and a few would break the scripts.
LIMIT_BOUNDS: dict[str, tuple[float, float]] = {
    "concurrency_limit": (1, 100_000),
    "create_limit": (1, 1_000_000),
    "read_limit": (1, 1_000_000),
    "rate_window": (1.0, 86_400.0),  # seconds: one second to one day
}


def _whole_limit(name: str, value: Any) -> int:
    low, high = LIMIT_BOUNDS[name]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or int(value) != value or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low:g} to {high:g}, got {value!r}")
    return int(value)


def _window_ms(value: Any) -> float:
    low, high = LIMIT_BOUNDS["rate_window"]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise ValueError(f"rate_window must be from {low:g} to {high:g} seconds, got {value!r}")
    return round(float(value) * 1000, 3)


def limit_changes(
    concurrency_limit: int | None = None,
    create_limit: int | None = None,
    read_limit: int | None = None,
    rate_window: float | None = None,
) -> dict[str, int | float]:
    """The given limits as the limits hash stores them (the window in ms: `rate_window_ms`),
    only those given. ValueError naming the value if one is out of LIMIT_BOUNDS."""
    changes: dict[str, int | float] = {}
    for name, value in (
        ("concurrency_limit", concurrency_limit),
        ("create_limit", create_limit),
        ("read_limit", read_limit),
    ):
        if value is not None:
            changes[name] = _whole_limit(name, value)
    if rate_window is not None:
        changes["rate_window_ms"] = _window_ms(rate_window)
    return changes


class Limiter:
    """Create ONE per process and share it between threads (it is thread-safe).

    Parameters:
    limits: this process's limits: written into Redis only where a limit is absent there (a
        first start, or Redis lost it); the limits in Redis (`set_limits`) win. ConfigError if
        one is outside LIMIT_BOUNDS.
    lease_seconds: how long a slot stays held without a renewal (renewed every lease/3): the
        time a dead holder keeps its slot.
    orphan_seconds: the longest a dead holder's slot stays counted while its prediction may
        still run (`from_settings`: the prediction timeout plus a lease; Replicate ends
        predictions by then). `adopt` or `settle` end it sooner.
    rate_margin: seconds added to the rate window on our side. Two grants R apart are then at
        least window+margin apart in Redis time, so they cannot fall into one window at
        Replicate's side as long as the requests' network delays differ by less than the margin.
        Costs margin/window of the rate (0.25 s of 60 s = 0.4 %).
    waiter_ttl: a waiter registration lives this long unless its process refreshes it (every
        ttl/3), so a dead waiter blocks the head of the line for at most this long.
    recheck_interval: a waiting thread re-runs acquire after this long even without a wake
        signal, so a lost signal only ever delays (it never deadlocks).
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        keys: Keys,
        limits: Limits,
        *,
        lease_seconds: float,
        orphan_seconds: float,
        rate_margin: float = 0.25,
        waiter_ttl: float = 5.0,
        recheck_interval: float = 15.0,
    ):
        if lease_seconds <= 0 or orphan_seconds <= 0:
            raise ValueError("lease_seconds and orphan_seconds must be > 0")
        if rate_margin < 0 or waiter_ttl <= 0 or recheck_interval <= 0:
            raise ValueError("rate_margin must be >= 0, waiter_ttl and recheck_interval > 0")
        self.redis = redis_client
        self.keys = keys
        self.default_limits = limits
        self.lease_seconds = float(lease_seconds)
        self.orphan_seconds = float(orphan_seconds)
        self.rate_margin = float(rate_margin)
        self.waiter_ttl = float(waiter_ttl)
        self.recheck_interval = float(recheck_interval)
        self.wake_prefix = keys.limiter_key("wake:")
        # The budget's keys go last (budget_common.lua finds them there): token.lua reserves an
        # attempt's price in the same round trip as its creation token.
        self._key_list = [keys.limiter_key(name) for name in KEY_NAMES] + budget_keys(keys)
        self._config = json.dumps(
            {
                **_checked(limits),
                "wake_prefix": self.wake_prefix,
                "waiter_ttl_ms": int(self.waiter_ttl * 1000),
                "orphan_ms": int(max(self.orphan_seconds, 2 * self.lease_seconds) * 1000),
                "lease_ms": int(self.lease_seconds * 1000),
                "rate_margin_ms": int(self.rate_margin * 1000),
            }
        )
        self._scripts = lua_scripts.register(
            redis_client,
            "shared.limiter.lua",
            SCRIPT_NAMES,
            prelude="common",
            inserts={"token": (TOKEN_INSERT,)},
        )
        self._listen_client = blocking_client(redis_client)
        self._agent_lock = threading.Lock()
        self._agent: ProcessAgent | None = None
        self._limits_cache: tuple[float, Limits] | None = None
        # The limiter epoch this process saw last (from any reply), sent with every call: a
        # script that finds the state gone while we knew it recognises a loss, not a first start.
        self._known_epoch = ""

    @classmethod
    def from_settings(
        cls,
        redis_client: redis.Redis,
        keys: Keys,
        settings: Settings,
        *,
        orphan_seconds: float | None = None,
        **tuning: float,
    ) -> Limiter:
        """The limiter of a worker or the CLI: the limits and lease of `settings`, orphans kept
        the prediction timeout plus a lease. `tuning`: rate_margin, waiter_ttl, recheck_interval."""
        lease = settings.lease_seconds
        limits = Limits(
            concurrency_limit=settings.concurrency_limit,
            create_limit=settings.create_limit,
            read_limit=settings.read_limit,
            rate_window=settings.rate_window,
        )
        orphan = orphan_seconds or max(settings.prediction_timeout, lease) + lease
        return cls(redis_client, keys, limits, lease_seconds=lease, orphan_seconds=orphan, **tuning)

    # --- slots ----------------------------------------------------------------------------------
    def acquire(
        self,
        info: HolderInfo,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Lease:
        """Wait (FIFO) for a slot. Raises AcquireTimeoutError after `timeout` seconds or when
        should_stop() turns True (ask it again to tell which), RedisUnavailableError if Redis
        cannot be reached (the waiter's place is then gone; retry later)."""
        agent = self._current_agent()
        holder_id = agent.new_id()
        record = info.to_record()
        record_json = json.dumps(record)
        lease_ms = int(self.lease_seconds * 1000)
        deadline = None if timeout is None else time.monotonic() + timeout
        event = agent.add_waiter(holder_id)
        granted = False
        try:
            while True:
                sent_at = time.monotonic()
                reply = replies.acquire(self._call("acquire", holder_id, lease_ms, record_json))
                if isinstance(reply, replies.Grant):
                    lease = Lease(self, holder_id, reply, record, sent_at)
                    agent.add_lease(lease)
                    granted = True
                    return lease
                agent.start_waiting()
                self._wait_for_turn(event, reply, deadline, timeout, should_stop)
                handed = agent.take_handoff(holder_id)
                if handed is not None:
                    lease = self._handed_lease(holder_id, record, handed, sent_at)
                    agent.add_lease(lease)
                    granted = True
                    return lease
        finally:
            agent.remove_waiter(holder_id)
            if not granted:
                self._drop_quietly(holder_id)

    def _handed_lease(
        self, holder_id: str, record: dict[str, Any], handed: tuple[dict[str, str], float], sent_at: float
    ) -> Lease:
        """The lease a release handed over (common.lua wake()): it runs min(waiter_ttl, lease)
        from its grant until the keeper's first renewal. The grant came after this waiter's last
        acquire call was sent and after the last refresh that still found it waiting, so its
        deadline counts from the later of the two (conservative). Before creating, its holder
        proves the grant in Redis like any other (token.lua holds(): counted, same fence)."""
        payload, seen_waiting = handed
        first_lease = min(self.waiter_ttl, self.lease_seconds)
        return Lease(
            self, holder_id, replies.handed_off(payload), record, max(sent_at, seen_waiting), first_lease
        )

    def _wait_for_turn(
        self,
        event: threading.Event,
        queued: replies.Queued,
        deadline: float | None,
        timeout: float | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """Block a queued caller until it should ask again: woken by a freed slot, the end of the
        freeze after a state loss (the reply says when), or the last-resort recheck. Raises
        AcquireTimeoutError on timeout or should_stop."""
        rank, free, recovery_ms = queued
        recheck_at = time.monotonic() + self.recheck_interval * random.uniform(0.8, 1.2)
        if recovery_ms > 0:  # nobody is woken while the slots are frozen: look again at its end
            recheck_at = min(
                recheck_at, time.monotonic() + recovery_ms / 1000 + random.uniform(0, RECOVERY_RECHECK_JITTER)
            )
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                what = (
                    f"the limiter is rebuilding after Redis lost its state ({recovery_ms / 1000:.1f} s left)"
                    if recovery_ms > 0
                    else f"place {rank + 1} in line, {max(free, 0)} free"
                )
                raise AcquireTimeoutError(f"no slot within {timeout:g} s ({what})")
            if should_stop is not None and should_stop():
                raise AcquireTimeoutError("stopped waiting for a slot (should_stop)")
            wait = recheck_at - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            if should_stop is not None:
                wait = min(wait, STOP_POLL_SECONDS)
            if event.wait(max(wait, 0)):
                event.clear()
                return
            if time.monotonic() >= recheck_at:
                return

    def adopt(self, info: HolderInfo, prediction_id: str, attempt: str | None = None) -> Lease | None:
        """Take over, without queueing, the slot still counted for `prediction_id` -- or, if no
        slot is known for it, for `attempt` (the marker given to `take_create_token`) -- because
        its holder died or was cut off while the prediction ran or was being created (a resumed
        prediction must not take a second slot, nor wait behind new work while it runs). None if
        no slot is counted for either: then `acquire` like everyone."""
        agent = self._current_agent()
        holder_id = agent.new_id()
        record = dict(info.to_record(), prediction_id=prediction_id)
        if attempt is not None:
            record["attempt"] = attempt
        sent_at = time.monotonic()
        grant = replies.adopt(
            self._call(
                "adopt",
                holder_id,
                int(self.lease_seconds * 1000),
                json.dumps(record),
                prediction_id,
                attempt or "",
            )
        )
        if grant is None:
            return None
        lease = Lease(self, holder_id, grant, record, sent_at)
        agent.add_lease(lease)
        log.info("adopted the slot of %s for prediction %s", grant.previous_holder, prediction_id)
        return lease

    def settle(
        self, prediction_id: str | None = None, *, attempt: str | None = None, orphaned_only: bool = False
    ) -> bool:
        """`prediction_id` (or, when no slot is known for it or it is None, the creation of
        `attempt`) is over: terminal, canceled, or known never to have been created. Free the
        slot still counted for it. orphaned_only: only if its holder died, was cut off or
        abandoned its lease (a live holder releases its own). True if a slot was freed."""
        if not prediction_id and not attempt:
            raise ValueError("settle needs a prediction id or an attempt")
        res = self._call("settle", prediction_id or "", attempt or "", "1" if orphaned_only else "0")
        return int(res) == 1

    def force_release(self, holder_id: str) -> bool:
        """Take a slot away (an operator's tool). True if it was held. The holder learns it at
        its next renewal (lease.lost) and is never counted again."""
        return replies.drop(self._call("drop", holder_id)).holder

    # --- rates ----------------------------------------------------------------------------------
    def take_create_token(
        self,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        holder: Lease | None = None,
        attempt: str | None = None,
        reservation: Reservation | None = None,
    ) -> float:
        """Block until a creation may be sent (exact window, honours a global pause). Returns the
        grant time (Unix seconds, Redis clock). AcquireTimeoutError (with .retry_after seconds)
        if it cannot be had within `timeout`.

        holder + attempt (together): the same call marks that lease as creating for `attempt`
        (e.g. "batch:index:n") and indexes the attempt, so that if this process dies before it
        records the prediction id, the slot is kept counted (orphaned) rather than freed when
        the lease runs out -- the POST may have created a prediction that runs -- and can be
        found with adopt(..., attempt=) / settle(attempt=). With a holder, the token is only
        granted while Redis still counts that lease as held (same fence, not run out, not an
        orphan): LeaseLostError (and `holder.lost`) otherwise, with nothing reserved.

        reservation (shared.budget): the same call reserves the attempt's price, and grants no
        token when it does not fit a spending limit (BudgetExceededError, at once: waiting would
        not make room). An attempt that holds a reservation already reserves nothing again."""
        if (holder is None) != (attempt is None):
            raise ValueError("holder and attempt go together")
        if attempt is not None and not attempt:
            raise ValueError("attempt must not be empty")
        return self._take("create", timeout, should_stop, holder, attempt, reservation)

    def take_read_token(
        self, timeout: float | None = None, should_stop: Callable[[], bool] | None = None
    ) -> float:
        """Block until a read (poll, get, file call) may be sent. Same contract as creations."""
        return self._take("read", timeout, should_stop)

    def pause_creations(self, seconds: float, reason: str = "") -> float:
        """Stop creations on every host for `seconds` (Redis time); a longer pause already set
        wins. Returns the pause end (Unix seconds, Redis clock)."""
        if not seconds > 0:
            raise ValueError("seconds must be positive")
        seconds = min(seconds, LIMIT_BOUNDS["rate_window"][1])  # a retry_after beyond a day is nonsense
        return replies.pause_until(self._call("pause", max(int(seconds * 1000), 1), reason[:200]))

    def _take(
        self,
        kind: str,
        timeout: float | None,
        should_stop: Callable[[], bool] | None,
        holder: Lease | None = None,
        attempt: str | None = None,
        reservation: Reservation | None = None,
    ) -> float:
        agent = self._current_agent()
        deadline = None if timeout is None else time.monotonic() + timeout
        margin_ms = int(self.rate_margin * 1000)
        mark = [holder.holder_id, attempt] if holder is not None and attempt else ["", ""]
        mark.append(reservation.arg() if reservation is not None else "")
        mark.append(str(holder.fence) if holder is not None and attempt else "")
        while True:
            member = agent.new_id()
            max_wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            token = replies.token(self._call("token", kind, member, margin_ms, max_wait, *mark))
            wait = token.wait
            if token.reason == "lost" and holder is not None:
                # The slot went to someone else while this holder stalled: creating now would
                # put one prediction more in flight than the limit.
                holder._mark_lost("the lease ran out before the creation token (checked in Redis)")
                holder.check()
            if token.refusal is not None:
                raise BudgetExceededError(*token.refusal)
            if not token.granted:
                if token.reason == "busy" or (deadline is not None and time.monotonic() + wait > deadline):
                    what = "creations are paused" if token.reason == "paused" else f"no {kind} token"
                    raise AcquireTimeoutError(
                        f"{what} for another {wait:.2f} s (timeout {timeout:g} s)", retry_after=wait
                    )
                # paused: sleep it out (a little jitter so the fleet does not resume in lockstep)
                if not _sleep(wait + random.uniform(0, 0.05), should_stop):
                    raise AcquireTimeoutError(f"stopped waiting for a {kind} token (should_stop)")
                continue
            if holder is not None and attempt:
                holder._mark_creating(attempt, token.at_ms, member)
            granted_at = self._await_reservation(kind, member, token.at, wait, deadline, timeout, should_stop)
            if granted_at is not None:
                return granted_at
            # The reservation was cancelled (a pause began, or the state was lost): ask again.

    def _await_reservation(
        self,
        kind: str,
        member: str,
        granted_at: float,
        wait: float,
        deadline: float | None,
        timeout: float | None,
        should_stop: Callable[[], bool] | None,
    ) -> float | None:
        """Sleep until a reserved grant time, then confirm it: a limit change may have moved it
        later (sleep again) and a pause may have cancelled it (None: take a new token). Returns
        the grant time the caller goes at. Every reservation is confirmed, so a change of the
        limits holds exactly from the moment it is made, for sleepers too."""
        while wait > 0:
            if deadline is not None and time.monotonic() + wait > deadline:
                self._unreserve(kind, member)
                raise AcquireTimeoutError(
                    f"no {kind} token for another {wait:.2f} s (timeout {timeout:g} s)", retry_after=wait
                )
            if not _sleep(wait, should_stop):
                self._unreserve(kind, member)
                raise AcquireTimeoutError(f"stopped waiting for a {kind} token (should_stop)")
            check = replies.confirmation(self._call("confirm", kind, member))
            if check.state == "gone":
                return None
            if check.state == "go":
                break
            wait, granted_at = check.wait, check.at
        return granted_at

    def give_back_create_token(self, holder: Lease) -> None:
        """The creation token `holder` was last granted (take_create_token(holder=...)) was not
        used: no POST was sent (the last check before it found the batch canceled, the attempt
        owned elsewhere, the worker stopping), or it was refused with a 429. It leaves the window,
        so the window counts the creations the account saw, and the slot loses the attempt's
        marker (lua/give_back.lua). Only for a token whose POST certainly created nothing. Best
        effort: on a Redis error the token stays counted (the window errs on the safe side)."""
        member, attempt = getattr(holder, "_create_token", None), holder.attempt
        if not member or not attempt:
            return
        holder._create_token = None
        try:
            self._call("give_back", holder.holder_id, member, attempt)
        except (RedisUnavailableError, LimiterError) as exc:
            log.debug("creation token of %s not given back: %s", holder.holder_id, exc)
            return
        holder._unmark_creating(attempt)

    def _unreserve(self, kind: str, member: str) -> None:
        # Taking a reserved grant out only loosens the window for later grants: always safe.
        key = self.keys.limiter_key("creates" if kind == "create" else "reads")
        try:
            self.redis.zrem(key, member)
        except redis.RedisError:
            pass

    # --- visibility and control -----------------------------------------------------------------
    def status(self) -> LimiterStatus:
        """One consistent snapshot (one script call): limits, slots, waiters, holders, window
        counts, pause."""
        return replies.status(self._call("status"))

    def limits(self) -> Limits:
        """The limits in force (as `set_limits` left them, else this limiter's own), at most
        LIMITS_CACHE_SECONDS old: one HMGET, for callers that pace themselves (poll intervals)."""
        cached = self._limits_cache
        now = time.monotonic()
        if cached is not None and now - cached[0] < LIMITS_CACHE_SECONDS:
            return cached[1]
        own = self.default_limits
        try:
            concurrency_limit, create, read, rate_window_ms = self.redis.hmget(
                self.keys.limiter_key("limits"),
                "concurrency_limit",
                "create_limit",
                "read_limit",
                "rate_window_ms",
            )
        except redis.RedisError:
            concurrency_limit = create = read = rate_window_ms = None
        value = Limits(
            concurrency_limit=int(_stored("concurrency_limit", concurrency_limit, own.concurrency_limit)),
            create_limit=int(_stored("create_limit", create, own.create_limit)),
            read_limit=int(_stored("read_limit", read, own.read_limit)),
            rate_window=_stored(
                "rate_window",
                None if rate_window_ms is None else float(rate_window_ms) / 1000,
                float(own.rate_window),
            ),
        )
        self._limits_cache = (now, value)
        return value

    def set_limits(
        self,
        concurrency_limit: int | None = None,
        create_limit: int | None = None,
        read_limit: int | None = None,
        rate_window: float | None = None,
    ) -> None:
        """Change the limits for every host at once (no restarts). Only the limits given are
        written: the others stay as they are (workers seed absent ones from their own limits).
        ValueError if a value is outside LIMIT_BOUNDS (nothing is written then).

        Shrinking the concurrency lets holders finish and admits no one until in_use is below the
        new limit. A rate change (limit or window) holds exactly from now on: reservations that
        callers are sleeping towards are moved later if the new limits require it."""
        changes = limit_changes(concurrency_limit, create_limit, read_limit, rate_window)
        if changes:
            self._call("set_limits", json.dumps(changes), int(self.rate_margin * 1000))
            self._limits_cache = None

    def held_leases(self) -> list[Lease]:
        """The leases this process holds through this limiter (for shutdown / diagnostics)."""
        agent = self._agent
        return agent.held() if agent is not None and agent.pid == os.getpid() else []

    def close(self) -> None:
        """Stop the background threads (held leases then expire unless released first)."""
        with self._agent_lock:
            agent, self._agent = self._agent, None
        if agent is not None and agent.pid == os.getpid():
            agent.stop()

    # --- plumbing -------------------------------------------------------------------------------
    def _current_agent(self) -> ProcessAgent:
        agent = self._agent
        if agent is None or agent.pid != os.getpid():  # first use, or we are a forked child
            with self._agent_lock:
                agent = self._agent
                if agent is None or agent.pid != os.getpid():
                    agent = self._agent = ProcessAgent(self)
        return agent

    def _forget_lease(self, lease: Lease) -> None:
        agent = self._agent
        if agent is not None:
            agent.remove_lease(lease.holder_id)

    def _drop_quietly(self, holder_id: str) -> None:
        try:
            self._call("drop", holder_id)
        except Exception as exc:  # noqa: BLE001 - the registration expires by itself anyway
            log.debug("could not withdraw waiter %s: %s", holder_id, exc)

    def _call(self, name: str, *args: Any) -> Any:
        """Run one script with our config and last seen epoch; remember the epoch it answers
        with and return its result."""
        try:
            epoch, result = self._scripts[name](
                keys=self._key_list, args=[self._config, self._known_epoch, *args]
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailableError(f"limiter cannot reach Redis: {exc}") from exc
        except redis.RedisError as exc:
            raise LimiterError(f"limiter script {name} failed: {exc}") from exc
        self._known_epoch = text(epoch)
        return result


def _checked(limits: Limits) -> dict[str, int | float]:
    """A limiter's own limits as the scripts seed them where Redis has none (the limits hash's
    fields). ConfigError naming the limit if one is out of LIMIT_BOUNDS."""
    try:
        return limit_changes(
            limits.concurrency_limit, limits.create_limit, limits.read_limit, limits.rate_window
        )
    except ValueError as exc:
        raise ConfigError(f"limiter limits: {exc}") from None


def _stored(name: str, value: Any, default: float) -> float:
    """A limit read from Redis, or the default if it is absent or out of bounds (as the
    scripts do)."""
    low, high = LIMIT_BOUNDS[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) and low <= number <= high else default


def _sleep(seconds: float, should_stop: Callable[[], bool] | None) -> bool:
    """Sleep; False if should_stop() turned True first."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return True
        if should_stop is not None and should_stop():
            return False
        time.sleep(min(left, STOP_POLL_SECONDS) if should_stop is not None else left)
