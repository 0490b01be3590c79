"""Receives Replicate's webhooks and hands each finished prediction to the worker waiting for it.

    fleet-webhooks                                 # or: python -m workers.webhook_receiver
    FLEET_WEBHOOK_URL=https://fleet.example.com/webhooks/replicate   # what the workers give Replicate

Listens on FLEET_WEBHOOK_LISTEN (default 0.0.0.0:8785) for `POST /webhooks/replicate` (aiohttp,
the stand-in's web stack too), checks the Standard Webhooks signature (workers/webhook_signatures.py)
against REPLICATE_WEBHOOK_SECRET, or the account's secret fetched once with the API token
(GET /v1/webhooks/default/secret), and gives terminal predictions to the CompletionBoard in Redis.

- Malformed deliveries (headers missing or misshapen, not JSON, not UTF-8, wrong content type) get
  400, oversized ones 413, forged or stale ones 401; all change nothing and count as `rejected`.
- A `webhook-id` seen in the last 11 minutes (a retry, or a replay within the timestamp tolerance)
  gets 200 and is not handed on again (`duplicate`).
- When Redis is unreachable it answers 503 so that Replicate delivers again (`unavailable`).
- A client gets `ServerLimits.header_timeout` seconds for its request line and headers and as long
  again for its body, then it is cut off (`timed_out`); at most `max_connections` connections are
  open and `max_handlers` deliveries handled at once, beyond that 503 (`overloaded`).

A prediction whose worker died while it ran still holds an (orphaned) slot in the limiter; the
receiver frees it the moment the prediction ends. Stateless apart from Redis: run several behind a
load balancer. `GET /healthz` answers 200 when Redis does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import redis
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from shared.errors import ConfigError, FleetError, WebhookRejectedError
from shared.keys import Keys
from shared.limiter import Limiter
from shared.metrics.batched import FLUSH_INTERVAL, BatchedCounters
from shared.metrics.recorder import MetricsRecorder
from shared.redis_conn import connect
from shared.settings import Settings
from workers.completions import CompletionBoard, Delivery
from workers.webhook_signatures import TOLERANCE_SECONDS, WebhookVerifier, malformed, signing_secret

__all__ = ["PATH", "ServerLimits", "WebhookReceiver", "main", "signing_secret"]

log = logging.getLogger("workers.webhooks")

PATH = "/webhooks/replicate"
MAX_BODY_BYTES = 10 * 1024 * 1024  # a prediction with data: URI outputs can be large
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
# A webhook-id is remembered as long as a delivery carrying it can pass the timestamp check: sent
# at t, accepted until t + tolerance, possibly first seen at t - tolerance (clocks apart).
REPLAY_WINDOW_SECONDS = 2 * TOLERANCE_SECONDS + 60
OUTCOMES = ("accepted", "ignored", "duplicate", "rejected", "unavailable", "timed_out", "overloaded")
COUNTED = web.RequestKey("counted", bool)  # set once our code has counted the request's outcome
HANDLER_SLOTS = web.AppKey("handler_slots", asyncio.Semaphore)
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class ServerLimits:
    """What clients may take of the receiver: Replicate sends small bodies and retries failed
    deliveries, so anything slow or crowding is cut short rather than waited for."""

    max_connections: int = 256  # open at once; the next ones get 503 and are closed
    max_handlers: int = 16  # deliveries read and handled at once (their bodies are in memory)
    header_timeout: float = 10.0  # a new connection must have sent its request line and headers
    body_timeout: float = 10.0  # then its body must have arrived within this
    handler_wait: float = 5.0  # a delivery waits this long for a free handler, then 503


class WebhookReceiver:
    """`run()` serves until SIGTERM/SIGINT; `start()` serves in a thread (tests), `stop()` ends it."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.Redis | None = None,
        secret: str | None = None,
        limits: ServerLimits = ServerLimits(),
        metrics_interval: float = FLUSH_INTERVAL,
    ):
        self.settings = settings
        self.limits = limits
        self.redis = redis_client if redis_client is not None else connect(settings)
        self.keys = Keys(settings.key_prefix)
        self.board = CompletionBoard(self.redis, self.keys)
        self.limiter = Limiter.from_settings(self.redis, self.keys, settings)
        self.verifier = WebhookVerifier(secret or signing_secret(settings))
        # The outcome counters are added up here and written every `metrics_interval` s, as a
        # worker's are (issue 16.4: one HINCRBY per delivery was a round trip per image).
        self._counters = BatchedCounters(self.redis, metrics_interval)
        self.metrics = MetricsRecorder(self._counters, self.keys)
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self._counts_lock = threading.Lock()
        host, _, port = settings.webhook_listen.rpartition(":")
        self.host, self.port = host.strip("[]") or "0.0.0.0", int(port)
        self._handlers = ThreadPoolExecutor(limits.max_handlers, thread_name_prefix="webhook")
        self._awaiting_head: set[Any] = set()  # connections that have not sent a request head yet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # --- one delivery ---------------------------------------------------------------------------
    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        """Decide the answer to one delivery (headers with lower-case names): (HTTP status, text).
        Blocking (Redis): the server runs it on its handler threads."""
        problem = request_problem(headers, len(body))
        if problem:
            return self.outcome("rejected", *problem)
        try:
            text = body.decode("utf-8")
            self.verifier.check(headers, text)
            prediction = json.loads(text)
            prediction_id, status = str(prediction["id"]), prediction.get("status")
        except WebhookRejectedError as exc:
            return self.outcome("rejected", exc.status, str(exc))
        except (ValueError, KeyError, TypeError):  # not UTF-8, not JSON, not a prediction
            return self.outcome("rejected", HTTPStatus.BAD_REQUEST, "not a prediction")
        try:
            return self._hand_on(headers["webhook-id"].strip(), prediction_id, status, prediction)
        except redis.RedisError as exc:
            log.warning(
                "webhook for %s not stored (Redis: %s); Replicate will deliver again", prediction_id, exc
            )
            return self.outcome("unavailable", HTTPStatus.SERVICE_UNAVAILABLE, "try again")

    def _hand_on(self, webhook_id: str, prediction_id: str, status: Any, prediction: dict) -> tuple[int, str]:
        seen = self.keys.webhook_delivery(webhook_id)
        if status not in TERMINAL:  # start/output/logs events: nothing to hand over
            if not self.redis.set(seen, prediction_id, nx=True, ex=REPLAY_WINDOW_SECONDS):
                return self._duplicate(webhook_id, prediction_id)
            return self.outcome("ignored", HTTPStatus.OK, "ignored")
        # The replay check rides in the notify script (one round trip per image, not two); a
        # failed call records nothing, so Replicate's next delivery of it gets through.
        woke = self.board.notify(prediction, delivery=Delivery(seen, REPLAY_WINDOW_SECONDS))
        if woke is None:
            return self._duplicate(webhook_id, prediction_id)
        log.debug("prediction %s %s (worker waiting: %s)", prediction_id, status, woke)
        if not woke:
            self._settle_orphan(prediction_id)
        return self.outcome("accepted", HTTPStatus.OK, "ok")

    def _duplicate(self, webhook_id: str, prediction_id: str) -> tuple[int, str]:
        log.info("webhook %s for %s received before; not handed on again", webhook_id, prediction_id)
        return self.outcome("duplicate", HTTPStatus.OK, "already received")

    def _settle_orphan(self, prediction_id: str) -> None:
        """Nobody waits for this prediction: its worker may have died while it ran, so the slot it
        left counted is free now. Not asked when a worker waits (the common case, one script per
        image saved): that run holds the slot and gives it back itself; were an orphan left all
        the same, the recovery sweep settles it once the prediction has ended (the slot stays
        counted meanwhile: the safe side)."""
        try:
            if self.limiter.settle(prediction_id, orphaned_only=True):
                log.info("freed the slot a dead worker left for prediction %s", prediction_id)
        except FleetError as exc:
            log.debug("orphaned slot of %s not settled here: %s", prediction_id, exc)

    def outcome(self, outcome: str, status: int, text: str) -> tuple[int, str]:
        """Count an outcome, here and in Redis for the metrics; the answer to give."""
        self._tally(outcome)
        self.metrics.webhook(outcome)  # never raises: a lost count is fine, a lost delivery is not
        return status, text

    def count_soon(self, outcome: str) -> None:
        """Count an outcome decided on the event loop: the Redis write goes to a thread."""
        self._tally(outcome)
        asyncio.get_running_loop().run_in_executor(None, self.metrics.webhook, outcome)

    def _tally(self, outcome: str) -> None:
        with self._counts_lock:
            self.counts[outcome] += 1

    def healthy(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    # --- the HTTP server ------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._head_arrived])
        app[HANDLER_SLOTS] = asyncio.Semaphore(self.limits.max_handlers)
        app.router.add_post(PATH, self._deliver)
        app.router.add_get("/healthz", self._health)
        return app

    @web.middleware
    async def _head_arrived(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self._awaiting_head.discard(request.protocol)  # its connection is not a slow one (see _guard)
        return await handler(request)

    async def _deliver(self, request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        problem = request_problem(headers, request.content_length)
        if problem:  # answered before its body is read or a handler waited for
            return self._answer(request, "rejected", *problem, close=True)
        slots = request.app[HANDLER_SLOTS]
        try:
            await asyncio.wait_for(slots.acquire(), self.limits.handler_wait)
        except asyncio.TimeoutError:
            return self._answer(request, "overloaded", HTTPStatus.SERVICE_UNAVAILABLE, "busy", close=True)
        try:
            try:
                body = await asyncio.wait_for(request.read(), self.limits.body_timeout)
            except asyncio.TimeoutError:
                return self._answer(
                    request, "timed_out", HTTPStatus.REQUEST_TIMEOUT, "body too slow", close=True
                )
            except web.HTTPRequestEntityTooLarge:
                return self._answer(
                    request, "rejected", HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large", close=True
                )
            status, text = await asyncio.get_running_loop().run_in_executor(
                self._handlers, self.handle, headers, body
            )
        finally:
            slots.release()
        request[COUNTED] = True
        return web.Response(status=status, text=text)

    def _answer(
        self, request: web.Request, outcome: str, status: int, text: str, *, close: bool = False
    ) -> web.Response:
        self.count_soon(outcome)
        request[COUNTED] = True
        response = web.Response(status=status, text=text)
        if close:
            response.force_close()
        return response

    async def _health(self, request: web.Request) -> web.Response:
        ok = await asyncio.get_running_loop().run_in_executor(None, self.healthy)
        return web.Response(status=200 if ok else 503, text="ok" if ok else "redis down")

    async def serve(
        self, on_ready: Callable[[], None] = lambda: None, *, handle_signals: bool = False
    ) -> None:
        """Serve until stop() (or SIGTERM/SIGINT with handle_signals)."""
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(
            self.app(),
            handle_signals=False,
            shutdown_timeout=2.0,
            logger=_ClientErrorLog(),
            access_log=log,
            access_log_class=_access_log(self),
            # aiohttp closes a connection idle (or mid-headers) this long; ours
            # counts a slow one and cuts it off a little earlier (_guard)
            keepalive_timeout=self.limits.header_timeout + 2,
            # after an answer given without reading the whole body (refused,
            # too slow), drain it this long at most, not aiohttp's 10 s
            lingering_time=1.0,
        )
        await runner.setup()
        assert runner.server is not None  # setup() made it
        _guard(runner.server, self)
        site = web.TCPSite(runner, self.host, self.port, backlog=1024, reuse_address=True)
        await site.start()
        self.port = runner.addresses[0][1]
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stopping.set)
        on_ready()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()
            self._handlers.shutdown(wait=False, cancel_futures=True)
            self._counters.close()  # what was counted since the last write

    def start(self) -> WebhookReceiver:
        ready, failed = threading.Event(), []

        def run() -> None:
            try:
                asyncio.run(self.serve(ready.set))
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failed.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="webhook-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(15) or failed:
            raise ConfigError(
                f"the webhook receiver did not start on {self.host}:{self.port}: "
                f"{failed[0] if failed else 'timed out'}"
            )
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)


def request_problem(headers: Mapping[str, str], length: int | None) -> tuple[int, str] | None:
    """(status, reason) when a delivery's HTTP envelope is wrong, before its signature is read."""
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        return HTTPStatus.BAD_REQUEST, "content type must be application/json"
    if length is not None and length > MAX_BODY_BYTES:
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large"
    problem = malformed(headers)
    return (HTTPStatus.BAD_REQUEST, problem) if problem else None


def _guard(server: web.Server, receiver: WebhookReceiver) -> None:
    """aiohttp accepts every connection and leaves limits to the application (aio-libs/aiohttp#675):
    close the ones over max_connections at once, and cut off any connection that has not sent a
    complete request head within header_timeout (a client trickling its headers byte by byte)."""
    admit = server.connection_made
    limits = receiver.limits

    def cut_off_if_silent(handler: Any) -> None:
        if handler in receiver._awaiting_head:
            receiver._awaiting_head.discard(handler)
            if handler.transport is not None:
                receiver.count_soon("timed_out")
                handler.force_close()

    def connection_made(handler: Any, transport: Any) -> None:
        admit(handler, transport)
        if len(server.connections) > limits.max_connections:
            receiver.count_soon("overloaded")
            transport.write(BUSY)
            handler.force_close()
            return
        receiver._awaiting_head.add(handler)
        asyncio.get_running_loop().call_later(limits.header_timeout, cut_off_if_silent, handler)

    server.connection_made = connection_made  # type: ignore[method-assign]  # the guard wraps aiohttp's


class _ClientErrorLog(logging.LoggerAdapter):
    """aiohttp logs a request it cannot parse (bad request line or header, a line too long) as an
    ERROR with a traceback. That is the client's doing: one line, and counted as rejected."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("workers.webhooks.http"), {})

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        exc = sys.exc_info()[1] if exc_info is True else exc_info
        if isinstance(exc, HttpProcessingError):
            self.info("malformed HTTP request from %s: %s", args[0] if args else "?", exc.message or exc)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def _access_log(receiver: WebhookReceiver) -> type[AbstractAccessLogger]:
    class AccessLog(AbstractAccessLogger):
        """One line per request at DEBUG. A 4xx that aiohttp answered itself (a request it could
        not parse, which never reached the receiver's code) is counted as rejected here."""

        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            self.logger.debug(
                '%s "%s %s" %s %.3fs', request.remote, request.method, request.path_qs, response.status, time
            )
            if (
                400 <= response.status < 500
                and response.status not in (404, 405)
                and not request.get(COUNTED)
            ):
                receiver.count_soon("rejected")

        @property
        def enabled(self) -> bool:
            return True

    return AccessLog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet-webhooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", metavar="HOST:PORT", help="overrides FLEET_WEBHOOK_LISTEN")
    parser.add_argument("--env-file", default=".env", help="dotenv file read under the environment")
    args = parser.parse_args(argv)
    from shared.logging_setup import configure_logging

    try:
        settings = Settings.load({"webhook_listen": args.listen}, dotenv_path=args.env_file)
        secret = signing_secret(settings)
        configure_logging(settings, json=settings.log_json, extra_secrets=[secret])
        receiver = WebhookReceiver(settings, secret=secret)
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 3
    ready = lambda: log.info("receiving Replicate webhooks on %s:%s%s", receiver.host, receiver.port, PATH)  # noqa: E731
    try:
        asyncio.run(receiver.serve(ready, handle_signals=True))
    except OSError as exc:
        print(f"error: cannot listen on {settings.webhook_listen}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
