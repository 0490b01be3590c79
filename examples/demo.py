"""`make demo`: the whole pipeline on this machine, end to end, and everything stopped afterwards.

1. Redis: the one at REDIS_URL, or a private `redis-server` started here when none answers.
2. Replicate: the local stand-in (free, fast) unless `--real` is given with a real token.
3. Two `celery -A workers worker` processes.
4. Submit examples/prompts.json, show progress, print where the files and the manifest are.

Every process it started is stopped at the end, also on Ctrl-C or an error.

    .venv/bin/python -m examples.demo [--real] [--workers 2] [--prompts FILE] [--keep-running]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_PROMPTS = HERE / "prompts.json"
# When examples/prompts.json is missing: a small mixed batch on the stand-in's models.
FALLBACK_PROMPTS = {
    "model": "black-forest-labs/flux-dev",
    "params": {"aspect_ratio": "16:9", "output_format": "png"},
    "items": [
        {"id": "fox", "prompt": "a red fox in fresh snow, morning light"},
        {"id": "lighthouse", "prompt": "a lighthouse on a cliff during a storm"},
        {"id": "market", "prompt": "a busy night market, lanterns, rain", "model": "qwen/qwen-image"},
        {"id": "robot", "prompt": "a tiny robot watering a bonsai", "model": "google/imagen-4-ultra"},
        {
            "id": "whale",
            "prompt": "a blue whale under the northern lights",
            "model": "google/nano-banana",
            "params": {"output_format": "jpg"},
        },
        {"id": "city", "prompt": "a solarpunk city at dusk, wide view"},
    ],
}


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        client.ping()
        client.close()
        return True
    except (redis.RedisError, ValueError):
        return False


def start_redis(stack: ExitStack, workdir: Path) -> str:
    """A throw-away redis-server on a free port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "[demo] no Redis answers at REDIS_URL and redis-server is not installed "
            "(apt-get install redis-server, or set REDIS_URL)"
        )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    stack.callback(stop_process, process, "redis-server")
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("[demo] redis-server did not start")
        time.sleep(0.1)
    say(f"started a private redis-server on port {port} (stopped at the end)")
    return url


def stop_process(process: subprocess.Popen, name: str, timeout: float = 10.0) -> None:
    stop_processes([(process, name)], timeout)


def stop_processes(processes: list[tuple[subprocess.Popen, str]], timeout: float = 10.0) -> None:
    """SIGTERM to all at once (celery finishes or gives back its current tasks), SIGKILL to those
    still running after `timeout`. Each runs in its own session, so its whole group is signalled."""
    for process, _name in processes:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for process, name in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            say(f"{name} (pid {process.pid}) did not stop in {timeout:.0f} s; killing it")
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(5)


def start_workers(stack: ExitStack, count: int, env: dict[str, str], queue: str, logdir: Path) -> None:
    workers: list[tuple[subprocess.Popen, str]] = []
    stack.callback(stop_processes, workers)  # registered first: stops every worker started below
    for n in range(1, count + 1):
        log = open(logdir / f"worker{n}.log", "ab")
        stack.callback(log.close)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "-Q",
                queue,
                "-n",
                f"demo{n}@%h",
                "--pool",
                "threads",
                "-c",
                "16",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        workers.append((process, f"worker {n}"))
    say(f"started {count} celery workers on queue {queue!r} (logs in {logdir})")


def wait_for_workers(settings, count: int, timeout: float = 60.0) -> None:
    from workers.dispatch import workers_alive

    deadline = time.monotonic() + timeout
    while True:
        names = workers_alive(settings, timeout=1.0)
        if len(names) >= count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(
                f"[demo] only {len(names)} of {count} workers answered within {timeout:.0f} s; "
                "see the worker logs"
            )
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--real", action="store_true", help="call the real Replicate with REPLICATE_API_TOKEN (costs money)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prompts", type=Path, default=None, help="default examples/prompts.json")
    parser.add_argument(
        "--latency-scale", type=float, default=0.05, help="stand-in latency factor (1.0 = like Replicate)"
    )
    parser.add_argument(
        "--prefix",
        default="fleet-demo",
        help="Redis key prefix and queue of the demo's fleet on the stand-in",
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from producer import api
    from shared.errors import FleetError, InputError
    from shared.settings import Settings

    base = Settings.load()
    workdir = Path(tempfile.mkdtemp(prefix="fleet-demo-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        # Ctrl-C and SIGTERM both unwind through the ExitStack, which stops what we started.
        # Ctrl-C must raise even when started with SIGINT ignored (e.g. from a background job).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            return run(args, base, workdir, stack, api, FleetError, InputError)
        except KeyboardInterrupt:
            say("interrupted; stopping everything the demo started")
            return 130
        finally:
            say("stopping workers and services ...")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args, base, workdir: Path, stack: ExitStack, api, FleetError, InputError) -> int:
    redis_url = _redis_url(base, workdir, stack)
    settings, sim = _demo_settings(args, base, redis_url, stack)

    # --- workers -------------------------------------------------------------------------------
    env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)}
    logdir = Path(settings.output_dir) / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    start_workers(stack, args.workers, env, settings.queue, logdir)
    wait_for_workers(settings, args.workers)

    # --- submit and follow ---------------------------------------------------------------------
    source = args.prompts or DEFAULT_PROMPTS
    if not Path(source).is_file():
        say(f"{source} not found; using a small built-in list of {len(FALLBACK_PROMPTS['items'])} prompts")
        source = FALLBACK_PROMPTS
    try:
        # The stand-in is free and a demo is meant to run again; with --real, the same prompts
        # submitted twice are refused (naming the first batch) instead of paid for twice.
        batch = api.submit(source, settings=settings, overwrite=True, again=not args.real)
    except InputError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    say(f"submitted batch {batch.id}: {len(batch.requests or [])} images")
    snap = _wait_or_cancel(batch, FleetError)
    _report(batch, snap, settings, base, private_redis=redis_url != base.redis_url)
    if sim is not None:
        _say_sim_ledger(sim)
    return 0 if snap.all_succeeded else 1


