"""Signed webhook delivery, Standard Webhooks scheme as Replicate uses it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("replicate_sim.webhooks")

EVENTS = ("start", "output", "logs", "completed")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value: "v1,<base64 HMAC-SHA256(key, id.ts.body)>"."""
    key = base64.b64decode(secret.split("_", 1)[1])
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass
class WebhookStats:
    sent: int = 0
    failed: int = 0
    by_event: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "by_event": dict(self.by_event)}


class WebhookSender:
    """Posts events in order per prediction; retries terminal events a few times like Replicate."""

    def __init__(self, secret_of: Callable[[], str], stats: WebhookStats, *, attempts: int = 3):
        self._secret_of = secret_of
        self._stats = stats
        self._attempts = attempts
        self._session: aiohttp.ClientSession | None = None
        self._chains: dict[str, asyncio.Future] = {}

    def send(self, prediction_id: str, url: str, event: str, body: str) -> None:
        previous = self._chains.get(prediction_id)
        task = asyncio.ensure_future(self._send_after(previous, url, event, body))
        self._chains[prediction_id] = task
        if event == "completed":
            task.add_done_callback(partial(self._forget, prediction_id))

    def _forget(self, prediction_id: str, task: asyncio.Future) -> None:
        if self._chains.get(prediction_id) is task:
            del self._chains[prediction_id]

    async def _send_after(self, previous: asyncio.Future | None, url: str, event: str, body: str) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        attempts = self._attempts if event == "completed" else 1
        for attempt in range(attempts):
            if await self._post(url, body):
                self._stats.sent += 1
                self._stats.by_event[event] = self._stats.by_event.get(event, 0) + 1
                return
            await asyncio.sleep(0.2 * 2**attempt)
        self._stats.failed += 1

    async def _post(self, url: str, body: str) -> bool:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        webhook_id = "msg_" + secrets.token_urlsafe(18)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Replicate-Webhook/1.0 (replicate-sim)",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret_of(), webhook_id, timestamp, body),
        }
        try:
            async with self._session.post(url, data=body.encode(), headers=headers) as response:
                return 200 <= response.status < 300
        except Exception as exc:  # any delivery problem is the receiver's, not the sim's
            log.debug("webhook to %s failed: %s", url, exc)
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
