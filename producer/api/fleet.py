"""The fleet at a glance: the recent batches, what waits in the queue, the workers and their
wait modes (`producer list`, `producer info`)."""

from __future__ import annotations

from producer.api.connections import fleet_redis, limiter_status_or_none, open_ledger, settings_or_load
from producer.progress import in_flight_by_batch
from shared.keys import Keys
from shared.settings import Settings


def list_batches(settings: Settings | None = None, limit: int = 20) -> list:
    """The most recent batches (ledger BatchInfo objects), newest first."""
    return list(open_ledger(settings_or_load(settings)).list_batches(limit=limit))


def queue_depths(settings: Settings | None = None):
    """What waits to run, fleet-wide (shared.scheduler.QueueDepths): per priority (high, normal,
    low) the sends held and due (`ready`), the batches they belong to (`batches`) and the
    messages in the broker's queue (`broker`); the delayed sends (`scheduled`: backoff,
    retry_after, rechecks) and when the next one is due. One script call."""
    from shared.scheduler import Scheduler

    settings = settings_or_load(settings)
    with fleet_redis(settings) as client:
        return Scheduler(client, Keys(settings.key_prefix)).depths(settings.queue)


def fleet_info(settings: Settings | None = None, *, batches: int = 200):
    """The fleet on one screen (producer.info.FleetInfo, like `rq info`): queue depth per
    priority, the workers consuming the queue (host, pid, threads, busy), slots in use and
    waiting, the windows and a pause, and the unfinished batches among the latest `batches`
    with their progress. `.to_dict()` is what `producer info --json` prints."""

    from producer.info import FleetInfo, active_batches, workers_of
    from workers.dispatch import producer_app

    settings = settings_or_load(settings)
    limits = limiter_status_or_none(settings)
    at_replicate = in_flight_by_batch(limits.holders if limits else [])
    return FleetInfo(
        queue=settings.queue,
        depths=queue_depths(settings),
        workers=workers_of(producer_app(settings), settings.queue),
        limits=limits,
        batches=active_batches(list_batches(settings, limit=batches)),
        at_replicate=dict(at_replicate),
        wait_modes=worker_modes(settings),
    )


def worker_modes(settings: Settings | None = None) -> list:
    """The wait mode of each live worker process (shared.presence.WorkerMode), as they publish it."""
    from shared.presence import live_modes

    settings = settings_or_load(settings)
    with fleet_redis(settings) as client:
        return live_modes(client, Keys(settings.key_prefix))
