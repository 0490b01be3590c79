"""The Celery app and its configuration, built from Settings when first needed (never at import).

Choices (see the design notes in workers/README.md):
- acks_late + reject_on_worker_lost: a worker killed mid-task leaves its message to be redelivered;
  tasks are idempotent per (batch, item, attempt) thanks to the claim and the creation record.
- prefetch multiplier 1: a process reserves at most `concurrency` messages, so the broker's
  visibility timeout (which counts from delivery) is not eaten by messages waiting in a buffer.
- threads pool: a task spends its life waiting on HTTP and on the limiter; threads let one process
  hold many in-flight predictions cheaply (no fork per task, one limiter keeper per process).
- results ignored: the ledger (shared.ledger) is the result store.
- warm shutdown (SIGTERM): tasks still waiting for a slot or a creation token hand their attempt
  back to the queue at once; predictions in flight are waited for. A cold shutdown (SIGQUIT) first
  grants SOFT_SHUTDOWN_SECONDS (below compose's 150 s stop_grace_period) to finish.
- every worker process runs a recovery sweeper thread (workers.recovery); a Redis lock lets one
  sweep per interval fleet-wide. Likewise a feeder thread (workers.feeder): one process at a time
  moves the fleet's held sends (shared.scheduler) into the broker, a few at a time.
- no Celery countdown or ETA anywhere: an ETA is a moment on the sender's clock. Delays are held
  in Redis (shared.scheduler), and kombu's visibility bookkeeping is kept on Redis's clock
  (workers.kombu_patches), so no host's clock moves anyone's work.
- task events on (Flower), published a few at a time: one message per quarter second and worker
  at most, instead of one per event (workers.event_batching).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from shared.redis_conn import celery_transport_options
from shared.settings import Settings
from workers import event_batching, kombu_patches

kombu_patches.apply()
event_batching.apply()

TASK_NAME = "workers.generate_image"
DEFAULT_CONCURRENCY = 32  # threads per worker process; FLEET_WORKER_CONCURRENCY or `-c N` override
SOFT_SHUTDOWN_SECONDS = 120.0  # below docker-compose.yml's stop_grace_period (150 s)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for producers and workers. Never carries the Replicate token."""
    visibility = int(settings.visibility_timeout)
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            **celery_transport_options(settings),  # Sentinel: the primary's name
            "visibility_timeout": visibility,
            # Sweep for abandoned (unacked) messages often enough that a short visibility timeout
            # (tests, small deployments) recovers a killed worker's tasks promptly.
            "unacked_restore_interval": max(1, min(10, visibility // 10)),
            "unacked_restore_throttle": 1 if visibility < 600 else 10,
        },
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": getattr(settings, "worker_concurrency", None) or DEFAULT_CONCURRENCY,
        "worker_soft_shutdown_timeout": SOFT_SHUTDOWN_SECONDS,
        "worker_pool": "threads",
        "task_default_queue": settings.queue,
        "task_create_missing_queues": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


class FleetCelery(Celery):
    """Celery app whose configuration comes from Settings.load() at first use (worker start)."""

    fleet_settings: Settings | None = None

    def on_configure(self) -> None:  # Celery calls it lazily, once
        if self.fleet_settings is None:
            self.fleet_settings = Settings.load()
        self.config_from_object(celery_config(self.fleet_settings))

    def settings(self) -> Settings:
        """The settings this worker runs with (loads the configuration if not done yet)."""
        _ = self.conf.broker_url  # triggers on_configure
        assert self.fleet_settings is not None
        return self.fleet_settings


app = FleetCelery("workers", include=["workers.tasks"])


@signals.celeryd_init.connect
def _refuse_to_start_unless_able(**_: Any) -> None:
    # Only `celery worker` sends celeryd_init (not flower, inspect, or producers), before its
    # banner: a worker that cannot work exits here with one line instead of saying "ready".
    import sys

    from shared.errors import FleetError
    from workers.preflight import check_can_work

    try:
        account = check_can_work(app.settings())
    except FleetError as exc:
        print(f"error: this worker cannot work and does not start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    print(f"preflight: token, Redis, output location and {account}: ok", file=sys.stderr, flush=True)


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    # Our structured, token-redacting handler instead of Celery's; level from FLEET_LOG_LEVEL.
    from shared.logging_setup import celery_setup_logging

    celery_setup_logging(app.settings())


@signals.worker_ready.connect
def _warm_up(sender: Any = None, **_: Any) -> None:
    # Build the process's shared objects now (Redis, limiter, client) so the first task does not
    # pay for them between its creation token and its POST.
    import logging

    from shared.keys import Keys
    from shared.scheduler import WAKE_TOKENS_KEPT, feeder_wake_key
    from workers.context import get_context
    from workers.feeder import start_feeder
    from workers.presence import start_presence
    from workers.recovery import start_sweeper

    # Every message this process takes from the broker tells the feeder there is room (in the
    # script that records the delivery: no round trip of its own).
    settings = app.settings()
    kombu_patches.wake_feeder_on_delivery(feeder_wake_key(Keys(settings.key_prefix)), WAKE_TOKENS_KEPT)
    try:
        ctx = get_context(settings)
    except Exception as exc:  # noqa: BLE001 - the first task will report the real problem
        logging.getLogger("workers").warning("worker context not built: %s", exc)
        return
    start_sweeper(ctx, app)
    start_feeder(ctx, app)
    start_presence(ctx)
    try:
        ctx.calls.warm_up()
    except Exception as exc:  # noqa: BLE001 - the first task will report the real problem
        logging.getLogger("workers").warning("warm-up failed: %s", exc)


@signals.worker_shutdown.connect
def _write_counters(**_: Any) -> None:
    # The tasks have ended: the counters they added up (shared.metrics.batched) are written now,
    # not lost with the process.
    from workers.context import current_context

    ctx = current_context()
    if ctx is not None:
        ctx.flush_metrics()


@signals.worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    # Runs in the signal handler of the main process: only set flags here.
    from workers.context import request_shutdown
    from workers.feeder import stop_feeder
    from workers.presence import stop_presence
    from workers.recovery import stop_sweeper

    request_shutdown()
    stop_sweeper()
    stop_feeder()
    stop_presence()
