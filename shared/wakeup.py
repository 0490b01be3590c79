"""Wake waiting threads from Redis: one blocking listener per process and list.

Whoever decides that a wait is over (usually a Lua script) RPUSHes the waiter's id onto the list
of the waiter's process; this listener pops the list (blocking) and sets the Event registered for that id.
A list, unlike pub/sub, keeps a signal until it is read, so a signal sent after a thread
registered but before it started waiting is never lost, and 100 waiting threads cost one
connection, not 100. The thread blocks in Redis only while some registered waiter is listening.

A token is either the waiter's id, or a JSON object whose "w" is the id and whose other fields
are what the waiter was handed (the limiter's direct hand-off: the slot's grant); `take_payload`
returns it once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from shared.redis_conn import as_text, texts

log = logging.getLogger(__name__)

BLOCK_SECONDS = 2  # one blocking pop lasts at most this long (so stop() and new listeners are noticed)
DRAIN_COUNT = 100  # tokens taken in one pop at most (the rest in the next, at once)


class WakeListener:
    """Maps waiter ids to Events for one Redis list. Thread-safe; the thread starts on first use."""

    def __init__(self, client: redis.Redis, key: str, *, name: str):
        # `client` must allow a socket timeout longer than BLOCK_SECONDS (see blocking_client).
        self.client = client
        self.key = key
        self.name = name
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._payloads: dict[str, dict[str, Any]] = {}  # waiter id -> what its token carried
        self._listening = threading.Event()  # some registered waiter is actually waiting
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._blmpop = True  # until the server says it has no BLMPOP

    def register(self, waiter_id: str, *, listen: bool = True) -> threading.Event:
        """The Event set when `waiter_id` is pushed. Register before the call that may lead to
        a push, so the push can never come unseen. `listen=False` defers blocking in Redis until
        `listen()` (a waiter that will most likely not need it)."""
        event = threading.Event()
        with self._lock:
            self._events[waiter_id] = event
        if listen:
            self.listen()
        return event

    def listen(self) -> None:
        self._ensure_thread()
        self._listening.set()

    def unregister(self, waiter_id: str) -> None:
        with self._lock:
            self._events.pop(waiter_id, None)
            self._payloads.pop(waiter_id, None)
            if not self._events:
                self._listening.clear()

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._events)

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def __len__(self) -> int:
        return len(self._events)

    def __contains__(self, waiter_id: object) -> bool:
        with self._lock:
            return waiter_id in self._events

    def take_payload(self, waiter_id: str) -> dict[str, Any] | None:
        """What the last token for `waiter_id` carried besides its id (once), or None."""
        with self._lock:
            return self._payloads.pop(waiter_id, None)

    def wake(self, waiter_id: str) -> None:
        """Set a waiter's Event from this process (e.g. after learning it must act again)."""
        with self._lock:
            event = self._events.get(waiter_id)
        if event is not None:
            event.set()

    def stop(self) -> None:
        self._stop.set()
        self._listening.set()
        if self._thread is not None:
            try:  # unblock the blocking pop now rather than at its timeout
                self.client.rpush(self.key, "")
                self.client.pexpire(self.key, 1000)
            except Exception:  # noqa: BLE001 - it stops at its timeout anyway
                pass
            self._thread.join(timeout=0.5)

    # --- the thread -------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=run_forever,
                    args=(self._listen, self.name, self._stop),
                    name=self.name,
                    daemon=True,
                )
                self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            if not self._listening.wait(BLOCK_SECONDS) or self._stop.is_set():
                continue
            try:
                ids = self._pop()
            except Exception as exc:  # noqa: BLE001 - keep listening once Redis is back
                log.debug("%s: %s", self.name, exc)
                self._stop.wait(0.5)
                continue
            with self._lock:
                for token in ids:
                    waiter_id, payload = _parse(as_text(token))
                    event = self._events.get(waiter_id)
                    if event is not None:
                        if payload is not None:
                            self._payloads[waiter_id] = payload
                        event.set()

    def _pop(self) -> list[str]:
        """The tokens pushed since the last pop, waiting up to BLOCK_SECONDS for the first: one
        round trip (BLMPOP with a count), where BLPOP + an LPOP draining the rest were two per
        wake (issue 16.4: ~1.9 LPOP per image beside 2.9 BLPOP). Servers before Redis 7.0 have
        no BLMPOP: there, the two commands."""
        if self._blmpop:
            try:
                popped = self.client.blmpop(BLOCK_SECONDS, 1, self.key, direction="LEFT", count=DRAIN_COUNT)
                return texts(popped[1]) if popped else []
            except redis.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                log.info("%s: the server has no BLMPOP (Redis < 7.0); BLPOP + LPOP instead", self.name)
                self._blmpop = False
        item = self.client.blpop([self.key], timeout=BLOCK_SECONDS)
        if item is None:
            return []
        more = self.client.lpop(self.key, DRAIN_COUNT - 1)
        return [as_text(item[1]), *texts(more or [])]


def blocking_client(client: redis.Redis, socket_timeout: float = BLOCK_SECONDS + 5) -> redis.Redis:
    """A separate small pool for a listener, so it never holds a worker's connection and its
    socket timeout is longer than the block."""
    import redis.sentinel

    pool = client.connection_pool
    own: redis.ConnectionPool
    try:
        kwargs = dict(pool.connection_kwargs)
        kwargs["socket_timeout"] = socket_timeout
        if isinstance(pool, redis.sentinel.SentinelConnectionPool):  # follows the primary too
            kwargs.pop("connection_pool", None)  # the old pool's proxy; the new pool makes its own
            own = redis.sentinel.SentinelConnectionPool(
                pool.service_name,
                pool.sentinel_manager,
                connection_class=pool.connection_class,
                max_connections=4,
                **kwargs,
            )
        else:
            own = type(pool)(connection_class=pool.connection_class, max_connections=4, **kwargs)
        return redis.Redis(connection_pool=own)
    except Exception:  # noqa: BLE001 - unusual clients (fakeredis): share the caller's
        return client


def run_forever(loop: Callable[[], None], name: str, stop: threading.Event) -> None:
    """Restart `loop` after any unexpected exception: a background thread that dies quietly
    (a lease keeper, a listener) breaks promises the rest of the process relies on."""
    while not stop.is_set():
        try:
            loop()
        except Exception:  # noqa: BLE001
            log.exception("%s crashed; restarting it", name)
            stop.wait(0.5)


def _parse(token: str) -> tuple[str, dict[str, Any] | None]:
    """(waiter id, payload or None). Ids never start with "{" (the limiter's are host:pid:...)."""
    if not token.startswith("{"):
        return token, None
    try:
        payload = json.loads(token)
        return str(payload["w"]), payload
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable wake token %.80r", token)
        return token, None
