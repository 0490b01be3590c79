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


def _settings(settings: Settings | None) -> Settings:
    """The given settings, else the environment's and .env's (Settings.load())."""
    return settings if settings is not None else Settings.load()


def _ledger(settings: Settings, client=None):
    from shared.ledger import Ledger

    return Ledger(
        client if client is not None else connect(settings),
        Keys(settings.key_prefix),
        store_environ=settings.store_environ(),
    )


def _registry(registry: ModelRegistry | None = None, settings: Settings | None = None) -> ModelRegistry:
    if registry is not None:
        return registry
    from shared.models import load_registry

    # The same registry the workers load (FLEET_MODELS_FILE layered over the built-in models).
    return load_registry(extra=settings.models_file if settings is not None else None)


def _budget(settings: Settings, client=None):
    from shared.budget import Budget

    return Budget.from_settings(client if client is not None else _ledger(settings).redis, settings)


def _limiter(settings: Settings, client=None):
    from shared.limiter import Limiter

    return Limiter.from_settings(
        client if client is not None else connect(settings), Keys(settings.key_prefix), settings
    )


def _limiter_or_none(settings: Settings):
    """Progress shows slots when the limiter is available; waiting must not depend on it."""
    try:
        return _limiter(settings)
    except FleetError:
        return None


def _limiter_status_or_none(settings: Settings):
    limiter = _limiter_or_none(settings)
    if limiter is None:
        return None
    try:
        return _safe_status(limiter)
    finally:
        _close_quietly(limiter)


def _safe_status(limiter):
    if limiter is None:
        return None
    try:
        return limiter.status()
    except Exception:  # noqa: BLE001 - slots are decoration on the progress line
        return None


def _close_quietly(limiter) -> None:
    try:
        limiter.close()
    except Exception:  # noqa: BLE001
        pass


@contextmanager
def _redis(settings: Settings) -> Iterator[Any]:
    """A Redis client of the fleet for a few calls, closed after them."""
    client = connect(settings)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def _open_limiter(settings: Settings) -> Iterator[Any]:
    """The limiter for a few calls, closed after them (quietly: what they returned stands)."""
    limiter = _limiter(settings)
    try:
        yield limiter
    finally:
        _close_quietly(limiter)
