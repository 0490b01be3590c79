"""`producer flower`: Flower against the fleet's broker, with authentication on.

Flower runs as `celery -A workers flower` in a child process, configured only through its
environment, so no secret shows up in `ps`: the broker URL (which carries the Redis password) goes
in CELERY_BROKER_URL, the basic-auth credentials in FLOWER_BASIC_AUTH. The Replicate token is
removed from the child's environment: Flower never needs it, so it cannot show it.

What Flower shows and why the token is not in it:
- task arguments: the workers send `argsrepr`/`kwargsrepr` (batch, item, model, prompt start);
- the broker URL (Broker page, worker pages): Flower and Celery print it with the password masked;
- a worker's configuration (worker page, "Config" tab, from `inspect conf`): Celery censors every
  key matching API|TOKEN|KEY|SECRET|PASS|SIGNATURE|DATABASE, and the workers keep the token out of
  the Celery config anyway (it lives in Settings);
- a worker's broker connection info (`inspect stats`): Celery 5.6+ drops the password;
- `/metrics` and `/healthcheck` are unauthenticated in Flower 2.x by design: they carry task names,
  worker names and counts only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigError
from shared.settings import Settings

DEFAULT_PORT = 5555
# Flower's pages need its login, but /metrics and /healthcheck do not: listen on this host only
# unless told otherwise (compose passes 0.0.0.0 inside its container and publishes the port on
# FLOWER_BIND, 127.0.0.1 by default). Expose it further only behind a TLS reverse proxy.
DEFAULT_ADDRESS = "127.0.0.1"
# Environment variables the Flower child must not inherit.
_SECRET_ENV = (
    "REPLICATE_API_TOKEN",
    "REPLICATE_WEBHOOK_SECRET",
    "FLOWER_BASIC_AUTH",
    "CELERY_BROKER_URL",
    "FLOWER_OAUTH2_SECRET",
    "FLEET_REDIS_SENTINEL_PASSWORD",
)


@dataclass(frozen=True)
class FlowerCommand:
    argv: list[str]
    env: dict[str, str]


def check_basic_auth(basic_auth: str | Sequence[str] | None) -> str:
    """`user:password` (several separated by commas); Flower without auth is refused."""
    if basic_auth is None or basic_auth == "" or basic_auth == []:
        raise ConfigError(
            "Flower needs basic auth: set FLOWER_BASIC_AUTH=user:password (or pass --basic-auth)"
        )
    pairs = [basic_auth] if isinstance(basic_auth, str) else list(basic_auth)
    pairs = [p.strip() for chunk in pairs for p in chunk.split(",") if p.strip()]
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise ConfigError("each basic-auth entry must be user:password (the password cannot be empty)")
    return ",".join(pairs)


def flower_command(
    settings: Settings,
    port: int = DEFAULT_PORT,
    basic_auth: str | Sequence[str] | None = None,
    persistent_path: str | os.PathLike | None = None,
    *,
    address: str = DEFAULT_ADDRESS,
    purge_offline_workers: int | None = 600,
    url_prefix: str | None = None,
    tasks_columns: str | None = "name,uuid,state,args,received,started,runtime,worker",
    extra_args: Sequence[str] = (),
    base_env: Mapping[str, str] | None = None,
    app: str = "workers",
) -> FlowerCommand:
    """The argv and environment that start Flower; no secret is in the argv."""
    auth = check_basic_auth(basic_auth)
    if not address:
        raise ConfigError("Flower needs an address to listen on (127.0.0.1, or 0.0.0.0 for every interface)")
    env = {k: v for k, v in (os.environ if base_env is None else base_env).items() if k not in _SECRET_ENV}
    # The workers' settings (key prefix, queue...) without the token: the app module may read them.
    env.update({k: v for k, v in settings.as_env().items() if k not in _SECRET_ENV})
    env["CELERY_BROKER_URL"] = settings.redis_url
    env["FLOWER_BASIC_AUTH"] = auth
    # Celery loads `-A workers` from the current directory; keep the project importable.
    project_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH", "")) if p)

    argv = [sys.executable, "-m", "celery", "-A", app, "flower", f"--port={port}", f"--address={address}"]
    if persistent_path is not None:
        path = Path(persistent_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Save every 60 s as well as on exit, so a SIGKILL loses at most a minute of history.
        argv += ["--persistent=True", f"--db={path}", "--state_save_interval=60000"]
    if purge_offline_workers:
        # `--scale worker=N` up and down leaves dead worker names behind otherwise.
        argv.append(f"--purge_offline_workers={int(purge_offline_workers)}")
    if tasks_columns:
        # The args column shows the workers' argsrepr (batch, item, model, prompt start).
        argv.append(f"--tasks_columns={tasks_columns}")
    if url_prefix:
        argv.append(f"--url_prefix={url_prefix}")
    argv += list(extra_args)
    return FlowerCommand(argv=argv, env=env)


def start_flower(
    settings: Settings,
    port: int = DEFAULT_PORT,
    basic_auth: str | Sequence[str] | None = None,
    persistent_path: str | os.PathLike | None = None,
    **options,
) -> subprocess.Popen:
    """Start Flower in the background (tests, the demo); stop it with `.terminate()`."""
    stdout = options.pop("stdout", None)
    stderr = options.pop("stderr", None)
    command = flower_command(settings, port, basic_auth, persistent_path, **options)
    return subprocess.Popen(command.argv, env=command.env, stdout=stdout, stderr=stderr)


def run_flower(
    settings: Settings,
    port: int = DEFAULT_PORT,
    basic_auth: str | Sequence[str] | None = None,
    persistent_path: str | os.PathLike | None = None,
    **options,
) -> int:
    """Run Flower in the foreground until it exits or we get SIGINT/SIGTERM (passed on to it, so
    it saves its persistent state). Returns Flower's exit code."""
    process = start_flower(settings, port, basic_auth, persistent_path, **options)

    def forward(signum, _frame):
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
