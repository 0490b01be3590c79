"""The unit tier: what `make test-fast` runs, in seconds.

A test marked `unit` checks logic that needs no server and no process: parsing, routing, the
model registry, settings, progress arithmetic, and the ledger's Lua rules on fakeredis (the same
tests run again on the real Redis in the full suite: fakeredis is never the only proof). A unit
test that asks for a server or a process fails at once, so the tier stays fast and honest.
"""

from __future__ import annotations

import pytest

SERVER_FIXTURES = frozenset(
    {
        "redis_url",
        "redis_client",
        "settings",  # the real Redis (settings point at it)
        "sim",
        "sim_factory",
        "worker_factory",
        "stub_fleet",
        "children",
        "moto_s3",
        "s3_bucket",
    }
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("unit") is None:
        return
    servers = sorted(SERVER_FIXTURES & set(item.fixturenames))
    if servers:
        pytest.fail(
            f"a unit test needs no server or process, but this one uses {', '.join(servers)}: "
            "drop the unit mark, or use fakeredis (redis_or_fakeredis)",
            pytrace=False,
        )
