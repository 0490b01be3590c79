"""Settings from the environment and `.env`, read when asked for, never at import time.

`Settings.load()` reads `.env` (python-dotenv, without touching `os.environ`) under the real
environment, then applies explicit overrides (CLI flags, tests). The token is kept out of `repr`.
An object store's own variables (AWS_*, AZURE_*, GOOGLE_*, STORAGE_EMULATOR_HOST) in `.env` are
kept too, out of `repr`, for `store_environ()`: the environment a store is opened with.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from shared.errors import ConfigError

WAIT_MODES = ("sync", "webhook", "poll")


def boolean(raw: str) -> bool:
    """1/true/yes/on or 0/false/no/off, any case; anything else is a mistake worth saying."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def usd_amount(raw: str) -> Decimal:
    """REPLICATE_DAILY_BUDGET: USD, kept as its decimal text (money is never a float)."""
    from shared.budget.money import parse_usd

    parse_usd(raw)  # ValueError for a negative, non-finite or absurd amount
    return Decimal(raw.strip().lstrip("$").strip())


def _store_variable(name: str) -> bool:
    return name.startswith(("AWS_", "AZURE_", "GOOGLE_")) or name == "STORAGE_EMULATOR_HOST"


# env name -> (attribute, parser)
_ENV: dict[str, tuple[str, Any]] = {
    "REDIS_URL": ("redis_url", str),
    "REPLICATE_API_TOKEN": ("replicate_api_token", str),
    "REPLICATE_BASE_URL": ("replicate_base_url", lambda raw: api_base_url(raw)),
    "REPLICATE_GLOBAL_MAX_CONCURRENT": ("concurrency_limit", int),
    "REPLICATE_CREATE_LIMIT": ("create_limit", int),
    "REPLICATE_READ_LIMIT": ("read_limit", int),
    "REPLICATE_RATE_WINDOW": ("rate_window", float),
    "REPLICATE_DAILY_BUDGET": ("daily_budget", usd_amount),
    "OUTPUT_DIR": ("output_dir", lambda raw: output_location(raw)),
    "FLEET_KEY_PREFIX": ("key_prefix", str),
    "FLEET_LEASE_SECONDS": ("lease_seconds", float),
    "FLEET_VISIBILITY_TIMEOUT": ("visibility_timeout", int),
    "FLEET_PREDICTION_TIMEOUT": ("prediction_timeout", float),
    "FLEET_MAX_TRANSIENT_RETRIES": ("max_transient_retries", int),
    "FLEET_MAX_DOWNLOAD_BYTES": ("max_download_bytes", int),
    "FLEET_ALLOW_PRIVATE_OUTPUT_URLS": ("allow_private_output_urls", boolean),
    "FLEET_LOG_LEVEL": ("log_level", str),
    "FLEET_LOG_JSON": ("log_json", lambda raw: raw.strip().lower() in ("1", "true", "yes", "on")),
    "FLEET_QUEUE": ("queue", str),
    "FLEET_MODELS_FILE": ("models_file", Path),
    "FLEET_SCHEMA_TTL": ("schema_ttl", float),
    "FLEET_WORKER_CONCURRENCY": ("worker_concurrency", int),
    "FLEET_FEED_WINDOW": ("feed_window", int),
    "FLEET_WEBHOOK_URL": ("webhook_url", str),
    "FLEET_WAIT_MODE": ("wait_mode", str),
    "FLEET_SYNC_WAIT_MAX": ("sync_wait_max", int),
    "REPLICATE_WEBHOOK_SECRET": ("webhook_secret", str),
    "FLEET_WEBHOOK_LISTEN": ("webhook_listen", str),
    "FLEET_BATCH_RETENTION_DAYS": ("batch_retention_days", float),
    "FLEET_HTTP_TIMEOUT": ("http_timeout", float),
    "FLEET_STORE_TIMEOUT": ("store_timeout", float),
    "FLEET_REDIS_RIDE_OUT": ("redis_ride_out", float),
    "FLEET_REDIS_SENTINEL_MASTER": ("redis_sentinel_master", str),
    "FLEET_REDIS_SENTINEL_PASSWORD": ("redis_sentinel_password", str),
}


