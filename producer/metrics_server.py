"""`producer metrics`: the Prometheus endpoint as a small long-running process.

The CLI wires `serve_metrics(settings, port)`; `python -m producer.metrics_server --port 9808`
does the same without the CLI (the compose `metrics` service uses it).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable

from shared.metrics.server import MetricsServer, start_metrics_server
from shared.redis_conn import redact_url
from shared.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PORT = 9808
DEFAULT_ADDRESS = "127.0.0.1"  # no auth: every interface only when asked (like `producer flower`)


def serve_metrics(
    settings: Settings,
    port: int = DEFAULT_PORT,
    *,
    addr: str = DEFAULT_ADDRESS,
    stop: threading.Event | None = None,
    on_ready: Callable[[MetricsServer], None] | None = None,
) -> None:
    """Serve /metrics until SIGINT/SIGTERM (or until `stop` is set). Blocks."""
    stop = stop or threading.Event()
    server: MetricsServer = start_metrics_server(settings, port=port, addr=addr)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    log.info(
        "metrics on %s (Redis %s, prefix %s)", server.url, redact_url(settings.redis_url), settings.key_prefix
    )
    if on_ready is not None:
        on_ready(server)
    try:
        stop.wait()
    finally:
        server.close()


def where(server: MetricsServer) -> str:
    """One line saying where the exporter listens, for people and for the logs."""
    host = server.server.server_address[0]
    return f"metrics: listening on {host}:{server.port}, scrape {server.url}"


def main(argv: list[str] | None = None) -> None:
    from shared.logging_setup import configure_logging

    parser = argparse.ArgumentParser(prog="producer-metrics", description=__doc__)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--address",
        "--addr",
        dest="address",
        default=DEFAULT_ADDRESS,
        help=f"interface to listen on (default {DEFAULT_ADDRESS}; the endpoint has no auth)",
    )
    args = parser.parse_args(argv)
    settings = Settings.load()
    configure_logging(settings)
    serve_metrics(
        settings, args.port, addr=args.address, on_ready=lambda server: print(where(server), flush=True)
    )


if __name__ == "__main__":
    main()
