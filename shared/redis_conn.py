"""Redis connections from settings: `redis://`, `rediss://` (TLS), `unix://`, and Redis Sentinel.

Passwords come in the URL. Sentinel uses kombu's URL form, so that the Celery broker and every
other client of the fleet read the same REDIS_URL:

    sentinel://:PASSWORD@sentinel1:26379/0;sentinel://sentinel2:26379;sentinel://sentinel3:26379

(the password and database of the first entry are the primary's), with the primary's name in
FLEET_REDIS_SENTINEL_MASTER and, if the Sentinels themselves want one, their password in
FLEET_REDIS_SENTINEL_PASSWORD. Clients ask the Sentinels for the current primary on every
(re)connection, so after a failover they follow it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from shared.common import redact_url
from shared.errors import ConfigError, RedisUnavailableError
from shared.settings import Settings

# A restart (or a failover) makes Redis refuse connections, then answer LOADING while it reads its
# append-only file. Workers ride that out: every command retries for about
# settings.redis_ride_out seconds (20 by default) before it fails.
RESTART_BACKOFF = ExponentialWithJitterBackoff(base=0.1, cap=2.0)
SECONDS_PER_RETRY = 1.35  # the backoff's mean wait once capped, plus a connect attempt


def ride_out_retry(seconds: float) -> Retry:
    """Retries of one command that together last about `seconds`."""
    return Retry(RESTART_BACKOFF, max(1, round(seconds / SECONDS_PER_RETRY)))


SENTINEL_PORT = 26379


def connect(settings: Settings, *, ride_out_restarts: bool = False, **kwargs: Any) -> redis.Redis:
    """A client with str responses; raises RedisUnavailableError if the server does not answer.

    ride_out_restarts: retry each command through a Redis restart (workers, whose tasks would
    otherwise fail half-way); without it, errors come after redis-py's few quick retries, as a
    command-line user expects."""
    if ride_out_restarts:
        kwargs.setdefault("retry", ride_out_retry(settings.redis_ride_out))
        kwargs.setdefault(
            "retry_on_error", [redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError]
        )
    kwargs.setdefault("decode_responses", True)
    kwargs.setdefault("socket_connect_timeout", 5)
    kwargs.setdefault("health_check_interval", 30)
    if is_sentinel_url(settings.redis_url):
        client = _sentinel_client(settings, kwargs)
    else:
        client = redis.Redis.from_url(settings.redis_url, **kwargs)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailableError(f"cannot reach Redis at {redact_url(settings.redis_url)}: {exc}") from exc
    return client


# The fleet's clients decode replies (decode_responses=True in connect), while redis-py types a
# reply `bytes | str` whatever the client. These say so where a reply is read, at no cost.
def text_map(reply: Mapping[Any, Any]) -> dict[str, str]:
    """A hash's reply (HGETALL) as the str mapping a decoding client returns."""
    return cast(dict[str, str], reply)


def texts(reply: Sequence[Any]) -> list[str]:
    """A list reply (ZRANGE, LPOP n, ...) as the str list a decoding client returns."""
    return cast(list[str], reply)


def as_text(value: Any) -> str:
    """One reply value as str, whether the client decodes replies (the fleet's do) or not (a
    script's client, kombu's): bytes decoded, anything else through str()."""
    return value.decode() if isinstance(value, bytes) else str(value)


def is_sentinel_url(url: str) -> bool:
    return url.startswith("sentinel://")


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    username: str | None
    password: str | None
    db: int


def parse_sentinel_url(url: str) -> SentinelTarget:
    """kombu's form: `sentinel://[[USER]:PASSWORD@]HOST[:PORT][/DB]` entries joined by `;`."""
    sentinels: list[tuple[str, int]] = []
    first = None
    for entry in filter(None, (part.strip() for part in url.split(";"))):
        parts = urlsplit(entry)
        if parts.scheme != "sentinel" or not parts.hostname:
            raise ConfigError(f"REDIS_URL: {redact_url(entry)!r} is not sentinel://HOST[:PORT]")
        sentinels.append((parts.hostname, parts.port or SENTINEL_PORT))
        first = first or parts
    if first is None:
        raise ConfigError("REDIS_URL names no Sentinel")
    path = first.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError(f"REDIS_URL: database {path!r} is not a number")
    return SentinelTarget(
        sentinels,
        unquote(first.username) if first.username else None,
        unquote(first.password) if first.password else None,
        int(path or 0),
    )


def _sentinel_client(settings: Settings, kwargs: dict[str, Any]) -> redis.Redis:
    target = parse_sentinel_url(settings.redis_url)
    sentinel_kwargs = {"socket_connect_timeout": kwargs["socket_connect_timeout"], "socket_timeout": 5}
    if settings.redis_sentinel_password:
        sentinel_kwargs["password"] = settings.redis_sentinel_password
    manager = redis.sentinel.Sentinel(target.sentinels, sentinel_kwargs=sentinel_kwargs)
    return manager.master_for(
        settings.redis_sentinel_master,
        username=target.username,
        password=target.password,
        db=target.db,
        **kwargs,
    )


def celery_transport_options(settings: Settings) -> dict[str, Any]:
    """What kombu needs besides the URL to reach the same Redis (Sentinel: the primary's name)."""
    if not is_sentinel_url(settings.redis_url):
        return {}
    options: dict[str, Any] = {"master_name": settings.redis_sentinel_master}
    if settings.redis_sentinel_password:
        options["sentinel_kwargs"] = {"password": settings.redis_sentinel_password}
    return options