def api_base_url(raw: str) -> str:
    """REPLICATE_BASE_URL as the official client wants it: the host part, without the `/v1` that
    Replicate's own documentation shows in its URLs (`https://api.replicate.com/v1` works too)."""
    url = raw.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def output_location(raw: str) -> Path | str:
    """OUTPUT_DIR: an object-store URL stays text (a Path would fold `s3://b` into `s3:/b`)."""
    return raw if "://" in raw else Path(raw)


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    replicate_api_token: str | None = field(default=None, repr=False)
    replicate_base_url: str | None = None  # None: the official client's default (Replicate)
    # The account's limits, enforced for the whole fleet by shared.limiter: predictions in
    # flight, and creations and other API calls per rate window (seconds).
    concurrency_limit: int = 60
    create_limit: int = 600
    read_limit: int = 3000
    rate_window: float = 60.0
    # USD the whole fleet may spend per UTC day (shared.budget); None: no daily budget. Seeds
    # the fleet's budget in Redis when none is set there; `producer budget set/clear` wins.
    daily_budget: Decimal | None = None
    # A local folder (Path) or an object-store URL (str: s3://bucket/prefix, gs://..., az://...).
    output_dir: Path | str = Path("./output")
    key_prefix: str = "fleet"  # every Redis key of ours starts with this
    lease_seconds: float = 30.0  # slot lease; renewed every lease/3 while held
    visibility_timeout: int = 3600  # Redis broker: redelivery of unacked tasks after this
    prediction_timeout: float = 1800.0  # Replicate itself stops predictions after 30 min
    max_transient_retries: int = 8
    max_download_bytes: int = 200 * 1024 * 1024
    # Output URLs (and their redirects) on loopback, private, link-local or metadata addresses:
    # None = refused unless REPLICATE_BASE_URL is on such an address itself (the stand-in);
    # True = allowed; False = always refused (workers/download.py).
    allow_private_output_urls: bool | None = None
    log_level: str = "INFO"
    log_json: bool = False  # one JSON object per line instead of key=value
    queue: str = "fleet"
    models_file: Path | None = None  # extra model registry file layered over the built-in one
    # Seconds a model's published schema stays in Redis for the whole fleet before it is read again.
    schema_ttl: float = 3600.0
    worker_concurrency: int | None = None  # threads per worker process (None: the workers' default)
    # Messages the feeder keeps in the broker's queue at most (workers.feeder): enough for the
    # threads that free up between two refills, few enough that a new batch waits behind little.
    feed_window: int = 8
    # Public URL of the webhook receiver (workers/webhook_receiver.py). Set: predictions are created
    # with a webhook and workers learn of their end at once; unset: workers poll on the read budget.
    webhook_url: str | None = None
    # How workers learn that a prediction ended (see `wait_mode_in_use`): "sync" (create with
    # `Prefer: wait`, the rest polled, or told by the webhook when FLEET_WEBHOOK_URL is set),
    # "webhook" (needs FLEET_WEBHOOK_URL) or "poll". None: webhook with a URL, else sync.
    wait_mode: str | None = None
    # Longest `Prefer: wait` of a sync create (1-60 s, Replicate's most). The wait of each model is
    # chosen from its learned duration below this; it also bounds how long a create's prediction
    # can be unknown to its worker (the settling window grows by it).
    sync_wait_max: int = 60
    webhook_secret: str | None = field(default=None, repr=False)  # None: the receiver asks Replicate
    webhook_listen: str = "0.0.0.0:8785"  # where the receiver listens (host:port)
    # Seconds each phase of a call to Replicate may take (connect: at most 5); it also bounds how
    # long a creation POST can be in flight, which the reconciliation waits out.
    http_timeout: float = 15.0
    # Seconds one request to an object store (OUTPUT_DIR=s3://...) may take, whole object included;
    # a write that runs out is tried again later (never a new prediction).
    store_timeout: float = 30.0
    # Seconds each Redis command of a worker keeps retrying through a Redis restart or failover
    # before the task sees the outage (and waits for Redis, then runs the attempt again).
    redis_ride_out: float = 20.0
    # Finished batches are forgotten by Redis this long after their creation (0: kept for ever);
    # the manifest next to the outputs stays.
    batch_retention_days: float = 30.0
    # With REDIS_URL=sentinel://...: the primary's name, and the Sentinels' own password if any.
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: str | None = field(default=None, repr=False)
    # The object-store variables `.env` holds (credentials among them): see store_environ().
    dotenv_store: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        dotenv_path: str | os.PathLike | None = ".env",
    ) -> Settings:
        """Defaults < `.env` < environment < overrides (attribute names, None values ignored)."""
        merged: dict[str, str] = {}
        if dotenv_path is not None and Path(dotenv_path).is_file():
            merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        values: dict[str, Any] = {"dotenv_store": {k: v for k, v in merged.items() if _store_variable(k)}}
        merged.update(os.environ if environ is None else environ)
        for name, (attr, parse) in _ENV.items():
            raw = merged.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[attr] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not a valid {parse.__name__}") from exc
        known = {f.name for f in fields(cls)}
        for attr, value in (overrides or {}).items():
            if attr not in known:
                raise ConfigError(f"unknown setting {attr!r}")
            if value is not None:
                values[attr] = value
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss://, unix:// or sentinel://")
        for attr in ("concurrency_limit", "create_limit", "read_limit"):
            if getattr(self, attr) < 1:
                raise ConfigError(f"{attr} must be at least 1, got {getattr(self, attr)}")
        if self.http_timeout <= 0:
            raise ConfigError("FLEET_HTTP_TIMEOUT must be positive")
        if self.store_timeout <= 0:
            raise ConfigError("FLEET_STORE_TIMEOUT must be positive")
        if not 0 < self.redis_ride_out <= 600:
            raise ConfigError("FLEET_REDIS_RIDE_OUT must be between 0 and 600 seconds")
        if self.batch_retention_days < 0:
            raise ConfigError("FLEET_BATCH_RETENTION_DAYS must be >= 0 (0 keeps batches for ever)")
        if self.schema_ttl <= 0:
            raise ConfigError("FLEET_SCHEMA_TTL must be positive (seconds)")
        if self.rate_window <= 0 or self.lease_seconds <= 0:
            raise ConfigError("rate_window and lease_seconds must be positive")
        if self.feed_window < 1:
            raise ConfigError(f"FLEET_FEED_WINDOW must be at least 1, got {self.feed_window}")
        if self.worker_concurrency is not None and self.worker_concurrency < 1:
            raise ConfigError(f"worker_concurrency must be at least 1, got {self.worker_concurrency}")
        if self.wait_mode not in (None, *WAIT_MODES):
            raise ConfigError(
                f"FLEET_WAIT_MODE must be one of {', '.join(WAIT_MODES)}, got {self.wait_mode!r}"
            )
        if self.wait_mode == "webhook" and not self.webhook_url:
            raise ConfigError("FLEET_WAIT_MODE=webhook needs FLEET_WEBHOOK_URL")
        if self.wait_mode == "poll" and self.webhook_url:
            raise ConfigError(
                "FLEET_WAIT_MODE=poll ignores webhooks: unset FLEET_WEBHOOK_URL (or choose sync/webhook)"
            )
        if not 1 <= self.sync_wait_max <= 60:
            raise ConfigError(
                f"FLEET_SYNC_WAIT_MAX must be 1-60 seconds (Replicate's range), got {self.sync_wait_max}"
            )
        if self.webhook_url is not None and not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError(f"FLEET_WEBHOOK_URL must be an http(s) URL, got {self.webhook_url!r}")
        if "://" in str(self.output_dir):
            from shared.storage.location import parse_location

            parse_location(str(self.output_dir))  # ConfigError for a scheme no store serves
        host, sep, port = self.webhook_listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"FLEET_WEBHOOK_LISTEN must be host:port, got {self.webhook_listen!r}")

    @property
    def daily_budget_micro(self) -> int | None:
        """REPLICATE_DAILY_BUDGET in micro-dollars (None: not set)."""
        from shared.budget.money import parse_usd

        return None if self.daily_budget is None else parse_usd(self.daily_budget)

    def store_environ(self) -> dict[str, str]:
        """What an object store is opened with: its variables from `.env` under the environment
        (the same order as every setting), so credentials may live in either."""
        return {**self.dotenv_store, **os.environ}

    @property
    def wait_mode_in_use(self) -> str:
        """How workers learn a prediction's end: FLEET_WAIT_MODE, else "webhook" when a webhook URL
        is set, else "sync" (measured fastest without webhooks: BENCHMARKS.md, "Wait modes")."""
        if self.wait_mode is not None:
            return self.wait_mode
        return "webhook" if self.webhook_url else "sync"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables (to hand to a child process)."""
        env = {}
        for name, (attr, _) in _ENV.items():
            value = getattr(self, attr)
            if value is not None:
                env[name] = str(value)
        return env
