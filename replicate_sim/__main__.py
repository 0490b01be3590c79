"""`replicate-sim` / `python -m replicate_sim`: run the Replicate stand-in in this process."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import SimConfig


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="replicate-sim", description="A local stand-in for Replicate's HTTP API."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787, help="0 picks a free port (see --port-file)")
    p.add_argument("--port-file", help="write {'port', 'url', 'pid'} as JSON here once listening")
    p.add_argument("--create-limit", type=int, help="creations per window (default 600)")
    p.add_argument("--read-limit", type=int, help="other API calls per window (default 3000)")
    p.add_argument("--window", type=float, help="rate window in seconds (default 60)")
    p.add_argument("--max-in-flight", type=int, help="429 once this many predictions are running")
    p.add_argument("--latency-scale", type=float, help="multiply every model's latency (0 = instant)")
    p.add_argument("--image-scale", type=float, help="output area = ~1 MP * this")
    p.add_argument("--fail-rate", type=float, help="share of predictions that fail")
    p.add_argument("--model-fail-rate", action="append", default=[], metavar="MODEL=RATE")
    p.add_argument("--always-fail", action="append", default=[], metavar="MODEL")
    p.add_argument("--abort-rate", type=float, help="share of predictions that end `aborted`")
    p.add_argument("--error-rate", type=float, help="share of API calls answered with a 5xx")
    p.add_argument("--nsfw-trigger", help="prompt word that makes a prediction fail as sensitive")
    p.add_argument("--seed", type=int, help="seed every random choice (ids, latency, failures)")
    p.add_argument("--token", help="accept only this Bearer token (default: any non-empty one)")
    p.add_argument("--public-url", help="base URL for output links (default: the Host the client used)")
    p.add_argument("--webhook-secret", help="whsec_... signing secret (default: random)")
    p.add_argument("--output-ttl", type=float, help="seconds before outputs are removed (default 3600)")
    p.add_argument("--data-uri-outputs", action="store_true", default=None, help="return data: URIs")
    p.add_argument("--strict-inputs", action="store_true", default=None, help="422 on unknown input keys")
    p.add_argument("--config", help="JSON object of any option (or @path to a JSON file); flags win")
    p.add_argument("--catalog", help="a models.json to use instead of the built-in one")
    p.add_argument("--access-log", action="store_true", help="log every request (slow under load)")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    options: dict[str, Any] = {}
    if args.config:
        text = Path(args.config[1:]).read_text() if args.config.startswith("@") else args.config
        options.update(json.loads(text))
    direct = (
        "create_limit",
        "read_limit",
        "window",
        "max_in_flight",
        "latency_scale",
        "image_scale",
        "fail_rate",
        "abort_rate",
        "error_rate",
        "nsfw_trigger",
        "seed",
        "token",
        "public_url",
        "webhook_secret",
        "output_ttl",
        "data_uri_outputs",
        "strict_inputs",
    )
    for name in direct:
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    if args.model_fail_rate:
        rates = dict(options.get("model_fail_rates", {}))
        for item in args.model_fail_rate:
            model, _, rate = item.rpartition("=")
            rates[model] = float(rate)
        options["model_fail_rates"] = rates
    if args.always_fail:
        options["always_fail_models"] = list(options.get("always_fail_models", [])) + args.always_fail
    if options.get("token") is None:
        options.pop("token", None)
    config = SimConfig()
    config.update(options)
    return config


async def serve(
    config: SimConfig,
    host: str,
    port: int,
    *,
    port_file: str | None = None,
    catalog_path: str | None = None,
    access_log: bool = False,
) -> None:
    from aiohttp import web

    from .catalog import load_catalog
    from .server import build_app

    app = build_app(config, load_catalog(catalog_path))
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        handle_signals=False,
        shutdown_timeout=1.0,
    )  # don't wait out `Prefer: wait` holds
    await runner.setup()
    # A deep accept backlog so hundreds of clients connecting at once are not dropped and retried.
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    actual_port = runner.addresses[0][1]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    info = {
        "replicate_sim": "listening",
        "url": f"http://{shown_host}:{actual_port}",
        "port": actual_port,
        "pid": os.getpid(),
    }
    if port_file:
        tmp = Path(port_file + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(port_file)  # atomic: a reader never sees half a file
    print(json.dumps(info), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = config_from_args(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"replicate-sim: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            serve(
                config,
                args.host,
                args.port,
                port_file=args.port_file,
                catalog_path=args.catalog,
                access_log=args.access_log,
            )
        )
    except OSError as exc:
        print(f"replicate-sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
