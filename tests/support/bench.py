"""Helpers for the bench tests: hosts named after this test process, on a subnet of their own,
so a test run never disturbs a benchmark run (prefix `fbench`, 10.77.0.0/24) or another test run."""
from __future__ import annotations

import os

import pytest

from bench.hosts import Hosts, cleanup_dead_owners, namespaces_permitted

FAMILY = "fbt"


def make_test_hosts(count: int, **kwargs) -> Hosts:
    cleanup_dead_owners(FAMILY)  # what crashed test runs left behind
    pid = os.getpid()
    return Hosts(count, prefix=f"{FAMILY}{pid}", subnet=f"10.78.{pid % 250}", quiet=True, **kwargs)


def require_namespaces() -> None:
    ok, why = namespaces_permitted()
    if not ok:
        pytest.skip(f"network namespaces not permitted here: {why}")
