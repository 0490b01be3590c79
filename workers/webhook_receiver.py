"""Receives Replicate's webhooks and hands each finished prediction to the worker waiting for it.

    fleet-webhooks                                 # or: python -m workers.webhook_receiver
    FLEET_WEBHOOK_URL=https://fleet.example.com/webhooks/replicate   # what the workers give Replicate

Listens on FLEET_WEBHOOK_LISTEN (default 0.0.0.0:8785) for `POST /webhooks/replicate`, checks the
Standard Webhooks signature with the official client's validator (5-minute timestamp tolerance)
against REPLICATE_WEBHOOK_SECRET, or the account's secret fetched once with the API token
(GET /v1/webhooks/default/secret), and gives terminal predictions to the CompletionBoard in Redis.
Unsigned or forged requests get 401 and change nothing; when Redis is unreachable it answers 503
so that Replicate delivers again. A prediction whose worker died while it ran still holds an
(orphaned) slot in the limiter; the receiver frees it the moment the prediction ends. Stateless apart from Redis: run several behind a load balancer.
`GET /healthz` answers 200 when Redis does.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis

from shared.errors import ConfigError, FleetError
from shared.keys import Keys
from shared.limiter import Limiter
from shared.metrics.recorder import MetricsRecorder
from shared.redis_conn import connect
from shared.settings import Settings
from workers.completions import CompletionBoard

log = logging.getLogger("workers.webhooks")

PATH = "/webhooks/replicate"
MAX_BODY_BYTES = 10 * 1024 * 1024  # a prediction with data: URI outputs can be large
TOLERANCE_SECONDS = 300
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})


class WebhookVerifier:
    """Checks a delivery's signature; the secret never leaves this object."""

    def __init__(self, secret: str):
        from replicate.webhook import WebhookSigningSecret

        if not secret.startswith("whsec_"):
            raise ConfigError("the webhook signing secret must start with 'whsec_'")
        self._secret = WebhookSigningSecret(key=secret)

    def verify(self, headers: dict[str, str], body: str) -> bool:
        from replicate.webhook import WebhookValidationError, Webhooks

        try:
            Webhooks.validate(headers=headers, body=body, secret=self._secret, tolerance=TOLERANCE_SECONDS)
        except WebhookValidationError:
            return False
        return True


def signing_secret(settings: Settings) -> str:
    """REPLICATE_WEBHOOK_SECRET, else the account's default secret from the API."""
    if settings.webhook_secret:
        return settings.webhook_secret
    if not settings.replicate_api_token:
        raise ConfigError("set REPLICATE_WEBHOOK_SECRET, or REPLICATE_API_TOKEN to fetch it from Replicate")
    import replicate

    client = replicate.Client(api_token=settings.replicate_api_token, base_url=settings.replicate_base_url or None)
    try:
        return client.webhooks.default.secret().key
    except Exception as exc:  # noqa: BLE001 - any failure here means we cannot start
        raise ConfigError(f"cannot fetch the webhook signing secret from Replicate: {type(exc).__name__}") from None


class WebhookReceiver:
    """The HTTP server. `serve_forever()` blocks; `start()` runs it in a thread (tests)."""

    def __init__(self, settings: Settings, *, redis_client: redis.Redis | None = None, secret: str | None = None):
        self.settings = settings
        self.redis = redis_client if redis_client is not None else connect(settings)
        self.board = CompletionBoard(self.redis, Keys(settings.key_prefix))
        self.limiter = Limiter.from_settings(self.redis, Keys(settings.key_prefix), settings)
        self.verifier = WebhookVerifier(secret or signing_secret(settings))
        self.counts = {"accepted": 0, "ignored": 0, "rejected": 0, "unavailable": 0}
        self.metrics = MetricsRecorder(self.redis, Keys(settings.key_prefix))
        host, _, port = settings.webhook_listen.rpartition(":")
        self.server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), self._handler_class())
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """Decide the answer to one delivery: (HTTP status, short text)."""
        text = body.decode("utf-8", errors="replace")
        if not self.verifier.verify(headers, text):
            return self._outcome("rejected", HTTPStatus.UNAUTHORIZED, "bad signature")
        try:
            prediction = json.loads(text)
            prediction_id, status = str(prediction["id"]), prediction.get("status")
        except (ValueError, KeyError, TypeError):
            return self._outcome("rejected", HTTPStatus.BAD_REQUEST, "not a prediction")
        if status not in TERMINAL:  # start/output/logs events: nothing to hand over
            return self._outcome("ignored", HTTPStatus.OK, "ignored")
        try:
            woke = self.board.notify(prediction)
        except redis.RedisError as exc:
            log.warning("webhook for %s not stored (Redis: %s); Replicate will deliver again", prediction_id, exc)
            return self._outcome("unavailable", HTTPStatus.SERVICE_UNAVAILABLE, "try again")
        log.debug("prediction %s %s (worker waiting: %s)", prediction_id, status, woke)
        try:  # its worker died while it ran: the slot it left counted is free now
            if self.limiter.settle(prediction_id, orphaned_only=True):
                log.info("freed the slot a dead worker left for prediction %s", prediction_id)
        except FleetError as exc:
            log.debug("orphaned slot of %s not settled here: %s", prediction_id, exc)
        return self._outcome("accepted", HTTPStatus.OK, "ok")

    def _outcome(self, outcome: str, status: int, text: str) -> tuple[int, str]:
        self.counts[outcome] += 1
        self.metrics.webhook(outcome)  # never raises: a lost count is fine, a lost delivery is not
        return status, text

    def healthy(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "replicate-fleet-webhooks"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?", 1)[0] != PATH:
                    return self._answer(HTTPStatus.NOT_FOUND, "not found")
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY_BYTES:
                    return self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._answer(*receiver.handle(headers, body))

            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/healthz":
                    return self._answer(HTTPStatus.NOT_FOUND, "not found")
                ok = receiver.healthy()
                self._answer(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, "ok" if ok else "redis down")

            def _answer(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args: Any) -> None:  # access log at debug level only
                log.debug("%s " + fmt, self.client_address[0], *args)

        return Handler

    def start(self) -> "WebhookReceiver":
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=receiver.server.shutdown).start())
    log.info("receiving Replicate webhooks on %s%s", settings.webhook_listen, PATH)
    try:
        receiver.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
