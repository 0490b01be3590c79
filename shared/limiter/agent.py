"""The background half of a Limiter in one process.

* keeper thread: one `heartbeat` script call per tick renews every lease of this process that
  is due (tick = lease/3) and refreshes this process's waiter registrations (every
  waiter_ttl/3 while any thread waits); it also wakes up right when the earliest lease in the
  whole limiter runs out, so a dead holder's slot is handed on without delay.
* wake listener thread: one blocking BLPOP on this process's wake list. Release scripts push
  the waiter id there; the listener sets that waiter's Event. So a process with 100 waiting
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
from typing import TYPE_CHECKING, Callable

import redis

if TYPE_CHECKING:  # pragma: no cover
    from shared.limiter.lease import Lease
    from shared.limiter.limiter import Limiter

log = logging.getLogger(__name__)

LISTEN_BLOCK_SECONDS = 2


class ProcessAgent:
    def __init__(self, limiter: "Limiter"):
        self.pid = os.getpid()
        # Never contains "/": the scripts find the process of a waiter id by its last "/".
        self.token = f"{socket.gethostname().replace('/', '_')}:{self.pid}:{secrets.token_hex(4)}"
        self.wake_key = limiter.wake_prefix + self.token
        self._limiter = limiter
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._leases: dict[str, "Lease"] = {}
        self._waiters: dict[str, threading.Event] = {}
        self._kick = threading.Event()
        self._have_waiters = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_waiter_refresh = 0.0
        self._earliest_expiry_at: float | None = None

    def new_id(self) -> str:
        return f"{self.token}/{next(self._seq)}"

    # --- registration -----------------------------------------------------------------------------
    def add_lease(self, lease: "Lease") -> None:
        with self._lock:
            self._leases[lease.holder_id] = lease
        self._ensure_threads()
        self._kick.set()

    def remove_lease(self, holder_id: str) -> None:
        with self._lock:
            self._leases.pop(holder_id, None)

    def add_waiter(self, waiter_id: str) -> threading.Event:
        """Register before the first acquire call, so a wake token can never arrive unseen."""
        event = threading.Event()
        with self._lock:
            self._waiters[waiter_id] = event
        return event

    def start_waiting(self) -> None:
        self._ensure_threads()
        self._have_waiters.set()
        self._kick.set()

    def remove_waiter(self, waiter_id: str) -> None:
        with self._lock:
            self._waiters.pop(waiter_id, None)
            if not self._waiters:
                self._have_waiters.clear()

    def held(self) -> list["Lease"]:
        with self._lock:
            return list(self._leases.values())

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self._have_waiters.set()
        if self._threads:
            try:  # unblock the listener's BLPOP now rather than at its timeout
                self._limiter._listen_client.rpush(self.wake_key, "")
                self._limiter._listen_client.pexpire(self.wake_key, 1000)
            except Exception:  # noqa: BLE001 - it stops at its timeout anyway
                pass
        for thread in self._threads:
            thread.join(timeout=0.5)

    def _ensure_threads(self) -> None:
        if self._threads or self._stop.is_set():
            return
        with self._lock:
            if self._threads:
                return
            for name, target in (("keeper", self._keeper_loop), ("wake", self._listener_loop)):
                thread = threading.Thread(target=target, name=f"limiter-{name}-{self.pid}", daemon=True)
                thread.start()
                self._threads.append(thread)

    # --- keeper -----------------------------------------------------------------------------------
    def _keeper_loop(self) -> None:
        _run_forever(self._keep_leases, "keeper", self._stop)

    def _keep_leases(self) -> None:
        lim = self._limiter
        third = lim.lease_seconds / 3
        failures = 0
        while not self._stop.is_set():
            with self._lock:
                leases = list(self._leases.values())
                waiters = list(self._waiters)
            now = time.monotonic()
            # Renew what is due, and whatever would fall due soon, in the same call.
            due = [lease for lease in leases if lease._renew_due <= now + third / 2]
            refresh_waiters = bool(waiters) and (
                now >= self._next_waiter_refresh
                or (self._earliest_expiry_at is not None and now >= self._earliest_expiry_at)
            )
            if due or refresh_waiters:
                try:
                    self._heartbeat(due, waiters if self._have_waiters.is_set() else [], now)
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
            have_waiters = bool(self._waiters)
        if not leases and not have_waiters:
            return 5.0
        moments = [lease._renew_due for lease in leases]
        if have_waiters:
            moments.append(self._next_waiter_refresh)
            if self._earliest_expiry_at is not None:
                moments.append(self._earliest_expiry_at)
        return min(5.0, max(0.005, min(moments) - now))

    def _heartbeat(self, due: list["Lease"], waiters: list[str], sent_at: float) -> None:
        lim = self._limiter
        payload = {
            "h": [[lease.holder_id, lease.epoch, json.dumps(lease._record)] for lease in due],
            "w": waiters,
        }
        res = lim._call("heartbeat", int(lim.lease_seconds * 1000), json.dumps(payload))
        holder_results, waiter_results, epoch, earliest = res[0] or [], res[1] or [], res[2], float(res[3])
        third = lim.lease_seconds / 3
        for lease, outcome in zip(due, holder_results):
            outcome = int(outcome)
            if outcome == 0:
                lease._mark_lost("the lease expired or was force-released")
                self.remove_lease(lease.holder_id)
                continue
            if outcome == 2:
                log.warning("Redis had lost the limiter state; re-registered lease %s", lease.holder_id)
                lease.epoch = _text(epoch)
                if lease.released:  # released while this call was on its way: give it back
                    lim._call("drop", lease.holder_id)
                    continue
            lease._renew_due = sent_at + third
            lease._deadline = sent_at + lim.lease_seconds
        if waiters:
            self._next_waiter_refresh = sent_at + lim.waiter_ttl / 3
            with self._lock:
                for waiter_id, outcome in zip(waiters, waiter_results):
                    event = self._waiters.get(waiter_id)
                    if int(outcome) == 0 and event is not None:
                        event.set()  # it was pruned or forgotten: let it register again
        # Look again right when the next lease anywhere runs out: if its holder is dead, this
        # process's waiters get the slot within milliseconds, not at the next refresh.
        self._earliest_expiry_at = sent_at + earliest / 1000 + 0.002 if earliest >= 0 else None

    # --- wake listener --------------------------------------------------------------------------
    def _listener_loop(self) -> None:
        _run_forever(self._listen, "wake listener", self._stop)

    def _listen(self) -> None:
        client = self._limiter._listen_client
        while not self._stop.is_set():
            if not self._have_waiters.wait(LISTEN_BLOCK_SECONDS) or self._stop.is_set():
                continue
            try:
                item = client.blpop([self.wake_key], timeout=LISTEN_BLOCK_SECONDS)
                if item is None:
                    continue
                ids = [item[1]]
                more = client.lpop(self.wake_key, 100)
                if more:
                    ids.extend(more)
            except Exception as exc:  # noqa: BLE001 - keep listening once Redis is back
                log.debug("wake listener: %s", exc)
                self._stop.wait(0.5)
                continue
            with self._lock:
                for waiter_id in ids:
                    event = self._waiters.get(_text(waiter_id))
                    if event is not None:
                        event.set()


def _run_forever(loop: Callable[[], None], name: str, stop: threading.Event) -> None:
    """Restart `loop` after any unexpected exception: a dead keeper would let this process's leases
    expire while their predictions still run, i.e. put the fleet over the limit."""
    while not stop.is_set():
        try:
            loop()
        except Exception:  # noqa: BLE001
            log.exception("limiter %s crashed; restarting it", name)
            stop.wait(0.5)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
