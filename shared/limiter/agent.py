"""The background half of a Limiter in one process.

* keeper thread: one `heartbeat` script call per tick renews every lease of this process that
  is due (tick = lease/3) and refreshes this process's waiter registrations (every
  waiter_ttl/3 while any thread waits); it also wakes up right when the earliest lease in the
  whole limiter runs out, so a dead holder's slot is handed on without delay.
* wake listener (shared.wakeup): one blocking BLPOP on this process's wake list. Release scripts
  push the waiter id there; the listener sets that waiter's Event. So a process with 100 waiting
  threads uses ONE extra connection, not 100, and no thread polls.

Both threads are daemons, start on first use and survive Redis outages (they retry).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING

from shared.limiter import replies
from shared.wakeup import WakeListener, run_forever

if TYPE_CHECKING:  # pragma: no cover
    from shared.limiter.core import LimiterCore
    from shared.limiter.lease import Lease

log = logging.getLogger(__name__)


class ProcessAgent:
    def __init__(self, limiter: LimiterCore):
        self.pid = os.getpid()
        # Never contains "/": the scripts find the process of a waiter id by its last "/".
        self.token = f"{socket.gethostname().replace('/', '_')}:{self.pid}:{secrets.token_hex(4)}"
        self.wake_key = limiter.wake_prefix + self.token
        self._limiter = limiter
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        # Waiters register without listening: most acquire calls are granted at once, and only
        # those that queue make the listener block in Redis (start_waiting).
        self._wake = WakeListener(limiter._listen_client, self.wake_key, name=f"limiter-wake-{self.pid}")
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._next_waiter_refresh = 0.0
        # waiter id -> when (monotonic, sent) the last refresh found it still waiting: a hand-off
        # to it came later (a lower bound of its grant's moment, for the lease's deadline)
        self._waiting_seen: dict[str, float] = {}
        self._earliest_expiry_at: float | None = None

    def new_id(self) -> str:
        return f"{self.token}/{next(self._seq)}"

    # --- registration -----------------------------------------------------------------------------
    def add_lease(self, lease: Lease) -> None:
        with self._lock:
            self._leases[lease.holder_id] = lease
        self._ensure_keeper()
        self._kick.set()

    def remove_lease(self, holder_id: str) -> None:
        with self._lock:
            self._leases.pop(holder_id, None)

    def add_waiter(self, waiter_id: str) -> threading.Event:
        """Register before the first acquire call, so a wake token can never arrive unseen."""
        return self._wake.register(waiter_id, listen=False)

    def start_waiting(self) -> None:
        self._ensure_keeper()
        self._wake.listen()
        self._kick.set()

    def remove_waiter(self, waiter_id: str) -> None:
        self._wake.unregister(waiter_id)
        with self._lock:
            self._waiting_seen.pop(waiter_id, None)

    def take_handoff(self, waiter_id: str) -> tuple[dict[str, str], float] | None:
        """The grant a release handed to this waiter (its wake token's payload), with the moment
        the last refresh still saw it waiting (0.0: none), or None."""
        payload = self._wake.take_payload(waiter_id)
        if payload is None:
            return None
        with self._lock:
            return payload, self._waiting_seen.get(waiter_id, 0.0)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self._wake.stop()
        if self._keeper is not None:
            self._keeper.join(timeout=0.5)

    def _ensure_keeper(self) -> None:
        if self._keeper is not None or self._stop.is_set():
            return
        with self._lock:
            if self._keeper is None:
                self._keeper = threading.Thread(
                    target=run_forever,
                    args=(self._keep_leases, "limiter keeper", self._stop),
                    name=f"limiter-keeper-{self.pid}",
                    daemon=True,
                )
                self._keeper.start()

    # --- keeper -----------------------------------------------------------------------------------
    def _keep_leases(self) -> None:
        lim = self._limiter
        third = lim.lease_seconds / 3
        failures = 0
        while not self._stop.is_set():
            with self._lock:
                leases = list(self._leases.values())
            waiters = self._wake.ids() if self._wake.listening else []
            now = time.monotonic()
            # Renew what is due, and whatever would fall due soon, in the same call. (A slot just
            # handed over has a short first lease: "soon" is half a third of that, so its first
            # renewal is not pulled in at once but goes with this process's next waiter refresh.)
            due = [lease for lease in leases if lease._renew_due <= now + min(third, lease._third) / 2]
            refresh_waiters = bool(waiters) and (
                now >= self._next_waiter_refresh
                or (self._earliest_expiry_at is not None and now >= self._earliest_expiry_at)
            )
            if due or refresh_waiters:
                try:
                    self._heartbeat(due, waiters, now)
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - the keeper must outlive any outage
                    failures += 1
                    if failures == 1 or failures % 20 == 0:
                        log.warning("limiter renewal failed (%d in a row): %s", failures, exc)
                    for lease in due:
                        if time.monotonic() >= lease._deadline:
                            lease._mark_lost("could not renew before the lease ran out")
                            self.remove_lease(lease.holder_id)
                    self._stop.wait(min(0.5, third))
                    continue
            self._kick.clear()
            self._kick.wait(self._next_tick_in(time.monotonic()))

    def _next_tick_in(self, now: float) -> float:
        with self._lock:
            leases = list(self._leases.values())
        have_waiters = len(self._wake) > 0
        if not leases and not have_waiters:
            return 5.0
        moments = [lease._renew_due for lease in leases]
        if have_waiters:
            moments.append(self._next_waiter_refresh)
            if self._earliest_expiry_at is not None:
                moments.append(self._earliest_expiry_at)
        return min(5.0, max(0.005, min(moments) - now))

    def _heartbeat(self, due: list[Lease], waiters: list[str], sent_at: float) -> None:
        lim = self._limiter
        payload = {
            "h": [[lease.holder_id, lease.epoch, json.dumps(lease._record)] for lease in due],
            "w": waiters,
        }
        renewals = replies.heartbeat(lim._call("heartbeat", lim._lease_ms, json.dumps(payload)))
        third = lim.lease_seconds / 3
        for lease, outcome in zip(due, renewals.holders):
            if outcome == 0:
                lease._mark_lost("the lease expired or was force-released")
                self.remove_lease(lease.holder_id)
                continue
            if outcome == 2:
                log.warning("Redis had lost the limiter state; re-registered lease %s", lease.holder_id)
                lease.epoch = renewals.epoch
                # Released or abandoned while this call was on its way: do it again, now that
                # Redis knows the holder (give the slot back, or leave it counted as an orphan).
                if lease.released:
                    lim._call("drop", lease.holder_id)
                    continue
                if lease.abandoned:
                    lim._call("abandon", lease.holder_id)
                    continue
            lease._renew_due = sent_at + third
            lease._third = third
            lease._deadline = sent_at + lim.lease_seconds
        if waiters:
            self._next_waiter_refresh = sent_at + lim.waiter_ttl / 3
            for waiter_id, outcome in zip(waiters, renewals.waiters):
                if outcome == 0:
                    # pruned or forgotten: let it register again (or, if a release handed it
                    # the slot, acquire hands back that grant)
                    self._wake.wake(waiter_id)
                else:
                    with self._lock:  # (remove_waiter unregisters first, then pops under this lock)
                        if waiter_id in self._wake:
                            self._waiting_seen[waiter_id] = sent_at
        # Look again right when the next lease anywhere runs out: if its holder is dead, this
        # process's waiters get the slot within milliseconds, not at the next refresh.
        earliest = renewals.earliest_expiry_ms
        self._earliest_expiry_at = sent_at + earliest / 1000 + 0.002 if earliest >= 0 else None
