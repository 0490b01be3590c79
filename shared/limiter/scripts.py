"""The limiter's Lua scripts: each .lua file beside this module plus the shared prelude, registered once."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import redis

_LUA_DIR = Path(__file__).parent  # .lua files sit beside this module (package data)
NAMES = (
    "abandon",
    "acquire",
    "adopt",
    "drop",
    "heartbeat",
    "token",
    "confirm",
    "pause",
    "set_limits",
    "set_prediction",
    "settle",
    "status",
)


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """The full text sent to Redis: prelude (common.lua) + the script's own body."""
    prelude = (_LUA_DIR / "common.lua").read_text()
    return prelude + "\n" + (_LUA_DIR / f"{name}.lua").read_text()


def register_all(client: redis.Redis) -> dict[str, "redis.commands.core.Script"]:
    """Script objects bound to `client`; EVALSHA with a transparent reload after a restart."""
    return {name: client.register_script(source(name)) for name in NAMES}
