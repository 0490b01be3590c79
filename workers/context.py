"""Everything a worker process shares between its task threads, built once on first use.

One Redis client, one ledger, one limiter (with its one keeper thread), one claim keeper, one
Replicate client, one downloader, the model registry. Built lazily from the app's settings, so
importing the package reads nothing and a forked child builds its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import redis

from shared.budget import Budget
from shared.keys import Keys
from shared.ledger import Ledger
from shared.limiter import Limiter
from shared.metrics.batched import BatchedCounters
from shared.metrics.recorder import MetricsRecorder
from shared.models import ModelRegistry, load_registry
from shared.models.schema_store import SchemaStore
from shared.redis_conn import connect
from shared.scheduler import Scheduler
from shared.settings import Settings
from workers.attempts import CreationRecords
from workers.claims import ClaimKeeper
from workers.completions import CompletionBoard
from workers.download import Downloader
from workers.held_creates import HeldCreates
from workers.latencies import ModelLatencies
from workers.model_specs import ModelSpecs
from workers.replicate_calls import ReplicateCalls
from workers.stores import BatchStores

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    redis: redis.Redis
    keys: Keys
    ledger: Ledger
    limiter: Limiter
    claims: ClaimKeeper
    creations: CreationRecords
    calls: ReplicateCalls
    downloader: Downloader
    registry: ModelRegistry  # the curated models
    models: ModelSpecs  # curated and schema-described models (registry_for an item's route)
    metrics: MetricsRecorder  # added up in the process, written every few seconds (BatchedCounters)
    completions: CompletionBoard | None  # set when webhooks are configured (FLEET_WEBHOOK_URL)
    scheduler: Scheduler = field(init=False)  # follow-ups are held here until due (shared.scheduler)
    budget: Budget = field(init=False)  # spending limits: reservations settled, held items
    cancel_watch: CancelWatch = field(init=False)
    held_creates: HeldCreates = field(init=False)  # sync creates held open, watched for a cancel
    stores: BatchStores = field(init=False)  # each batch's output location (a folder or a bucket)
    latencies: ModelLatencies = field(init=False)  # each model's usual duration, shared by the fleet
    pid: int = field(default_factory=os.getpid)

    def __post_init__(self) -> None:
        self.cancel_watch = CancelWatch(self.ledger)
        self.held_creates = HeldCreates(self.cancel_watch)
        self.stores = BatchStores(self.ledger, self.settings)
        self.scheduler = Scheduler(self.redis, self.keys)
        self.budget = Budget.from_settings(self.redis, self.settings)
        self.latencies = ModelLatencies(self.redis, self.keys.model_latency)

    @classmethod
    def build(cls, settings: Settings) -> WorkerContext:
        client = connect(settings, max_connections=512, ride_out_restarts=True)
        keys = Keys(settings.key_prefix)
        creations = CreationRecords(client, keys)
        creations.preload()
        limiter = Limiter.from_settings(client, keys, settings)
        calls = ReplicateCalls(settings)
        registry = load_registry(extra=settings.models_file)
        store = SchemaStore(
            client,
            keys,
            read=calls.read_schema,
            ttl=settings.schema_ttl,
            take_read_token=lambda: limiter.take_read_token(timeout=60.0),
        )
        return cls(
            settings=settings,
            redis=client,
            keys=keys,
            ledger=Ledger(client, keys, store_environ=settings.store_environ()),
            limiter=limiter,
            claims=ClaimKeeper(client, ttl=claim_ttl(settings)),
            creations=creations,
            calls=calls,
            downloader=Downloader.from_settings(settings),
            registry=registry,
            models=ModelSpecs(registry, store),
            metrics=MetricsRecorder(BatchedCounters(client), keys),
            completions=CompletionBoard(client, keys, watch_ttl=settings.prediction_timeout + 600)
            if settings.webhook_url
            else None,
        )

    def flush_metrics(self) -> None:
        """Write the counters this process added up since their last write (worker shutdown)."""
        if isinstance(self.metrics.client, BatchedCounters):
            self.metrics.client.close()

    def close(self) -> None:
        for closer in (
            self.flush_metrics,
            self.limiter.close,
            self.calls.close,
            self.downloader.close,
            self.completions.close if self.completions is not None else None,
        ):
            try:
                if closer:
                    closer()
            except Exception as exc:  # noqa: BLE001
                log.debug("close failed: %s", exc)


def claim_ttl(settings: Settings) -> float:
    """A dead run's claim must expire well before anyone gives up on the item; the lease
    length is the natural unit (a dead holder loses its slot after the same time)."""
    return max(3.0, float(settings.lease_seconds))


class CancelWatch:
    """`is_canceled(batch)` for many waiting threads, at most one Redis read per batch per
    `interval` in this process."""

    def __init__(self, ledger: Ledger, interval: float = 1.0):
        self.ledger = ledger
        self.interval = interval
        self._cache: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def is_canceled(self, batch_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(batch_id)
            # Only "not canceled" is cached: `producer retry` can lift a cancel, so a True is
            # always read afresh (cheap: it stops the waiter) before anything is canceled on it.
            if cached is not None and not cached[1] and now - cached[0] < self.interval:
                return cached[1]
        try:
            value = self.ledger.is_canceled(batch_id)
        except redis.RedisError:
            return False if cached is None else cached[1]
        with self._lock:
            self._cache[batch_id] = (now, value)
            if len(self._cache) > 1000:
                self._cache.clear()
        return value


# Set once this process's worker begins a warm shutdown (the worker_shutting_down signal): tasks
# still waiting for a slot or a creation token stop waiting and hand their attempt back.
_shutdown = threading.Event()


def request_shutdown() -> None:
    _shutdown.set()


def shutting_down() -> bool:
    return _shutdown.is_set()


_context: WorkerContext | None = None
_context_lock = threading.Lock()


def current_context() -> WorkerContext | None:
    """This process's context if it has been built (nothing is built here)."""
    ctx = _context
    return ctx if ctx is not None and ctx.pid == os.getpid() else None


def get_context(settings: Settings) -> WorkerContext:
    global _context
    ctx = _context
    if ctx is None or ctx.pid != os.getpid():
        with _context_lock:
            ctx = _context
            if ctx is None or ctx.pid != os.getpid():
                ctx = _context = WorkerContext.build(settings)
    return ctx
