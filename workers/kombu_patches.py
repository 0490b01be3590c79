"""A workaround for celery 5.7 / kombu 5.7 killing the worker after a lost broker connection.

When the Redis broker goes away, celery's consumer first `collect()`s the broken connection (which
detaches its transport: `transport.client = None`) and then `close()`s it. The close closes the
default channel a second time, whose requeue of unacknowledged messages asks the detached
transport for connection parameters and raises AttributeError ("'NoneType' object has no
attribute 'hostname'"). That is not one of the connection errors celery ignores while closing,
so it ends the worker ("Unrecoverable error") instead of letting it reconnect.

The patch turns that AttributeError into the connection error it is: the close then fails
quietly as celery expects, the worker reconnects, and the messages it had not acknowledged are
redelivered by the visibility timeout (or resumed by the recovery sweep) as after any crash.
Applied once, on import of workers.celery_app; checked by tests/test_redis_outage.py.
"""
from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_original_connparams = kombu_redis.Channel._connparams


def _connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
    if getattr(self.connection, "client", None) is None:
        raise redis.ConnectionError("the broker connection was already closed")
    return _original_connparams(self, asynchronous=asynchronous)


def apply() -> None:
    if kombu_redis.Channel._connparams is not _connparams:
        kombu_redis.Channel._connparams = _connparams
