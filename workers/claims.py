"""Claims: at most one live run of an attempt at a time.

A claim is `SET key token NX PX ttl` (the key from AttemptRef.claim_key), renewed by one keeper
thread per process while the run lasts. A run usually takes it with its first checks
(workers/lua/attempt_start.lua, `ClaimKeeper.hold`) and releases it with its final ledger
transition (`Claim.released_in_redis`); claim_take.lua and claim_release.lua do it alone otherwise. A second run (a message redelivered by the broker's
visibility timeout while the first still runs) sees the claim held and backs off; a dead holder's
claim expires after `ttl`. Beside it, a "seen" marker (`<key>:seen`, kept a day) says the claim
existed: a renewal that finds the claim gone and the marker there knows the claim EXPIRED (its run
stalled or was cut off longer than `ttl`; the sweep may have sent the attempt again): it is lost
for good and the run stops before any creation. Only when both are gone (Redis lost them in a
restart from an older append-only file, or a failover) does the renewal take it back, at once,
before a second run could. Right
before a creation the owner checks in Redis that the claim is still its own
(workers/lua/attempt_post.lua, together with the rest of the last check); once its prediction has
ended, and before every output is written, it checks again (`Claim.ensure_ours`): a run whose
claim was lost stops (SupersededError) and writes nothing, the claim holder resumes the same
prediction. The claim is a guard, not the only one: the creation record (workers.attempts) still
prevents a second creation.

When Redis cannot be reached the answer is "cannot tell", never "lost": `still_ours` and
`reassert` raise, and the task runs the attempt again once Redis answers (workers.tasks), taking
the same claim back (`reassert`) if nobody else holds it by then.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from enum import IntEnum
from typing import Any

import redis

from shared import lua_scripts
from shared.errors import RedisUnavailableError, SupersededError
from shared.redis_conn import as_text
from shared.wakeup import run_forever

log = logging.getLogger(__name__)


SEEN_TTL = 24 * 3600  # a claim that expired is recognised as such for this long (seconds)
# A claim confirmed in Redis this recently cannot have expired since: its ttl is 3 s at least and
# the keeper renews it every third of that. Monotonic time counts a stall of the process (SIGSTOP),
# so a run resumed from one asks Redis again. Saves a round trip when the writes follow the end.
CLAIM_FRESH_SECONDS = 1.0


class Renewal(IntEnum):
    """claim_renew.lua's reply."""

    LOST = 0  # another run holds the claim now, or it expired
    RENEWED = 1
    REASSERTED = 2  # claim and marker were gone (Redis lost them): set again for its live owner


def new_token() -> str:
    """A claim's token: its run's name on the claim."""
    return uuid.uuid4().hex


def seen_key(claim_key: str) -> str:
    """The marker that outlives a claim: its claim expired, rather than Redis lost it."""
    return f"{claim_key}:seen"


class Claim:
    def __init__(self, keeper: ClaimKeeper, key: str, token: str):
        self.key = key
        self.token = token
        self._keeper = keeper
        self.lost = False  # a renewal found someone else's token (or none)
        # Monotonic time of the last confirmation in Redis by ensure_ours (only its run's thread
        # reads and writes it; the keeper never does).
        self._confirmed_at: float | None = None

    def release(self) -> None:
        self._keeper._release(self)

    def ensure_ours(self, before: str) -> None:
        """SupersededError unless this claim is still its run's. Asks Redis (one GET) unless it
        was confirmed there within CLAIM_FRESH_SECONDS: the keeper's flag may not have caught up
        yet (a process resumed from a stall runs this thread first). A claim Redis lost with its
        marker (restart, failover) is taken back, as the keeper would; an expired one or another
        run's is lost. Redis errors propagate: "cannot tell" is not "lost" (the task waits for
        Redis and runs the attempt again)."""
        if self.lost or not self._confirmed():
            raise SupersededError(f"the attempt's claim was lost before {before}; another run owns it")

    def _confirmed(self) -> bool:
        asked_at = time.monotonic()
        if self._confirmed_at is not None and asked_at - self._confirmed_at < CLAIM_FRESH_SECONDS:
            return True
        if not self.still_ours() and self._keeper.reassert(self) is None:
            return False
        self._confirmed_at = asked_at
        return True

    def released_in_redis(self) -> None:
        """Another script released the claim in Redis (the run's final ledger transition):
        stop renewing it; a later `release` does nothing."""
        self._keeper._forget(self)

    def still_ours(self) -> bool:
        """Ask Redis (one GET). False if the claim expired and someone else may run the attempt.
        Raises RedisUnavailableError when Redis cannot be asked: "cannot tell" is not "lost" (a
        lost claim stops the run for good; an outage means: wait, then run it again)."""
        if self.lost:
            return False
        try:
            value = self._keeper.redis.get(self.key)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailableError(f"cannot tell whether claim {self.key} is still ours: {exc}") from exc
        return as_text(value) == self.token if value is not None else False


