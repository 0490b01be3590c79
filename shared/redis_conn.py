"""Redis connections from settings (rediss:// and passwords come in the URL)."""
from __future__ import annotations

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from shared.errors import RedisUnavailableError
from shared.settings import Settings

# A restart (or a failover) makes Redis refuse connections, then answer LOADING while it reads its
# append-only file. Workers ride that out: every command retries for about 20 s before it fails.
RESTART_RETRIES = 15
RESTART_BACKOFF = ExponentialWithJitterBackoff(base=0.1, cap=2.0)


def connect(settings: Settings, *, ride_out_restarts: bool = False, **kwargs) -> redis.Redis:
    """A client with str responses; raises RedisUnavailableError if the server does not answer.

    ride_out_restarts: retry each command through a Redis restart (workers, whose tasks would
    otherwise fail half-way); without it, errors come after redis-py's few quick retries, as a
    command-line user expects."""
    if ride_out_restarts:
        kwargs.setdefault("retry", Retry(RESTART_BACKOFF, RESTART_RETRIES))
        kwargs.setdefault("retry_on_error", [redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError])
    kwargs.setdefault("decode_responses", True)
    kwargs.setdefault("socket_connect_timeout", 5)
    kwargs.setdefault("health_check_interval", 30)
    client = redis.Redis.from_url(settings.redis_url, **kwargs)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailableError(f"cannot reach Redis at {redact_url(settings.redis_url)}: {exc}") from exc
    return client


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
