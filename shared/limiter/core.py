"""What every part of the Limiter stands on: its parameters, the script calls, the process agent.

`LimiterCore` keeps the constructor's values and the config every script call carries; `_call`
runs one script with that config and the epoch this process saw last, and remembers the epoch its
reply brings back. The slots (slots.py), the rates (rates.py) and visibility and control
(control.py) build on it; `Limiter` (limiter.py) is the three together.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import redis

from shared import lua_scripts
from shared.budget import TOKEN_INSERT, budget_keys
from shared.errors import LimiterError, RedisUnavailableError
from shared.keys import Keys
from shared.limiter.agent import ProcessAgent
from shared.limiter.bounds import checked_limits
from shared.limiter.lease import Lease
from shared.limiter.types import Limits
from shared.redis_conn import as_text
from shared.wakeup import blocking_client

log = logging.getLogger(__name__)

# One file per operation in lua/, each sent after the prelude common.lua.
SCRIPT_NAMES = (
    "abandon",
    "acquire",
    "adopt",
    "confirm",
    "drop",
    "drop_settle",
    "give_back",
    "heartbeat",
    "pause",
    "set_limits",
    "set_prediction",
    "settle",
    "status",
    "token",
)
# The order is the scripts' KEYS order (common.lua).
KEY_NAMES = (
    "holders",
    "info",
    "fence",
    "limits",
    "waiters",
    "waiter_exp",
    "ticket",
    "epoch",
    "creates",
    "reads",
    "pause",
    "bypred",
    "byattempt",
    "woken",
    "rates",
    "recovery",
)
STOP_POLL_SECONDS = 0.25  # how often a waiting call asks should_stop()
# What is sent in front of token.lua after the prelude: the budget's functions, then the tokens'.
TOKEN_INSERTS = (TOKEN_INSERT, ("shared.limiter.lua", "token_common"))
# What another owner's script that takes a creation token in its own call (Rates.create_token_with)
# is sent after: the prelude, then TOKEN_INSERTS; its own functions may follow.
TOKEN_PARTS = (("shared.limiter.lua", "common"), *TOKEN_INSERTS)


class LimiterCore:
    """The state every part of a Limiter shares (the parameters: see `Limiter`)."""

    def __init__(
        self,
        redis_client: redis.Redis,
        keys: Keys,
        limits: Limits,
        *,
        lease_seconds: float,
        orphan_seconds: float,
        rate_margin: float = 0.25,
        waiter_ttl: float = 5.0,
        recheck_interval: float = 15.0,
    ):
        if lease_seconds <= 0 or orphan_seconds <= 0:
            raise ValueError("lease_seconds and orphan_seconds must be > 0")
        if rate_margin < 0 or waiter_ttl <= 0 or recheck_interval <= 0:
            raise ValueError("rate_margin must be >= 0, waiter_ttl and recheck_interval > 0")
        self.redis = redis_client
        self.keys = keys
        self.default_limits = limits
        self.lease_seconds = float(lease_seconds)
        self.orphan_seconds = float(orphan_seconds)
        self.rate_margin = float(rate_margin)
        self.waiter_ttl = float(waiter_ttl)
        self.recheck_interval = float(recheck_interval)
        self.wake_prefix = keys.limiter_key("wake:")
        # As the scripts take them (ARGV), computed once: the config and every call agree.
        self._lease_ms = int(self.lease_seconds * 1000)
        self._margin_ms = int(self.rate_margin * 1000)
        # The budget's keys go last (budget_common.lua finds them there): token.lua reserves an
        # attempt's price in the same round trip as its creation token.
        self._key_list = [keys.limiter_key(name) for name in KEY_NAMES] + budget_keys(keys)
        self._own_keys = len(KEY_NAMES)
        self._config = json.dumps(
            {
                **checked_limits(limits),
                "wake_prefix": self.wake_prefix,
                "waiter_ttl_ms": int(self.waiter_ttl * 1000),
                "orphan_ms": int(max(self.orphan_seconds, 2 * self.lease_seconds) * 1000),
                "lease_ms": self._lease_ms,
                "rate_margin_ms": self._margin_ms,
            }
        )
        self._scripts = lua_scripts.register(
            redis_client,
            "shared.limiter.lua",
            SCRIPT_NAMES,
            prelude="common",
            # The budget's functions: the token reserves an attempt's price, drop_settle settles
            # it as it releases the slot (one round trip each).
            inserts={"token": TOKEN_INSERTS, "drop_settle": (TOKEN_INSERT,)},
        )
        self._listen_client = blocking_client(redis_client)
        self._agent_lock = threading.Lock()
        self._agent: ProcessAgent | None = None
        self._limits_cache: tuple[float, Limits] | None = None
        # The limiter epoch this process saw last (from any reply), sent with every call: a
        # script that finds the state gone while we knew it recognises a loss, not a first start.
        self._known_epoch = ""

    # --- the process agent ----------------------------------------------------------------------
    def held_leases(self) -> list[Lease]:
        """The leases this process holds through this limiter (for shutdown / diagnostics)."""
        agent = self._agent
        return agent.held() if agent is not None and agent.pid == os.getpid() else []

    def close(self) -> None:
        """Stop the background threads (held leases then expire unless released first)."""
        with self._agent_lock:
            agent, self._agent = self._agent, None
        if agent is not None and agent.pid == os.getpid():
            agent.stop()

    def _current_agent(self) -> ProcessAgent:
        agent = self._agent
        if agent is None or agent.pid != os.getpid():  # first use, or we are a forked child
            with self._agent_lock:
                agent = self._agent
                if agent is None or agent.pid != os.getpid():
                    agent = self._agent = ProcessAgent(self)
        return agent

    def _forget_lease(self, lease: Lease) -> None:
        agent = self._agent
        if agent is not None:
            agent.remove_lease(lease.holder_id)

    # --- script calls ---------------------------------------------------------------------------
    def _call(self, name: str, *args: Any) -> Any:
        """Run one script with our config and last seen epoch; remember the epoch it answers
        with and return its result."""
        return self._run(self._scripts[name], self._key_list, args)

    def call_with(self, script: lua_scripts.LuaScript, keys: Sequence[str], *args: Any) -> Any:
        """Run another owner's `script` that does a limiter step in its own round trip: it is sent
        after common.lua (lua_scripts inserts), its KEYS are the limiter's 16 (common.lua finds
        them by position), then `keys` (from KEYS[17]), then the budget's (last, as in every
        limiter script: budget_common.lua finds them there), its ARGV our config, our last seen
        epoch, then `args`, and it replies as every limiter script does (common.lua's reply()).
        Errors as `_call`'s."""
        own = self._own_keys
        return self._run(script, [*self._key_list[:own], *keys, *self._key_list[own:]], args)

    def _run(self, script: lua_scripts.LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            epoch, result = script(keys=keys, args=[self._config, self._known_epoch, *args])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailableError(f"limiter cannot reach Redis: {exc}") from exc
        except redis.RedisError as exc:
            raise LimiterError(f"limiter script {script.source.name} failed: {exc}") from exc
        self._known_epoch = as_text(epoch)
        return result
