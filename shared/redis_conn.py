"""Redis connections from settings (rediss:// and passwords come in the URL)."""
from __future__ import annotations

import redis

from shared.errors import RedisUnavailableError
from shared.settings import Settings


def connect(settings: Settings, **kwargs) -> redis.Redis:
    """A client with str responses; raises RedisUnavailableError if the server does not answer."""
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
