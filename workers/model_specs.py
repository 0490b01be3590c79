"""The registry as a worker needs it: the curated models, and models known by their published
schema, taken from the fleet's Redis cache (filled at submit) or, once it expired, read again
from Replicate on the read budget (shared.models.schema_store).

    registry = ctx.models.registry_for(request.models)   # every model of the item's route
    spec = registry.get(model)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from shared.errors import PermanentModelError
from shared.models import ModelRegistry, SchemaError
from shared.models.schema_store import SchemaStore

# Seconds a process reuses the schemas it took from Redis before it looks there again.
LOCAL_SECONDS = 60.0


class ModelSpecs:
    """Parameters:
    registry: the curated registry (built-in file + FLEET_MODELS_FILE).
    store: a shared.models.schema_store.SchemaStore (None: only curated models).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        store: SchemaStore | None = None,
        *,
        local_seconds: float = LOCAL_SECONDS,
    ):
        self.base = registry
        self.store = store
        self.local_seconds = local_seconds
        self._known: dict[frozenset[str], tuple[ModelRegistry, float]] = {}
        self._lock = threading.Lock()

    def registry_for(self, models: Iterable[str]) -> ModelRegistry:
        """A registry knowing every model of `models`. A model whose schema cannot be had any more
        (gone from Replicate, output no longer files) fails for good: PermanentModelError, which
        moves the item along its route."""
        refs = frozenset(ref for name in models if (ref := self.base.schema_ref(name)))
        if not refs or self.store is None:
            return self.base
        now = time.monotonic()
        with self._lock:
            found = self._known.get(refs)
        if found is not None and now - found[1] < self.local_seconds:
            return found[0]
        try:
            schemas = {ref: self.store.get(ref) for ref in sorted(refs)}  # TransientError etc. pass through
        except SchemaError as exc:
            raise PermanentModelError(str(exc)) from None
        registry = self.base.with_schemas(schemas)
        failed = [f"{ref}: {why}" for ref, why in registry.schema_failures.items() if ref in refs]
        if failed:
            raise PermanentModelError("; ".join(failed))
        with self._lock:
            self._known[refs] = (registry, now)
        return registry
