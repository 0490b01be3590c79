"""What every part of the Ledger works on: the Redis client, the keys, the registered scripts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis

from shared import lua_scripts
from shared.keys import Keys

# One script per state change in shared/lua/, each sent after the prelude ledger_common.lua.
_SCRIPTS = (
    "ledger_create",
    "ledger_stage",
    "ledger_transition",
    "ledger_cancel",
    "ledger_reset",
    "ledger_enqueued",
)


class LedgerBase:
    """The state the Ledger's parts share (shared.ledger.ledger.Ledger is their sum)."""

    def __init__(
        self, redis_client: redis.Redis, keys: Keys, *, store_environ: Mapping[str, str] | None = None
    ):
        self.redis = redis_client
        self.keys = keys
        self.store_environ = store_environ  # for write_manifest (Settings.store_environ())
        self._scripts = lua_scripts.register(redis_client, "shared.lua", _SCRIPTS, prelude="ledger_common")
        self._options: dict[str, tuple[float, dict[str, Any]]] = {}  # batch id -> (read at, options)

    def _total(self, batch_id: str) -> int:
        """How many items the batch has (0: no such batch)."""
        return int(self.redis.hget(self.keys.batch(batch_id), "total") or 0)

    def _read_items(self, batch_id: str, indexes: Iterable[int], *fields: str) -> list[Any]:
        """Each item's hash (HGETALL), or these `fields` of it (HMGET), in one pipelined round
        trip; a missing item answers {} (or Nones)."""
        pipe = self.redis.pipeline(transaction=False)
        for index in indexes:
            if fields:
                pipe.hmget(self.keys.item(batch_id, index), *fields)
            else:
                pipe.hgetall(self.keys.item(batch_id, index))
        return pipe.execute()
