"""The account: predictions and their lifecycle, limits, failure injection and the ledger.

Everything here runs on one asyncio event loop and never awaits between a check and the change
it guards, so admission, counting and state changes are atomic without locks, however many
connections and client processes there are.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import random
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import media
from .catalog import Catalog, ModelInfo
from .config import SimConfig
from .webhooks import WebhookSender, WebhookStats, new_secret
from .window import NS, TimeSeries

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
NSFW_ERROR = "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
MODEL_ERROR = "Prediction failed: simulated model error (replicate-sim fail rate)"
ABORT_ERROR = "Prediction aborted: its deadline passed before it started"


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Prediction:
    id: str
    model: ModelInfo
    version: str
    input: dict[str, Any]
    base_url: str
    created_at: float  # wall clock, epoch seconds
    created_ns: int  # monotonic
    outcome: str  # what it will end as: succeeded | failed | aborted
    error_text: str | None
    start_delay: float
    run_time: float
    webhook: str | None = None
    webhook_events: frozenset[str] = frozenset()
    deployment: str | None = None  # owner/name of the deployment that created it, if one did
    status: str = "starting"
    started_at: float | None = None
    completed_at: float | None = None
    output: Any = None
    error: str | None = None
    logs: str = ""
    timer: asyncio.TimerHandle | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def output_format(self) -> str:
        return self.model.output_format(self.model.with_defaults(self.input))

    def data_removed(self, ttl: float | None, now: float) -> bool:
        return bool(ttl is not None and self.completed_at is not None and now > self.completed_at + ttl)

    def to_json(self, ttl: float | None = None) -> dict[str, Any]:
        now = time.time()
        removed = self.data_removed(ttl, now)
        metrics: dict[str, Any] = {}
        if self.completed_at is not None:
            metrics["total_time"] = round(self.completed_at - self.created_at, 6)
            if self.started_at is not None:
                metrics["predict_time"] = round(self.completed_at - self.started_at, 6)
        if self.model.output == "list" and self.status == "succeeded":
            metrics["image_count"] = len(self.output or [])
        base = self.base_url
        data = {
            "id": self.id,
            "model": self.model.name,
            "version": self.version,
            "input": {} if removed else self.input,
            "logs": self.logs,
            "output": None if removed else self.output,
            "data_removed": removed,
            "error": self.error,
            "status": self.status,
            "source": "api",
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "urls": {
                "get": f"{base}/v1/predictions/{self.id}",
                "cancel": f"{base}/v1/predictions/{self.id}/cancel",
                "web": f"{base}/p/{self.id}",
            },
            "metrics": metrics,
        }
        if self.deployment is not None:
            data["deployment"] = self.deployment  # like Replicate: only on a deployment's predictions
        return data


@dataclass
class StoredFile:
    id: str
    name: str
    content_type: str
    data: bytes
    metadata: dict[str, Any]
    created_at: float
    base_url: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": len(self.data),
            "etag": hashlib.md5(self.data).hexdigest(),  # noqa: S324 - an etag, not security
            "checksums": {
                "sha256": hashlib.sha256(self.data).hexdigest(),
                "md5": hashlib.md5(self.data).hexdigest(),
            },  # noqa: S324
            "metadata": self.metadata,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.created_at + 24 * 3600),
            "urls": {
                "get": f"{self.base_url}/v1/files/{self.id}",
                "download": f"{self.base_url}/v1/files/{self.id}/download",
            },
        }


@dataclass
class Rejection:
    """Why an API call is refused before it reaches its handler."""

    status: int
    kind: str  # "create" | "read" | "in_flight" | "storm" | "5xx"
    retry_after: int | None = None


class Engine:
    def __init__(self, config: SimConfig, catalog: Catalog):
        self.config = config
        self.catalog = catalog
        if not config.webhook_secret:
            config.webhook_secret = new_secret()
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sim-render")
        self.started_ns = time.monotonic_ns()
        self.started_at = time.time()
        self._reset_state()

    # --- state ----------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.storm_until_ns = 0
        self.config_changed()
        self.rng = random.Random(self.config.seed)
        self.predictions: dict[str, Prediction] = {}
        self.order: list[Prediction] = []
        self.files: dict[str, StoredFile] = {}
        self.in_flight: set[str] = set()
        self.peak_in_flight = 0
        self.create_calls = TimeSeries()  # admitted POST creates (what the create limit counts)
        self.creation_times = TimeSeries()  # predictions actually created
        self.read_calls = TimeSeries()
        self.creations_by_model: Counter[str] = Counter()
        # Which create endpoint made each prediction: models.predictions.create (by model),
        # predictions.create (by version), deployments.predictions.create.
        self.creations_by_route: Counter[str] = Counter()
        self.status_counts: Counter[str] = Counter()
        self.reads_by_route: Counter[str] = Counter()
        self.rejected_429: Counter[str] = Counter({"create": 0, "read": 0, "in_flight": 0, "storm": 0})
        self.errors_5xx: Counter[int] = Counter()
        self.ghost_creates = 0
        self.stalled_creates = 0
        self.late_creates = 0
        self.dropped_creates = 0
        # Bumped by every reset: a late creation scheduled before a reset does not land after it.
        self.generation = getattr(self, "generation", 0) + 1
        self.invalid_requests: Counter[int] = Counter()  # 4xx answered by handlers (404/422/400)
        self.unauthorized = 0
        self.seen_inputs: dict[str, list[str]] = {}
        self.duplicate_inputs = 0
        self.files_served: dict[str, str] = {}
        self.outputs_sha: dict[str, dict[int, str]] = {}
        self.events: list[dict[str, Any]] = []
        self.render_cache: OrderedDict[str, bytes] = OrderedDict()
        self.render_cache_bytes = 0
        self.webhook_stats = WebhookStats()
        self.webhooks = WebhookSender(lambda: self.config.webhook_secret or "", self.webhook_stats)
        self.reset_at = time.time()

    async def reset(self) -> None:
        for prediction in self.order:
            if prediction.timer is not None:
                prediction.timer.cancel()
            prediction.done.set()  # release any `Prefer: wait` still holding a connection
        await self.webhooks.close()
        self._reset_state()

    async def close(self) -> None:
        await self.webhooks.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def config_changed(self) -> None:
        """Options that act at the moment they are set (a timed storm starts now)."""
        if self.config.storm_for > 0:
            self.storm_until_ns = self.now_ns() + int(self.config.storm_for * NS)
            self.config.storm_for = 0.0

    def _event(self, kind: str, **data: Any) -> None:
        if self.config.record_events:
            self.events.append(
                {
                    "t": round((time.monotonic_ns() - self.started_ns) / NS, 6),
                    "ts": round(time.time(), 6),
                    "kind": kind,
                    **data,
                }
            )

    # --- admission (called by the middleware, before any handler) --------------------------------

    def injected_error(self) -> int | None:
        """A 5xx to answer instead of handling the call, if one is due."""
        cfg = self.config
        if cfg.error_burst > 0:
            cfg.error_burst -= 1
            statuses = cfg.error_burst_statuses or [500]
            status = statuses[sum(self.errors_5xx.values()) % len(statuses)]
        elif cfg.error_rate > 0 and self.rng.random() < cfg.error_rate:
            status = self.rng.choice(cfg.error_burst_statuses or [500])
        else:
            return None
        self.errors_5xx[status] += 1
        self._event("error", status=status)
        return status

    def admit(self, kind: str, route: str) -> Rejection | None:
        """Count an API call against the account's limits, or say why it is refused (429)."""
        cfg = self.config
        now = self.now_ns()
        window = int(cfg.window * NS)
        if kind == "create":
            if cfg.storm_next > 0:
                cfg.storm_next -= 1
                return self._reject("storm", cfg.storm_retry_after)
            if now < self.storm_until_ns:
                return self._reject("storm", _ceil_seconds(self.storm_until_ns - now))
            wait_ns = self.create_calls.retry_after(now, cfg.create_limit, window)
            if wait_ns is not None:
                return self._reject("create", _ceil_seconds(wait_ns))
            if cfg.max_in_flight and len(self.in_flight) >= cfg.max_in_flight:
                return self._reject("in_flight", self._in_flight_retry_after())
            self.create_calls.append(now, window)
            return None
        wait_ns = self.read_calls.retry_after(now, cfg.read_limit, window)
        if wait_ns is not None:
            return self._reject("read", _ceil_seconds(wait_ns))
        self.read_calls.append(now, window)
        self.reads_by_route[route] += 1
        return None

    def _reject(self, kind: str, retry_after: int) -> Rejection:
        self.rejected_429[kind] += 1
        self._event("throttled", limit=kind, retry_after=retry_after)
        return Rejection(429, kind, max(1, retry_after))

    def _in_flight_retry_after(self) -> int:
        now = time.time()
        ends = [
            p.created_at + p.start_delay + p.run_time for p in map(self.predictions.get, self.in_flight) if p
        ]
        return _ceil_seconds(int(max(min(ends, default=now + 1) - now, 0) * NS))

    # --- predictions ----------------------------------------------------------------------------

    def _new_id(self) -> str:
        while True:
            bits = self.rng.getrandbits(130)
            ident = "".join(ID_ALPHABET[(bits >> (5 * i)) & 31] for i in range(26))
            if ident not in self.predictions:
                return ident

    def _plan(self, model: ModelInfo, values: dict[str, Any]) -> tuple[str, str | None, float, float]:
        cfg = self.config
        outcome, error = "succeeded", None
        prompt = values.get("prompt")
        if cfg.abort_next > 0:
            cfg.abort_next -= 1
            outcome, error = "aborted", ABORT_ERROR
        elif cfg.abort_rate > 0 and self.rng.random() < cfg.abort_rate:
            outcome, error = "aborted", ABORT_ERROR
        elif cfg.nsfw_trigger and isinstance(prompt, str) and cfg.nsfw_trigger.lower() in prompt.lower():
            outcome, error = "failed", NSFW_ERROR
        elif cfg.fail_next > 0:
            cfg.fail_next -= 1
            outcome, error = "failed", cfg.fail_error or MODEL_ERROR
        elif model.name in cfg.always_fail_models:
            outcome, error = "failed", cfg.fail_error or MODEL_ERROR
        else:
            rate = cfg.model_fail_rates.get(model.name, cfg.fail_rate)
            if rate > 0 and self.rng.random() < rate:
                outcome, error = "failed", cfg.fail_error or MODEL_ERROR
        mean = cfg.latency_overrides.get(model.name, model.latency_mean) * cfg.latency_scale
        if mean <= 0:
            total = 0.0
        else:
            sigma = model.latency_sigma if cfg.latency_sigma is None else cfg.latency_sigma
            total = self.rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)
        start_delay = total * cfg.starting_fraction
        return outcome, error, start_delay, total - start_delay

    def create_prediction(
        self,
        model: ModelInfo,
        values: dict[str, Any],
        *,
        version: str,
        base_url: str,
        webhook: str | None = None,
        webhook_events: frozenset[str] = frozenset(),
        route: str = "models.predictions.create",
        deployment: str | None = None,
    ) -> Prediction:
        outcome, error, start_delay, run_time = self._plan(model, values)
        now_ns = self.now_ns()
        prediction = Prediction(
            id=self._new_id(),
            model=model,
            version=version,
            input=values,
            base_url=base_url,
            created_at=time.time(),
            created_ns=now_ns,
            outcome=outcome,
            error_text=error,
            start_delay=start_delay,
            run_time=run_time,
            webhook=webhook,
            webhook_events=webhook_events,
            deployment=deployment,
        )
        self.creations_by_route[route] += 1
        self.predictions[prediction.id] = prediction
        self.order.append(prediction)
        self.creation_times.append(now_ns, int(self.config.window * NS))
        self.creations_by_model[model.name] += 1
        self.status_counts["starting"] += 1
        self.in_flight.add(prediction.id)
        self.peak_in_flight = max(self.peak_in_flight, len(self.in_flight))
        # Hashed: inputs may carry data: URIs of several MB, and a long run has thousands of them.
        key = hashlib.sha256(
            (model.name + "\n" + json.dumps(values, sort_keys=True, separators=(",", ":"))).encode()
        ).hexdigest()
        same = self.seen_inputs.setdefault(key, [])
        if same:
            self.duplicate_inputs += 1
        same.append(prediction.id)
        self._event(
            "create",
            id=prediction.id,
            model=model.name,
            route=route,
            version=version,
            deployment=deployment,
            in_flight=len(self.in_flight),
        )
        self._webhook(prediction, "start")
        prediction.timer = asyncio.get_running_loop().call_later(
            start_delay, self._leave_starting, prediction
        )
        return prediction

    def create_later(self, delay: float, model: ModelInfo, values: dict[str, Any], **kwargs: Any) -> None:
        """Create the prediction `delay` seconds from now (unless the sim is reset meanwhile): a
        create whose answer was a gateway's 504 while Replicate went on with it."""
        generation = self.generation

        def land() -> None:
            if self.generation == generation:
                self.create_prediction(model, values, **kwargs)

        asyncio.get_running_loop().call_later(max(delay, 0.0), land)

    def _set_status(self, prediction: Prediction, status: str) -> None:
        self.status_counts[prediction.status] -= 1
        self.status_counts[status] += 1
        prediction.status = status
        if status in TERMINAL:
            prediction.completed_at = time.time()
            prediction.timer = None
            self.in_flight.discard(prediction.id)
            self._event(
                "complete",
                id=prediction.id,
                model=prediction.model.name,
                status=status,
                in_flight=len(self.in_flight),
            )
            prediction.done.set()

    def _leave_starting(self, prediction: Prediction) -> None:
        if prediction.status != "starting":
            return
        if prediction.outcome == "aborted":
            prediction.error = prediction.error_text
            self._set_status(prediction, "aborted")
            self._webhook(prediction, "completed")
            return
        prediction.started_at = time.time()
        prediction.logs = (
            f"Using seed: {self.rng.randrange(1 << 31)}\nGenerating {prediction.model.kind}...\n"
        )
        self._set_status(prediction, "processing")
        self._webhook(prediction, "logs")
        prediction.timer = asyncio.get_running_loop().call_later(
            prediction.run_time, self._finish, prediction
        )

    def _finish(self, prediction: Prediction) -> None:
        if prediction.status != "processing":
            return
        if prediction.outcome == "failed":
            prediction.error = prediction.error_text
            prediction.logs += f"{prediction.error_text}\n"
            self._set_status(prediction, "failed")
            self._webhook(prediction, "completed")
            return
        if self.config.data_uri_outputs:
            prediction.timer = None
            asyncio.ensure_future(self._finish_with_data_uris(prediction))
            return
        names = self.output_names(prediction)
        urls = [f"{prediction.base_url}/delivery/{prediction.id}/{name}" for name in names]
        self._succeed(prediction, urls)

    async def _finish_with_data_uris(self, prediction: Prediction) -> None:
        fmt = prediction.output_format
        uris = []
        for index in range(len(self.output_names(prediction))):
            data = await self.render(prediction, index)
            if prediction.status != "processing" or self.predictions.get(prediction.id) is not prediction:
                return  # canceled, or the sim was reset, while rendering
            sha = hashlib.sha256(data).hexdigest()
            self.files_served[f"data:{prediction.id}/{index}"] = sha
            self.outputs_sha.setdefault(prediction.id, {})[index] = sha
            uris.append(f"data:{media.CONTENT_TYPES[fmt]};base64," + base64.b64encode(data).decode())
        self._succeed(prediction, uris)

    def _succeed(self, prediction: Prediction, outputs: list[str]) -> None:
        prediction.output = outputs if prediction.model.output == "list" else outputs[0]
        prediction.logs += "100%|##########| done\n"
        self._webhook(prediction, "output")
        self._set_status(prediction, "succeeded")
        self._webhook(prediction, "completed")

    def cancel(self, prediction: Prediction) -> None:
        if prediction.status in TERMINAL:
            return
        if prediction.timer is not None:
            prediction.timer.cancel()
        self._set_status(prediction, "canceled")
        self._webhook(prediction, "completed")

    def _webhook(self, prediction: Prediction, event: str) -> None:
        if prediction.webhook and event in prediction.webhook_events:
            body = json.dumps(prediction.to_json(self.config.output_ttl))
            self.webhooks.send(prediction.id, prediction.webhook, event, body)

    # --- outputs --------------------------------------------------------------------------------

    def output_names(self, prediction: Prediction) -> list[str]:
        values = prediction.model.with_defaults(prediction.input)
        ext = prediction.model.output_format(values)
        if prediction.model.output == "single":
            return [f"output.{ext}"]
        return [f"out-{i}.{ext}" for i in range(prediction.model.output_count(values))]

    async def render(self, prediction: Prediction, index: int) -> bytes:
        key = f"{prediction.id}/{index}/{prediction.created_ns}"  # ids repeat after a seeded reset
        cached = self.render_cache.get(key)
        if cached is not None:
            self.render_cache.move_to_end(key)
            return cached
        values = prediction.model.with_defaults(prediction.input)
        quality = values.get("output_quality", 80)
        data = await asyncio.get_running_loop().run_in_executor(
            self.executor,
            lambda: media.render_output(
                prediction.id,
                index,
                prediction.model.output_format(values),
                aspect_ratio=prediction.model.aspect_ratio(values),
                megapixels=prediction.model.megapixels(values),
                image_scale=self.config.image_scale,
                quality=quality if isinstance(quality, int) else 80,
            ),
        )
        self.render_cache[key] = data
        self.render_cache_bytes += len(data)
        while self.render_cache_bytes > 64 * 1024 * 1024 and len(self.render_cache) > 1:
            _, dropped = self.render_cache.popitem(last=False)
            self.render_cache_bytes -= len(dropped)
        return data

    def record_served(self, path: str, prediction_id: str, index: int, data: bytes) -> None:
        sha = hashlib.sha256(data).hexdigest()
        self.files_served[path] = sha
        self.outputs_sha.setdefault(prediction_id, {})[index] = sha

    # --- files ----------------------------------------------------------------------------------

    def store_file(
        self, name: str, content_type: str, data: bytes, metadata: dict[str, Any], base_url: str
    ) -> StoredFile:
        file_id = self._new_id()
        stored = StoredFile(file_id, name, content_type, data, metadata, time.time(), base_url)
        self.files[file_id] = stored
        return stored

    # --- ledger ---------------------------------------------------------------------------------

    def ledger(self, *, detail: bool = True) -> dict[str, Any]:
        cfg = self.config
        window = int(cfg.window * NS)
        now = self.now_ns()
        data: dict[str, Any] = {
            "creations": len(self.order),
            "creations_by_model": dict(self.creations_by_model),
            "creations_by_route": dict(self.creations_by_route),
            "create_calls": len(self.create_calls),
            "in_flight": len(self.in_flight),
            "peak_in_flight": self.peak_in_flight,
            "max_creations_in_window": self.creation_times.max_in_any_window(window),
            "max_create_calls_in_window": self.create_calls.max_in_any_window(window),
            "max_reads_in_window": self.read_calls.max_in_any_window(window),
            "creations_in_current_window": self.creation_times.count_in_window(now, window),
            "reads_in_current_window": self.read_calls.count_in_window(now, window),
            "rejected_429": dict(self.rejected_429),
            "errors_5xx": sum(self.errors_5xx.values()),
            "errors_5xx_by_status": {str(k): v for k, v in self.errors_5xx.items()},
            "ghost_creates": self.ghost_creates,
            "stalled_creates": self.stalled_creates,
            "late_creates": self.late_creates,
            "dropped_creates": self.dropped_creates,
            "client_errors": {str(k): v for k, v in self.invalid_requests.items()},
            "unauthorized": self.unauthorized,
            "duplicate_inputs": self.duplicate_inputs,
            "reads": len(self.read_calls),
            "reads_by_route": dict(self.reads_by_route),
            "predictions_by_status": {k: v for k, v in self.status_counts.items() if v},
            "files_uploaded": len(self.files),
            "webhooks": self.webhook_stats.to_dict(),
            "limits": {
                "create_limit": cfg.create_limit,
                "read_limit": cfg.read_limit,
                "window": cfg.window,
                "max_in_flight": cfg.max_in_flight,
            },
            "since": iso(self.reset_at),
            "uptime": round((now - self.started_ns) / NS, 3),
        }
        if detail:
            data["files_served"] = dict(self.files_served)
            data["outputs_sha256"] = {
                pid: [shas[i] for i in sorted(shas)] for pid, shas in self.outputs_sha.items()
            }
            data["duplicates"] = [
                {
                    "model": self.predictions[ids[0]].model.name,
                    "input": json.dumps(self.predictions[ids[0]].input, sort_keys=True)[:300],
                    "prediction_ids": ids,
                }
                for ids in self.seen_inputs.values()
                if len(ids) > 1
            ]
        return data


def _ceil_seconds(ns: int) -> int:
    return max(1, -(-ns // NS))
