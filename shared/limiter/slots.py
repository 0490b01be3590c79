"""The concurrency slots: acquire (in line, woken by a freed slot), adopt, settle, force_release."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.errors import AcquireTimeoutError
from shared.limiter import replies
from shared.limiter.core import STOP_POLL_SECONDS, LimiterCore
from shared.limiter.lease import Lease
from shared.limiter.types import HolderInfo

log = logging.getLogger(__name__)

RECOVERY_RECHECK_JITTER = 0.05  # waiters re-check within this after the post-loss freeze ends


class Slots(LimiterCore):
    """The leased semaphore's side of the Limiter (README.md, "Slots")."""

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
        deadline = None if timeout is None else time.monotonic() + timeout
        event = agent.add_waiter(holder_id)
        granted = False
        try:
            while True:
                sent_at = time.monotonic()
                reply = replies.acquire(self._call("acquire", holder_id, self._lease_ms, record_json))
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
                self._lease_ms,
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

    def _drop_quietly(self, holder_id: str) -> None:
        try:
            self._call("drop", holder_id)
        except Exception as exc:  # noqa: BLE001 - the registration expires by itself anyway
            log.debug("could not withdraw waiter %s: %s", holder_id, exc)