class ClaimKeeper:
    """Takes claims and renews every held one from a single background thread."""

    def __init__(self, redis_client: redis.Redis, ttl: float = 30.0):
        self.redis = redis_client
        self.ttl_ms = int(ttl * 1000)
        scripts = lua_scripts.register(
            redis_client, "workers.lua", ("claim_take", "claim_renew", "claim_release")
        )
        self._take_script, self._renew_script, self._release_script = scripts.values()
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_claim(self, key: str) -> Claim | None:
        token = new_token()
        if not int(self._take_script(keys=[key, seen_key(key)], args=[token, self.ttl_ms, SEEN_TTL])):
            return None
        return self.hold(key, token)

    def hold(self, key: str, token: str) -> Claim:
        """A claim taken in Redis by another script (workers/lua/attempt_start.lua sets it as
        claim_take.lua does, with the run's first checks), from now on renewed and released here."""
        claim = Claim(self, key, token)
        with self._lock:
            self._held[token] = claim
            self._ensure_thread()
        return claim

    def reassert(self, claim: Claim) -> Claim | None:
        """Take a claim of this process back after a Redis outage interrupted its run: the same
        claim if Redis still holds its token or lost the key (re-set at once), None if another
        run holds it now or it expired meanwhile. Redis errors propagate."""
        renewal = Renewal(int(self._renew(claim)))
        with self._lock:
            if renewal is Renewal.LOST:
                self._held.pop(claim.token, None)
                claim.lost = True
                return None
            claim.lost = False
            self._held[claim.token] = claim
            self._ensure_thread()
        return claim

    def _renew(self, claim: Claim, **client) -> Any:  # the reply, or the pipeline when queued
        return self._renew_script(
            keys=[claim.key, seen_key(claim.key)], args=[claim.token, self.ttl_ms, SEEN_TTL], **client
        )

    def _forget(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim.token, None)

    def _release(self, claim: Claim) -> None:
        with self._lock:
            if self._held.pop(claim.token, None) is None:
                return
        try:
            self._release_script(keys=[claim.key], args=[claim.token])
        except redis.RedisError as exc:  # it expires by itself
            log.warning("could not release claim %s: %s", claim.key, exc)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=run_forever,
                args=(self._renew_held, "claim keeper", self._stop),
                name="claim-keeper",
                daemon=True,
            )
            self._thread.start()

    def _renew_held(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop.wait(interval):
            with self._lock:
                held = list(self._held.values())
            if not held:
                continue
            # One round trip for every claim of the process.
            pipe = self.redis.pipeline(transaction=False)
            for claim in held:
                self._renew(claim, client=pipe)
            try:
                results = pipe.execute(raise_on_error=False)
            except redis.RedisError as exc:
                log.warning("claim renewal failed for %d claim(s): %s", len(held), exc)
                continue
            for claim, reply in zip(held, results):
                if isinstance(reply, Exception):
                    log.warning("claim renewal failed for %s: %s", claim.key, reply)
                    continue
                renewal = Renewal(int(reply))
                if renewal is Renewal.REASSERTED:
                    log.warning("claim %s was gone from Redis (restart or failover); re-asserted", claim.key)
                elif renewal is Renewal.LOST and not claim.lost:
                    claim.lost = True
                    with self._lock:
                        self._held.pop(claim.token, None)  # lost for good: never renewed again
                    log.warning("claim %s lost: it expired or another run holds the attempt now", claim.key)
