"""Corrections to kombu 5.7's Redis transport, applied once on import of workers.celery_app.

1. **A lost broker connection killed the worker.** When the Redis broker goes away, celery's
   consumer first `collect()`s the broken connection (which detaches its transport:
   `transport.client = None`) and then `close()`s it. The close closes the default channel a
   second time, whose requeue of unacknowledged messages asks the detached transport for
   connection parameters and raises AttributeError ("'NoneType' object has no attribute
   'hostname'"). That is not one of the connection errors celery ignores while closing, so it
   ended the worker ("Unrecoverable error") instead of letting it reconnect. The patch turns that
   AttributeError into the connection error it is: the close then fails quietly as celery
   expects, the worker reconnects, and the messages it had not acknowledged are redelivered by
   the visibility timeout (or resumed by the recovery sweep) as after any crash. Checked by
   tests/test_redis_outage.py; remove once kombu fixes it.

2. **One host's clock decided when everyone's messages were redelivered.** kombu stamps each
   delivered, unacknowledged message with the consumer's `time.time()` (QoS.append) and every
   worker restores the messages stamped before its own `time.time() - visibility_timeout`
   (QoS.restore_visible). A worker whose clock runs 60 s ahead therefore redelivered every
   message the others were running as soon as it was 60 s short of the visibility timeout (all of
   them, with a short timeout), and one 60 s behind had its own messages taken from it. Both
   stamps are Redis `TIME` now: the stamp is written by the script that records the delivery
   (3.), and the restore compares with Redis's clock, so no host's clock moves anyone's messages.

3. **Four client commands per delivery and per acknowledgement.** kombu records a delivered
   message with MULTI, ZADD (the unacked index), HSET (the message, for redelivery), EXEC, and
   forgets it on ack with MULTI, ZREM, HDEL, EXEC (issue 16.4: Redis CPU follows the commands a
   client sends). One small script each does the same atomically (`workers/lua/unacked_*.lua`):
   per message 8 client commands become 2 EVALSHA, 10 commands (inside scripts counted) 7.
   Redelivery is unchanged: the same keys, the same stamps, kombu's own restore reads them.
   The delivery's script also nudges the feeder (`wake_feeder_on_delivery`): the message left
   the broker's list, so there is room for the next one; the worker's own RPUSH when the task
   started was one more round trip per image.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from shared.lua_scripts import LuaScript, source

_original_connparams = kombu_redis.Channel._connparams


# Unbound: each call runs on whichever client kombu hands out.
_APPEND = LuaScript(None, source("workers.lua", "unacked_append"))  # ZADD at Redis TIME, HSET
_REMOVE = LuaScript(None, source("workers.lua", "unacked_remove"))  # ZREM + HDEL


class _FeederWake:
    """The list a delivery nudges (the feeder's wake list, shared.scheduler), once a worker set it."""

    key: str | None = None
    keep: int = 8


def wake_feeder_on_delivery(key: str, keep: int) -> None:
    """From now on every message delivered in this process nudges `key` (capped at `keep`
    tokens), in the script that records the delivery."""
    _FeederWake.key, _FeederWake.keep = key, keep


def _connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
    if getattr(self.connection, "client", None) is None:
        raise redis.ConnectionError("the broker connection was already closed")
    return _original_connparams(self, asynchronous=asynchronous)


def _append(self: Any, message: Any, delivery_tag: Any) -> None:
    """QoS.append: the message kept and stamped with Redis TIME (and the feeder nudged), in one
    script call."""
    delivery = message.delivery_info
    exchange, routing_key = delivery["exchange"], delivery["routing_key"]
    keys = [self.unacked_index_key, self.unacked_key]
    args: list[Any] = [delivery_tag, dumps([message._raw, exchange, routing_key])]
    if _FeederWake.key is not None:
        keys.append(_FeederWake.key)
        args.append(_FeederWake.keep)
    with self.channel.conn_or_acquire() as client:
        _APPEND(keys=keys, args=args, client=client)
        kombu_redis.virtual.QoS.append(self, message, delivery_tag)


def _forget(self: Any, delivery_tag: Any) -> None:
    with self.channel.conn_or_acquire() as client:
        _REMOVE(keys=[self.unacked_index_key, self.unacked_key], args=[delivery_tag], client=client)


def _ack(self: Any, delivery_tag: Any) -> None:
    """QoS.ack (kombu 5.7) with the unacked index and message removed in one script call."""
    _forget(self, delivery_tag)
    kombu_redis.virtual.QoS.ack(self, delivery_tag)


def _reject(self: Any, delivery_tag: Any, requeue: bool = False) -> None:
    """QoS.reject (kombu 5.7): a requeue is kombu's own restore; a drop is one script call."""
    if requeue:
        self.restore_by_tag(delivery_tag, leftmost=True)
    else:
        _forget(self, delivery_tag)
    kombu_redis.virtual.QoS.ack(self, delivery_tag)


def _restore_visible(self: Any, start: int = 0, num: int = 10, interval: int = 10) -> None:
    """QoS.restore_visible (kombu 5.7) with its ceiling on Redis's clock instead of this host's."""
    self._vrestore_count += 1
    if (self._vrestore_count - 1) % (interval or 1):
        return
    with self.channel.conn_or_acquire() as client:
        sec, usec = client.time()
        ceil = sec + usec / 1e6 - self.visibility_timeout
        try:
            with kombu_redis.Mutex(client, self.unacked_mutex_key, self.unacked_mutex_expire):
                visible = client.zrange(
                    self.unacked_index_key,
                    ceil,
                    0,
                    desc=True,
                    byscore=True,
                    offset=num and start,
                    num=num,
                    withscores=True,
                )
                for tag, _score in visible or []:
                    self.restore_by_tag(tag, client)
        except kombu_redis.MutexHeld:
            pass


def apply() -> None:
    # Replacing kombu's methods is this module's job: mypy's method-assign says only that.
    if kombu_redis.Channel._connparams is not _connparams:
        kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]
    if kombu_redis.QoS.append is not _append:
        kombu_redis.QoS.append = _append  # type: ignore[method-assign]
    if kombu_redis.QoS.ack is not _ack:
        kombu_redis.QoS.ack = _ack  # type: ignore[method-assign]
    if kombu_redis.QoS.reject is not _reject:
        kombu_redis.QoS.reject = _reject  # type: ignore[method-assign]
    if kombu_redis.QoS.restore_visible is not _restore_visible:
        kombu_redis.QoS.restore_visible = _restore_visible  # type: ignore[method-assign]
