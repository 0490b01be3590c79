"""The HTTP endpoint: a private CollectorRegistry with the FleetCollector, served by
prometheus-client's own threaded WSGI server (GET /metrics, and / too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import CollectorRegistry, start_http_server

from shared.keys import Keys
from shared.metrics.collector import FleetCollector
from shared.redis_conn import connect
from shared.settings import Settings


def build_registry(
    settings: Settings, client: redis.Redis | None = None, **collector_options: Any
) -> CollectorRegistry:
    """A registry holding only the fleet's metrics (no process/GC metrics of the exporter itself,
    which say nothing about the fleet)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        FleetCollector(client or connect(settings), Keys(settings.key_prefix), settings, **collector_options)
    )
    return registry


@dataclass
class MetricsServer:
    server: Any
    thread: Any
    client: redis.Redis

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def url(self) -> str:
        host = self.server.server_address[0]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        self.client.close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_metrics_server(
    settings: Settings, port: int = 9808, addr: str = "127.0.0.1", **collector_options: Any
) -> MetricsServer:
    """Serve in a background thread; port 0 picks a free port (see `.port`)."""
    client = connect(settings)
    registry = build_registry(settings, client, **collector_options)
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server=server, thread=thread, client=client)
