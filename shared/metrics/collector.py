"""A prometheus-client Collector that reads the fleet's state from Redis on every scrape: the
limiter's status, the ledger's counters of every active batch, and the counters workers keep in
the metrics hash (see recorder.py). Nothing is cached between scrapes, so any number of exporters
(one per host, or one `producer metrics`) report the same numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from shared.keys import Keys
from shared.metrics.recorder import SEPARATE_OUTCOMES, WAIT_BUCKETS, read_counters
from shared.settings import Settings

log = logging.getLogger(__name__)

NAMESPACE = "fleet"
MAX_BATCHES = 50  # active batches reported per scrape: enough for a fleet, bounded label cardinality


def _status_dict(status: Any) -> dict[str, Any]:
    if hasattr(status, "to_dict"):
        return status.to_dict()
    if dataclasses.is_dataclass(status) and not isinstance(status, type):
        return dataclasses.asdict(status)
    return dict(status)


def _holder_field(holder: Any, name: str, default: Any = None) -> Any:
    if isinstance(holder, dict):
        return holder.get(name, default)
    return getattr(holder, name, default)


class FleetCollector(Collector):
    """Register with a CollectorRegistry; `limiter_factory`/`ledger_factory` default to the
    project's Limiter and Ledger (tests give stand-ins); a part that fails is reported with
    fleet_exporter_part_up 0."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        settings: Settings,
        *,
        limiter_factory: Callable[[], Any] | None = None,
        ledger_factory: Callable[[], Any] | None = None,
    ):
        self.client, self.keys, self.settings = client, keys, settings
        self._limiter_factory = limiter_factory or self._default_limiter
        self._ledger_factory = ledger_factory or self._default_ledger
        self._limiter: Any = None
        self._ledger: Any = None

    def _default_limiter(self) -> Any:
        from shared.limiter import Limiter

        return Limiter.from_settings(self.client, self.keys, self.settings)

    def _default_ledger(self) -> Any:
        from shared.ledger import Ledger

        return Ledger(self.client, self.keys)

    # prometheus-client calls describe() at registration; returning nothing makes it skip the
    # collect() it would otherwise run then (which would need Redis at import/registration time).
    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        parts = GaugeMetricFamily(
            f"{NAMESPACE}_exporter_part_up",
            "1 if this part of the fleet state was read on this scrape, 0 if it failed or is unavailable",
            labels=["part"],
        )
        for part, method in (
            ("limiter", self._limiter_metrics),
            ("ledger", self._ledger_metrics),
            ("queue", self._queue_metrics),
            ("budget", self._budget_metrics),
            ("counters", self._counter_metrics),
        ):
            try:
                families = list(method())
            except Exception as exc:  # one broken part must not empty the whole scrape
                log.warning("metrics: reading %s failed: %s", part, exc)
                parts.add_metric([part], 0)
                continue
            parts.add_metric([part], 1 if families else 0)
            yield from families
        yield parts

    # --- limiter -------------------------------------------------------------------------------
    def _limiter_metrics(self) -> Iterator[Any]:
        if self._limiter is None:
            self._limiter = self._limiter_factory()
        status = _status_dict(self._limiter.status())

        def gauge(name: str, doc: str, value: Any) -> Iterator[Any]:
            if value is not None:
                yield GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, value=float(value))

        yield from gauge(
            "slots_limit", "account-wide concurrency limit (slots)", status.get("concurrency_limit")
        )
        yield from gauge("slots_in_use", "slots held right now, across every host", status.get("in_use"))
        yield from gauge("slots_free", "slots free right now", status.get("free"))
        yield from gauge("slot_waiters", "tasks waiting for a slot", status.get("waiters"))
        yield from gauge("slot_utilisation", "in_use / concurrency_limit", status.get("utilisation"))
        yield from gauge(
            "creations_in_window",
            "creation tokens granted in the current window",
            status.get("creations_in_window"),
        )
        yield from gauge(
            "creations_reserved",
            "creation tokens granted for a moment still ahead",
            status.get("creations_reserved"),
        )
        yield from gauge("create_limit", "creation tokens allowed per window", status.get("create_limit"))
        yield from gauge(
            "reads_in_window", "read tokens granted in the current window", status.get("reads_in_window")
        )
        yield from gauge(
            "reads_reserved", "read tokens granted for a moment still ahead", status.get("reads_reserved")
        )
        yield from gauge("read_limit", "read tokens allowed per window", status.get("read_limit"))
        yield from gauge("rate_window_seconds", "length of the rate window", status.get("rate_window"))
        left = status.get("pause_seconds_left")
        if left is None and status.get("paused_until") is not None:
            left = 0.0  # absolute time only: active-ness unknown without Redis time; report 0
        left = max(0.0, float(left or 0.0))
        yield from gauge(
            "creation_pause_active", "1 while creations are paused after a 429", 1 if left > 0 else 0
        )
        yield from gauge("creation_pause_seconds_left", "seconds until creations resume", left)

        holders = status.get("holders") or []
        by_host = GaugeMetricFamily(f"{NAMESPACE}_slots_held", "slots held, by host", labels=["host"])
        by_model = GaugeMetricFamily(
            f"{NAMESPACE}_slots_held_by_model", "slots held, by model", labels=["model"]
        )
        counts: dict[str, int] = {}
        model_counts: dict[str, int] = {}
        oldest = 0.0
        for holder in holders:
            host = str(_holder_field(holder, "host", "") or "unknown")
            model = str(_holder_field(holder, "model", "") or "unknown")
            counts[host] = counts.get(host, 0) + 1
            model_counts[model] = model_counts.get(model, 0) + 1
            oldest = max(oldest, float(_holder_field(holder, "held_for", 0) or 0))
        for host, count in sorted(counts.items()):
            by_host.add_metric([host], count)
        for model, count in sorted(model_counts.items()):
            by_model.add_metric([model], count)
        yield by_host
        yield by_model
        yield GaugeMetricFamily(
            f"{NAMESPACE}_slot_oldest_hold_seconds",
            "how long the longest-held slot has been held (a stuck holder shows here)",
            value=oldest,
        )

    # --- ledger --------------------------------------------------------------------------------
    def _ledger_metrics(self) -> Iterator[Any]:
        if self._ledger is None:
            self._ledger = self._ledger_factory()
        batches = [
            b for b in self._ledger.list_batches(limit=MAX_BATCHES) if not getattr(b, "finished", False)
        ]
        active = GaugeMetricFamily(
            f"{NAMESPACE}_batches_active", "batches not finished yet", value=len(batches)
        )
        items = GaugeMetricFamily(
            f"{NAMESPACE}_batch_items", "items of an active batch, by status", labels=["batch", "status"]
        )
        totals = GaugeMetricFamily(
            f"{NAMESPACE}_batch_items_total", "items in an active batch", labels=["batch"]
        )
        for batch in batches:
            batch_id = str(batch.id)
            totals.add_metric([batch_id], float(batch.total))
            for status, count in sorted((batch.counts or {}).items()):
                items.add_metric([batch_id, str(status)], float(count))
        yield active
        yield items
        yield totals

    # --- the schedule (shared.scheduler) ------------------------------------------------------------
    def _queue_metrics(self) -> Iterator[Any]:
        from shared.scheduler import Scheduler

        depths = Scheduler(self.client, self.keys).depths(self.settings.queue)
        ready = GaugeMetricFamily(
            f"{NAMESPACE}_queue_ready",
            "sends due and waiting for their turn in the schedule, by batch priority",
            labels=["priority"],
        )
        broker = GaugeMetricFamily(
            f"{NAMESPACE}_queue_broker",
            "messages in the broker's queue (taken by no worker yet), by batch priority",
            labels=["priority"],
        )
        batches = GaugeMetricFamily(
            f"{NAMESPACE}_queue_batches",
            "batches with sends waiting for their turn, by priority",
            labels=["priority"],
        )
        for priority in depths.ready:
            ready.add_metric([priority], float(depths.ready[priority]))
            broker.add_metric([priority], float(depths.broker.get(priority, 0)))
            batches.add_metric([priority], float(depths.batches[priority]))
        yield ready
        yield broker
        yield batches
        yield GaugeMetricFamily(
            f"{NAMESPACE}_queue_scheduled",
            "delayed sends not due yet (backoff, retry_after, rechecks)",
            value=float(depths.scheduled),
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_queue_max_late_seconds",
            "the latest a delayed send joined its "
            "line after its due time (Redis time), since the schedule began",
            value=depths.max_late,
        )

    # --- spending limits (shared.budget) -----------------------------------------------------------
    def _budget_metrics(self) -> Iterator[Any]:
        from shared.budget import Budget
        from shared.budget.money import MICRO

        budget = Budget.from_settings(self.client, self.settings)
        totals = budget.totals()
        status = budget.status()

        def usd_gauge(name: str, doc: str, micro: int | None) -> Iterator[Any]:
            # No limit: +Inf, so that "left < x" alerts never fire and the series never vanishes.
            value = math.inf if micro is None else micro / MICRO
            yield GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, value=value)

        yield from usd_gauge(
            "budget_spent_today_usd",
            "USD spent today (UTC day, Redis time): settled predictions",
            totals["spent_today"],
        )
        yield from usd_gauge(
            "budget_reserved_usd",
            "USD reserved by attempts being created or running (not settled yet), every day",
            totals["reserved"],
        )
        yield from usd_gauge(
            "budget_daily_limit_usd", "the fleet's daily budget in force", status.daily_limit
        )
        yield from usd_gauge("budget_left_today_usd", "USD left of today's daily budget", status.left_today)
        yield GaugeMetricFamily(
            f"{NAMESPACE}_budget_held_items",
            "items waiting for room in a spending limit (batch limit or daily budget)",
            value=float(totals["held"]),
        )
        if self._ledger is not None:
            active = [
                b.id
                for b in self._ledger.list_batches(limit=MAX_BATCHES)
                if not getattr(b, "finished", False)
            ]
            spent = GaugeMetricFamily(
                f"{NAMESPACE}_batch_spent_usd",
                "USD spent and reserved by an active batch",
                labels=["batch", "kind"],
            )
            limits = GaugeMetricFamily(
                f"{NAMESPACE}_batch_limit_usd", "an active batch's limit", labels=["batch"]
            )
            for b in budget.status(active).batches:
                spent.add_metric([b.batch_id, "spent"], b.spent / MICRO)
                spent.add_metric([b.batch_id, "reserved"], b.reserved / MICRO)
                limits.add_metric([b.batch_id], math.inf if b.limit is None else b.limit / MICRO)
            yield spent
            yield limits

    # --- counters from workers -----------------------------------------------------------------
    def _counter_metrics(self) -> Iterator[Any]:
        counters = _separate_non_outcomes(read_counters(self.client, self.keys))
        specs: tuple[tuple[str, str, str, list[str]], ...] = (
            (
                "predictions",
                "predictions_total",
                "attempts ended, by model and outcome (succeeded, failed, canceled, transient_error)",
                ["model", "outcome"],
            ),
            (
                "resumptions",
                "predictions_resumed_total",
                "predictions of an earlier run resumed without a new creation",
                ["model"],
            ),
            (
                "substitutes",
                "items_substituted_total",
                "items given the substitute image after every model failed, by last model",
                ["model"],
            ),
            (
                "creations",
                "creations_total",
                "predictions created on Replicate (paid calls started)",
                ["model"],
            ),
            ("retries", "retries_total", "attempts retried on the same model", ["model", "reason"]),
            (
                "fallbacks",
                "fallbacks_total",
                "items moved to the next model of their route",
                ["from_model", "to_model"],
            ),
            ("rate_limited", "rate_limited_total", "HTTP 429 answers from Replicate", ["kind"]),
            (
                "creation_pauses",
                "creation_pauses_total",
                "fleet-wide creation pauses set after a 429 on create",
                [],
            ),
            (
                "creation_pause_requested_seconds",
                "creation_pause_requested_seconds_total",
                "seconds of creation pause asked for after 429s (pauses overlap: not wall time)",
                [],
            ),
            (
                "cost_usd",
                "cost_usd_total",
                "estimated USD of succeeded predictions (registry prices), by model",
                ["model"],
            ),
            (
                "ends_noticed",
                "prediction_ends_noticed_total",
                "how workers learned that a prediction ended (webhook, poll)",
                ["via"],
            ),
            ("webhooks", "webhooks_total", "deliveries at the webhook receiver, by outcome", ["outcome"]),
        )
        for source, name, doc, labels in specs:
            # CounterMetricFamily appends _total itself.
            family = CounterMetricFamily(f"{NAMESPACE}_{name.removesuffix('_total')}", doc, labels=labels)
            for label_values, value in counters.get(source, []):
                family.add_metric([label_values.get(label, "") for label in labels], value)
            yield family
        yield self._wait_histogram(counters)

    def _wait_histogram(
        self, counters: dict[str, list[tuple[dict[str, str], float]]]
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            f"{NAMESPACE}_limiter_wait_seconds",
            "time spent waiting on the limiter, by kind (slot, create, read, handoff)",
            labels=["kind"],
        )
        per_kind: dict[str, dict[str, float]] = {}
        for labels, value in counters.get("wait_bucket", []):
            per_kind.setdefault(labels.get("kind", ""), {})[labels.get("le", "+Inf")] = value
        sums = {labels.get("kind", ""): value for labels, value in counters.get("wait_sum", [])}
        for kind in sorted(set(per_kind) | set(sums)):
            raw = per_kind.get(kind, {})
            cumulative, buckets = 0.0, []
            for bound in WAIT_BUCKETS:
                cumulative += raw.get(repr(float(bound)), 0.0)
                buckets.append((_le(bound), cumulative))
            cumulative += raw.get("+Inf", 0.0)
            buckets.append(("+Inf", cumulative))
            family.add_metric([kind], buckets, sum_value=sums.get(kind, 0.0))
        return family


def _separate_non_outcomes(
    counters: dict[str, list[tuple[dict[str, str], float]]],
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Counts written as predictions{outcome=resumed|substituted} (by workers of an older
    version) join their own counters, so fleet_predictions_total holds only ends of attempts."""
    kept: list[tuple[dict[str, str], float]] = []
    moved: dict[tuple[str, str], float] = {}
    for labels, value in counters.get("predictions", []):
        target = SEPARATE_OUTCOMES.get(labels.get("outcome", ""))
        if target is None:
            kept.append((labels, value))
        else:
            key = (target, labels.get("model", ""))
            moved[key] = moved.get(key, 0.0) + value
    if not moved:
        return counters
    result = {**counters, "predictions": kept}
    for target in {target for target, _ in moved}:
        totals = {labels.get("model", ""): value for labels, value in counters.get(target, [])}
        for (moved_target, model), value in moved.items():
            if moved_target == target:
                totals[model] = totals.get(model, 0.0) + value
        result[target] = [({"model": model}, value) for model, value in totals.items()]
    return result


def _le(bound: float) -> str:
    return repr(float(bound))
