"""The rate tokens: take (exact sliding window, reservations), give back, and the creations' pause."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from shared.budget import Reservation
from shared.errors import AcquireTimeoutError, BudgetExceededError, LimiterError, RedisUnavailableError
from shared.limiter import replies
from shared.limiter.bounds import LIMIT_BOUNDS
from shared.limiter.core import STOP_POLL_SECONDS, LimiterCore
from shared.limiter.lease import Lease
from shared.lua_scripts import LuaScript

log = logging.getLogger(__name__)


class Rates(LimiterCore):
    """The creation and read windows' side of the Limiter (README.md, "Rates")."""

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
        while True:
            member = agent.new_id()
            max_wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            args = self._token_args(kind, member, max_wait, holder, attempt, reservation)
            token = replies.token(self._call("token", *args))
            wait = token.wait
            _refused_outright(token, holder)
            if not token.granted:
                if token.reason == "busy" or (deadline is not None and time.monotonic() + wait > deadline):
                    what = "creations are paused" if token.reason == "paused" else f"no {kind} token"
                    raise _too_long(what, wait, timeout)
                # paused: sleep it out (a little jitter so the fleet does not resume in lockstep)
                if not _sleep(wait + random.uniform(0, 0.05), should_stop):
                    raise _stopped(kind)
                continue
            if holder is not None and attempt:
                holder._mark_creating(attempt, token.at_ms, member)
            granted_at = self._await_reservation(kind, member, token.at, wait, deadline, timeout, should_stop)
            if granted_at is not None:
                return granted_at
            # The reservation was cancelled (a pause began, or the state was lost): ask again.

    def create_token_with(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        holder: Lease,
        attempt: str,
        reservation: Reservation | None = None,
    ) -> tuple[replies.Token, list[Any]]:
        """A creation token for `holder` and `attempt`, only if it can be granted at once (no
        wait), taken inside `script`: another owner's script, sent after TOKEN_PARTS (core.py),
        that takes the token in the same call as its own step and only together with it
        (workers/lua/attempt_create.lua: the intent and the last check before the POST). Its
        KEYS and ARGV as `call_with`'s, the token's own arguments (token_common.lua) first in
        `args`; it answers reply({token, ...}).

        Returns the token (granted: the holder is marked creating, as by take_create_token;
        refused 'paused' or 'busy': a wait is needed; or refused for a reason of the script's
        own step) and the rest of the answer. LeaseLostError and BudgetExceededError as
        take_create_token."""
        if not attempt:
            raise ValueError("attempt must not be empty")
        member = self._current_agent().new_id()
        token_args = self._token_args("create", member, 0, holder, attempt, reservation)
        answer = self.call_with(script, keys, *token_args, *args)
        token = replies.token(answer[0])
        _refused_outright(token, holder)
        if token.granted:
            holder._mark_creating(attempt, token.at_ms, member)
        return token, list(answer[1:])

    def _token_args(
        self,
        kind: str,
        member: str,
        max_wait: int,
        holder: Lease | None,
        attempt: str | None,
        reservation: Reservation | None,
    ) -> list[Any]:
        """token_common.lua's ARGV[3..10]."""
        marked = holder is not None and bool(attempt)
        return [
            kind,
            member,
            self._margin_ms,
            max_wait,
            holder.holder_id if holder is not None and marked else "",
            attempt if marked else "",
            reservation.arg() if reservation is not None else "",
            str(holder.fence) if holder is not None and marked else "",
        ]

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
                raise _too_long(f"no {kind} token", wait, timeout)
            if not _sleep(wait, should_stop):
                self._unreserve(kind, member)
                raise _stopped(kind)
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


def _refused_outright(token: replies.Token, holder: Lease | None) -> None:
    """The refusals no wait mends: LeaseLostError when the holder does not hold its lease any
    more (`holder.lost` set), BudgetExceededError when the price does not fit a spending limit."""
    if token.reason == "lost" and holder is not None:
        # The slot went to someone else while this holder stalled: creating now would put one
        # prediction more in flight than the limit.
        holder._mark_lost("the lease ran out before the creation token (checked in Redis)")
        holder.check()
    if token.refusal is not None:
        raise BudgetExceededError(*token.refusal)


def _too_long(what: str, wait: float, timeout: float | None) -> AcquireTimeoutError:
    """`what` lasts beyond the caller's timeout (only asked with a timeout); `.retry_after` says
    when to try again."""
    return AcquireTimeoutError(f"{what} for another {wait:.2f} s (timeout {timeout:g} s)", retry_after=wait)


def _stopped(kind: str) -> AcquireTimeoutError:
    return AcquireTimeoutError(f"stopped waiting for a {kind} token (should_stop)")


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
