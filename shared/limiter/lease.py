"""A held slot: renewed in the background by the process's keeper until released or lost."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shared.errors import LeaseLostError, RedisUnavailableError
from shared.limiter import replies

if TYPE_CHECKING:  # pragma: no cover
    from shared import lua_scripts
    from shared.limiter.core import LimiterCore
    from shared.limiter.replies import Grant

log = logging.getLogger(__name__)


class Lease:
    """One concurrency slot. Thread-safe; `release()` and `abandon()` are idempotent (the first of
    them wins); usable as a context manager.

    `lost` turns True when a renewal finds the holder gone (lease expired because renewals could
    not get through in time, or `force_release`): the caller no longer counts against the limit
    and should stop (or at least not start) the work the slot was for.

    `handoff_seconds`: when this slot went to a waiter woken by the event that freed it (a
    release, an expired holder, a larger limit), the time from that event to this grant (Redis
    clock); None when the grant needed no wake-up.
    """

    def __init__(
        self,
        limiter: LimiterCore,
        holder_id: str,
        grant: Grant,
        record: dict[str, Any],
        renewed_at: float,
        first_lease: float | None = None,
    ):
        self.holder_id = holder_id
        self.fence = grant.fence
        self.granted_at = grant.granted_at  # Unix seconds on the Redis clock
        self.released_at: float | None = None  # Redis clock, set by release()
        self.handoff_seconds = grant.handoff_seconds
        self.lost_reason: str | None = None
        self.epoch = grant.epoch
        self._limiter = limiter
        # The info sent with the grant, kept up to date (prediction id, attempt marker): re-sent
        # if Redis forgets us, so a re-registered holder keeps what protects its slot.
        self._record = record
        self._create_token: str | None = None  # the last creation token granted for this slot
        # The fence goes with it: a re-registered holder is still this grant (holds() in Lua).
        record["fence"] = str(grant.fence)
        self._lock = threading.Lock()
        self._ended: str | None = None  # "released" or "abandoned"
        self._lost = threading.Event()
        # Monotonic times kept by the keeper: next renewal, and the latest moment the lease can
        # still be valid (measured from *before* the last successful call, so conservative).
        # `first_lease`: a slot handed over by a release runs that long until its first renewal.
        first = limiter.lease_seconds if first_lease is None else first_lease
        self._third = first / 3  # how far ahead the keeper renews it with other renewals due
        self._renew_due = renewed_at + first / 3
        self._deadline = renewed_at + first

    # --- state ----------------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    @property
    def released(self) -> bool:
        return self._ended == "released"

    @property
    def abandoned(self) -> bool:
        return self._ended == "abandoned"

    @property
    def attempt(self) -> str | None:
        """The attempt marker set by take_create_token(holder=self, attempt=...), if any."""
        return self._record.get("attempt")

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the lease is lost (True) or the timeout passes (False)."""
        return self._lost.wait(timeout)

    def check(self) -> None:
        """Raise LeaseLostError if the slot is no longer ours."""
        if self.lost:
            raise LeaseLostError(f"slot lease {self.holder_id} lost: {self.lost_reason}")

    # --- actions --------------------------------------------------------------------------------
    def set_prediction(self, prediction_id: str) -> bool:
        """Record the prediction id on the slot (status, settle/adopt by prediction, and a slot
        kept counted if this holder dies). The attempt marker stays. Also on an abandoned or lost
        lease: it never brings back a holder that is gone. A Redis error is logged, not raised
        (the attempt marker, if any, already protects the slot). False when Redis no longer
        counts this holder (force-released, or expired without a marker): the lease is then
        lost, as its next renewal would find, and the prediction runs without a slot of its own."""
        self._record["prediction_id"] = prediction_id
        if self.released:
            return False
        try:
            counted = int(self._limiter._call("set_prediction", self.holder_id, prediction_id)) == 1
        except Exception as exc:  # noqa: BLE001 - must never fail the task
            log.warning("could not record prediction id on lease %s: %s", self.holder_id, exc)
            return True  # cannot tell: the renewals decide
        return self._shown(prediction_id, counted)

    def set_prediction_if(
        self, prediction_id: str, script: lua_scripts.LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> bool:
        """set_prediction() inside another owner's step that decides whether this slot gets the
        prediction at all, in one round trip: `script` (LimiterCore.call_with; ARGV after the
        limiter's: this holder id, `prediction_id`, then `args`) replies {done, counted} and puts
        the id on the slot only when done. Returns done; a slot no longer counted is lost, as
        with set_prediction(). Errors raise, with nothing changed here (the caller decides)."""
        done, counted = self._limiter.call_with(script, keys, self.holder_id, prediction_id, *args)
        if int(done) != 1:
            return False
        self._record["prediction_id"] = prediction_id
        self._shown(prediction_id, int(counted) == 1)
        return True

    def _shown(self, prediction_id: str, counted: bool) -> bool:
        """The limiter answered whether it counts this holder as it recorded `prediction_id`."""
        if not counted and not self.abandoned:
            log.error(
                "prediction %s runs on a slot the limiter no longer counts (lease %s)",
                prediction_id,
                self.holder_id,
            )
            self._mark_lost("the holder was not counted when its prediction was recorded")
        return counted

    def abandon(self) -> None:
        """For an ambiguous creation (the POST may have created a prediction nobody knows): stop
        renewing and turn the slot into an orphan at once, still counted (until adopted, settled
        or the orphan deadline), instead of giving it back. Idempotent; never raises; a no-op
        after release(). If Redis cannot be reached, the lease runs out and an attempt marker
        (take_create_token(holder=, attempt=)) makes it an orphan all the same."""
        if not self._end("abandoned"):
            return
        try:
            self._limiter._call("abandon", self.holder_id)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            self._end_failed(
                "abandon", exc, "it becomes an orphan when its lease runs out if it was marked as creating"
            )

    def release(self) -> None:
        """Give the slot back and stop renewing. Idempotent. If Redis cannot be reached the slot
        still comes back on its own when the lease runs out (renewals have stopped). A no-op
        after abandon(): the slot then stays counted on purpose."""
        if self._end("released"):
            self._drop()

    def release_settling(self, marker: str) -> bool:
        """release(), and the spend of attempt `marker` settled at the price it reserved (as
        `Budget.settle(marker)`) in the same round trip: drop_settle.lua, the budget's settle after
        the limiter's drop in one script. True when the settle is done (whether a reservation was
        held or not); False when the caller must still settle, with its own error handling: this
        lease had ended already (released, or abandoned: then nothing is given back), or the call
        failed. A failed call is never worse than the two steps apart: the release is tried again
        alone (unless Redis is out of reach), so a settle that fails never keeps the slot, and a
        release that fails (logged, as release()'s) leaves the settle to the caller."""
        if not self._end("released"):
            return False
        try:
            held, waited, at, _settled = self._limiter._call("drop_settle", self.holder_id, marker, "")
        except Exception as exc:  # noqa: BLE001 - see the docstring
            if isinstance(exc, RedisUnavailableError):
                self._release_failed(exc)
            else:
                log.warning("release of %s with its settle failed (%s); released alone", self.holder_id, exc)
                self._drop()
            return False
        self.released_at = replies.drop([held, waited, at]).at
        return True

    def _drop(self) -> None:
        """The release's own script call (drop.lua); a failure is logged (see release())."""
        try:
            self.released_at = replies.drop(self._limiter._call("drop", self.holder_id)).at
        except Exception as exc:  # noqa: BLE001 - see release()
            self._release_failed(exc)

    def _release_failed(self, exc: Exception) -> None:
        self._end_failed("release", exc, f"it expires within {self._limiter.lease_seconds:.0f} s")

    def _end_failed(self, what: str, exc: Exception, then: str) -> None:
        """A release's or an abandon's call failed: an outage said as one, anything else as a failure."""
        how = "did not reach Redis" if isinstance(exc, RedisUnavailableError) else "failed"
        log.warning("%s of %s %s (%s); %s", what, self.holder_id, how, exc, then)

    def _end(self, how: str) -> bool:
        """release() or abandon(): True for the first of them (the keeper stops renewing this
        lease), False for any later call."""
        with self._lock:
            if self._ended is not None:
                return False
            self._ended = how
        self._limiter._forget_lease(self)
        return True

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- limiter and keeper side -------------------------------------------------------------------
    def _mark_creating(self, attempt: str, at_ms: str, token: str | None = None) -> None:
        """take_create_token marked this holder in Redis; keep it for a re-registration, and the
        token (its member of the creation window) in case it goes unused (give_back_create_token)."""
        self._record["attempt"] = attempt
        self._record["creating_at"] = at_ms
        self._create_token = token

    def _unmark_creating(self, attempt: str) -> None:
        """give_back_create_token took the marker off in Redis: a re-registration must not put it back."""
        if self._record.get("attempt") == attempt:
            self._record.pop("attempt", None)
            self._record.pop("creating_at", None)

    def _mark_lost(self, reason: str) -> None:
        if self._ended is not None or self.lost:
            return
        self.lost_reason = reason
        self._lost.set()
        log.warning("slot lease %s lost: %s", self.holder_id, reason)

    def __repr__(self) -> str:
        state = self._ended or ("lost" if self.lost else "held")
        return f"Lease({self.holder_id!r}, fence={self.fence}, {state})"
