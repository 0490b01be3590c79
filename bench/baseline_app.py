"""The baseline: plain Celery as most people would write it, with no global limiter.

One task per image calls Replicate (the stand-in) through the official client, polls until the
prediction ends, downloads the output and writes it. The account's limits are "respected" the
usual Celery way: each worker gets `rate_limit` = the account's creation rate divided by the
number of workers (Celery's rate limit is per worker process and per task type), and its pool
size (-c) is the number of predictions it may run at once. Nothing is shared between workers.
A 429 or 5xx is retried with `self.retry(countdown=retry_after)` (max 50 times).

    celery -A bench.baseline_app worker --pool threads -c 20 -Q baseline-q

Configuration from the environment, read when the worker starts (never at import):
BASELINE_BROKER_URL, BASELINE_QUEUE, BASELINE_RATE_LIMIT (Celery syntax, e.g. "200/m"),
REPLICATE_BASE_URL, REPLICATE_API_TOKEN, BASELINE_OUTPUT_DIR, BASELINE_RESULTS_KEY (a Redis hash
index -> status the harness reads), BASELINE_POLL_INTERVAL (default 0.5, the client's own).
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery

TASK_NAME = "baseline.generate"


class BaselineCelery(Celery):
    def on_configure(self) -> None:  # type: ignore[override]  # lazily, at worker start
        env = os.environ
        queue = env.get("BASELINE_QUEUE", "baseline")
        self.conf.update(
            broker_url=env.get("BASELINE_BROKER_URL", "redis://127.0.0.1:6379/0"),
            broker_connection_retry_on_startup=True,
            task_ignore_result=True,
            task_default_queue=queue,
            task_acks_late=True,
            worker_prefetch_multiplier=1,
            worker_hijack_root_logger=False,
            task_serializer="json",
            accept_content=["json"],
            task_annotations={TASK_NAME: {"rate_limit": env.get("BASELINE_RATE_LIMIT") or None}},
        )


app = BaselineCelery("baseline")
_local = threading.local()
_redis_lock = threading.Lock()
_redis_client: Any = None


def _client():
    client = getattr(_local, "client", None)
    if client is None:
        import replicate

        client = replicate.Client(
            api_token=os.environ.get("REPLICATE_API_TOKEN", "x"),
            base_url=os.environ.get("REPLICATE_BASE_URL"),
        )
        _local.client = client
    return client


def _redis():
    global _redis_client
    with _redis_lock:
        if _redis_client is None:
            import redis

            _redis_client = redis.Redis.from_url(os.environ["BASELINE_BROKER_URL"], decode_responses=True)
        return _redis_client


def _retry_after(exc: Exception) -> float:
    match = re.search(r"retry_after\D+(\d+(?:\.\d+)?)", str(getattr(exc, "detail", "") or exc))
    return float(match.group(1)) if match else 1.0


def _record(index: int, status: str) -> None:
    _redis().hset(os.environ["BASELINE_RESULTS_KEY"], str(index), status)


@app.task(bind=True, name=TASK_NAME, max_retries=50, acks_late=True)
def generate(self, index: int, prompt: str, model: str) -> None:
    from replicate.exceptions import ReplicateError

    client = _client()
    try:
        prediction = client.models.predictions.create(model=model, input={"prompt": prompt})
    except ReplicateError as exc:
        if exc.status == 429 or (exc.status or 0) >= 500:
            if self.request.retries >= self.max_retries:
                _record(index, f"failed:{exc.status}")
                return
            raise self.retry(countdown=_retry_after(exc)) from exc
        _record(index, f"failed:{exc.status}")
        return
    poll = float(os.environ.get("BASELINE_POLL_INTERVAL", "0.5"))
    while prediction.status not in ("succeeded", "failed", "canceled", "aborted"):
        time.sleep(poll)
        try:
            prediction.reload()
        except ReplicateError as exc:  # 429 on reads: wait and poll again
            time.sleep(_retry_after(exc))
    if prediction.status != "succeeded":
        _record(index, f"failed:{prediction.status}")
        return
    import httpx

    output = prediction.output
    url = output[0] if isinstance(output, list) else output
    url = str(getattr(url, "url", url))
    data = httpx.get(url, timeout=30).content
    out = Path(os.environ.get("BASELINE_OUTPUT_DIR", "./baseline-output")) / f"{index:05d}.img"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    _record(index, "succeeded")
