"""What a worker needs before it takes any task, checked once at start (`celery -A workers worker`).

A worker that cannot work must not say "ready": without a token every task would die in its log
while `submit --wait` shows "queued" for minutes; with an unwritable output location it would
create (and pay for) predictions it cannot write. So, before Celery consumes anything:

- the Replicate token is set;
- Redis (broker, ledger, limiter) answers;
- the worker's output location (OUTPUT_DIR: a folder or an object store, through shared.storage)
  takes a probe object, as every output will be written (batches recorded with a location of
  their own are written there; it was probed by the producer at submit);
- the account answers the token: one cheap authenticated GET of /v1/account (a read of the
  account's budget, once per start). A refused token or an address where nothing answers stops
  the start; a 429 or 5xx does not (the API is there and busy or in trouble: a fleet restarted
  during an incident must come back by itself), it is reported as a warning instead.

The first that fails is raised as a ConfigError whose message is one line naming the setting;
the worker prints it and exits non-zero (workers.celery_app), like `producer flower` without auth.
"""

from __future__ import annotations

from shared.account import check_token
from shared.errors import ApiUnreachableError, ConfigError, InputError, StorageError, StorageUnavailableError
from shared.redis_conn import connect
from shared.settings import Settings
from shared.storage import open_store, probe

ACCOUNT_TIMEOUT = 10.0  # seconds for the account GET: a start-up check, not a task


def check_can_work(settings: Settings) -> str:
    """What the account said ("account replicate-sim", or why it could not be verified) when this
    worker can work; ConfigError (one line) when it cannot."""
    token = (settings.replicate_api_token or "").strip()
    if not token:
        raise ConfigError(
            "REPLICATE_API_TOKEN is not set: this worker could not call Replicate "
            "(set it in the environment or in .env, e.g. with `producer init`)"
        )
    client = connect(settings)  # RedisUnavailableError (a FleetError) names the redacted URL
    client.close()
    location = str(settings.output_dir)
    try:
        probe(open_store(location, environ=settings.store_environ(), timeout=settings.store_timeout))
    except (StorageError, StorageUnavailableError, OSError) as exc:
        raise ConfigError(f"OUTPUT_DIR {location} cannot be written: {exc}") from None
    try:
        account = check_token(token, settings.replicate_base_url, timeout=ACCOUNT_TIMEOUT)
    except InputError as exc:
        raise ConfigError(f"REPLICATE_API_TOKEN: {exc.problems[0].message}") from None
    except ApiUnreachableError as exc:
        if exc.status is not None and (exc.status == 429 or exc.status >= 500):
            return f"account not verified ({exc})"
        raise ConfigError(f"the Replicate API does not answer (REPLICATE_BASE_URL): {exc}") from None
    return f"account {account.get('username') or '?'}"
