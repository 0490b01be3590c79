"""The real Redis the tests run on, and the settings that point at it.

The Redis at FLEET_TEST_REDIS_URL (default 127.0.0.1:6379), in the database FLEET_TEST_REDIS_DB
(default 15). Every test gets its own key prefix and queue name and deletes what it wrote, so tests
never touch anyone else's data and several runs can share one server.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from bench.processes import RedisServer, free_port

REDIS_BASE = os.environ.get("FLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
# Under pytest-xdist each test process gets a database of its own (15, 14, ...): Celery's
# broadcasts (inspect, ping) reach every worker on a database, and must only reach this
# process's workers.
_XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_DB = int(os.environ.get("FLEET_TEST_REDIS_DB", "15")) - _XDIST_INDEX


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = f"{REDIS_BASE}/{REDIS_DB}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:  # pragma: no cover - environment problem, not a test result
        pytest.exit(f"the real Redis server is needed at {url}: {exc}", returncode=3)
    return url


@pytest.fixture
def key_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_client(redis_url: str, key_prefix: str):
    """A client on the test database; deletes every key under this test's prefix afterwards."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    delete_prefix(client, key_prefix)
    client.close()


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    # our keys, the limiter's hash-tagged keys, and kombu's bindings of this test's queue
    for pattern in (f"{prefix}*", f"{{{prefix}*", f"_kombu.binding*.{prefix}*"):
        batch = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)


@pytest.fixture(params=[pytest.param("fakeredis", marks=pytest.mark.unit), "redis"])
def redis_or_fakeredis(request, key_prefix: str):
    """Runs the test twice: on fakeredis (a unit test, no server: `make test-fast`) and on the real
    Redis (as redis_client). For logic in Lua scripts, whose rules fakeredis runs with real Lua."""
    if request.param == "redis":
        yield request.getfixturevalue("redis_client")
        return
    import fakeredis

    client = fakeredis.FakeRedis(decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, key_prefix: str, tmp_path):
    from shared.settings import Settings

    return Settings.load(
        {
            "redis_url": redis_url,
            "key_prefix": key_prefix,
            "queue": f"{key_prefix}-q",
            "output_dir": tmp_path / "output",
            "replicate_api_token": "r8_test_token_not_real",
        },
        environ={},
        dotenv_path=None,
    )


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own (append-only, fsync always), for outages: stopped and
    started again on the same port with its data."""
    from tests.support.requirements import need  # a plugin registered after this one

    need("redis-server")
    server = RedisServer(
        "127.0.0.1", free_port(), tmp_path / "private-redis", appendonly=True, appendfsync="always"
    ).start()
    yield server
    server.kill()
