"""The fleet's pieces the API opens from settings: the ledger, the model registry, the budget and
the limiter (each imported when first needed, so `import producer` stays light)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from shared.errors import FleetError
from shared.keys import Keys
from shared.redis_conn import connect
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.models import ModelRegistry


def settings_or_load(settings: Settings | None) -> Settings:
    """The given settings, else the environment's and .env's (Settings.load())."""
    return settings if settings is not None else Settings.load()


def open_ledger(settings: Settings, client=None):
    from shared.ledger import Ledger

    return Ledger(
        client if client is not None else connect(settings),
        Keys(settings.key_prefix),
        store_environ=settings.store_environ(),
    )


def registry_or_load(
    registry: ModelRegistry | None = None, settings: Settings | None = None
) -> ModelRegistry:
    if registry is not None:
        return registry
    from shared.models import load_registry

    # The same registry the workers load (FLEET_MODELS_FILE layered over the built-in models).
    return load_registry(extra=settings.models_file if settings is not None else None)


def open_budget(settings: Settings, client=None):
    from shared.budget import Budget

    return Budget.from_settings(client if client is not None else open_ledger(settings).redis, settings)


def open_limiter(settings: Settings, client=None):
    from shared.limiter import Limiter

    return Limiter.from_settings(
        client if client is not None else connect(settings), Keys(settings.key_prefix), settings
    )


def limiter_or_none(settings: Settings):
    """Progress shows slots when the limiter is available; waiting must not depend on it."""
    try:
        return open_limiter(settings)
    except FleetError:
        return None


def limiter_status_or_none(settings: Settings):
    limiter = limiter_or_none(settings)
    if limiter is None:
        return None
    try:
        return safe_status(limiter)
    finally:
        close_quietly(limiter)


def safe_status(limiter):
    if limiter is None:
        return None
    try:
        return limiter.status()
    except Exception:  # noqa: BLE001 - slots are decoration on the progress line
        return None


def close_quietly(limiter) -> None:
    try:
        limiter.close()
    except Exception:  # noqa: BLE001
        pass


@contextmanager
def fleet_redis(settings: Settings) -> Iterator[Any]:
    """A Redis client of the fleet for a few calls, closed after them."""
    client = connect(settings)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def fleet_limiter(settings: Settings) -> Iterator[Any]:
    """The limiter for a few calls, closed after them (quietly: what they returned stands)."""
    limiter = open_limiter(settings)
    try:
        yield limiter
    finally:
        close_quietly(limiter)