def _redis_url(base, workdir: Path, stack: ExitStack) -> str:
    """The Redis at REDIS_URL when it answers, else a private one started here (stopped with `stack`)."""
    if redis_answers(base.redis_url):
        say(f"using the Redis at {redact(base.redis_url)}")
        return base.redis_url
    say(f"no Redis answers at {redact(base.redis_url)}; starting a private one")
    return start_redis(stack, workdir)


def _demo_settings(args, base, redis_url: str, stack: ExitStack) -> tuple[Any, Any]:
    """The demo's settings, and the stand-in it started (None with --real: Replicate itself)."""
    from replicate_sim.control import start_sim

    overrides: dict = {"redis_url": redis_url}
    sim = None
    if args.real:
        if not base.replicate_api_token:
            raise SystemExit("[demo] --real needs REPLICATE_API_TOKEN (run `producer init`)")
        say("--real: calling Replicate with your token; this spends money")
        # A separate prefix would split the account's limits from a real fleet: share them.
    else:
        if base.replicate_api_token and not base.replicate_base_url:
            say(
                "a real token is configured but the demo uses the free stand-in (pass --real to use Replicate)"
            )
        sim = start_sim(latency_scale=args.latency_scale, image_scale=0.25)
        stack.callback(sim.stop)
        say(f"started the Replicate stand-in at {sim.url}")
        overrides.update(
            replicate_base_url=sim.url,
            replicate_api_token="r8_demo_stand_in_token",
            key_prefix=args.prefix,
            queue=args.prefix,
        )
    # The demo owns OUTPUT_DIR/demo: running it again replaces its own files (examples/prompts.json
    # names some outputs explicitly), never anything else under OUTPUT_DIR.
    overrides["output_dir"] = Path(base.output_dir).resolve() / "demo"
    return base.with_(**overrides), sim


def _wait_or_cancel(batch, FleetError) -> Any:
    """The batch followed to its end; on Ctrl-C it is canceled first (the workers are about to
    stop: no prediction keeps running, or with --real costing money, for a demo nobody watches)."""
    try:
        return batch.wait(progress=sys.stdout, interval=2.0)
    except KeyboardInterrupt:
        try:
            batch.cancel()
            say(f"canceled batch {batch.id}")
        except FleetError as exc:
            say(f"could not cancel batch {batch.id}: {exc}")
        raise


def _report(batch, snap, settings, base, *, private_redis: bool) -> None:
    """Each item's outcome and files, then where the files, the manifest and the results are."""
    manifest = batch.write_manifest()
    records = batch.results()
    print()
    for record in records:
        files = ", ".join(str(p) for p in batch.output_paths(record)) or (record.get("error") or "")
        print(
            f"  {record['index']:>3} {str(record['id'])[:14]:<14} {record['status']:<10} "
            f"{record.get('model') or '':<34} {files}"
        )
    print()
    say(f"{snap.succeeded}/{snap.total} succeeded in {snap.elapsed:.1f} s")
    say(
        f"files:    {batch.output_root / batch.id}"
        + (
            f" (and the outputs named in the prompts file, under {batch.output_root})"
            if any(not str(r.output).startswith(batch.id + "/") for r in batch.requests or [])
            else ""
        )
    )
    say(f"manifest: {manifest}")
    if not private_redis:
        prefix = "" if settings.key_prefix == base.key_prefix else f"FLEET_KEY_PREFIX={settings.key_prefix} "
        say(f"results:  {prefix}.venv/bin/producer results {batch.id} --json")
    else:
        say("results:  in the manifest (the private Redis stops now)")


def _say_sim_ledger(sim) -> None:
    ledger = sim.ledger(detail=False)
    keys = ("creations", "peak_in_flight", "max_creations_in_window", "rejected_429", "duplicate_inputs")
    say("stand-in ledger: " + json.dumps({k: ledger.get(k) for k in keys}))


def redact(url: str) -> str:
    from shared.redis_conn import redact_url

    return redact_url(url)


if __name__ == "__main__":
    sys.exit(main())
