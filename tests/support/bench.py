"""Helpers for the bench tests: hosts named after this test process, on a subnet of their own,
so a test run never disturbs a benchmark run (prefix `fbench`, 10.77.0.0/24) or another test run."""

from __future__ import annotations

import os

from bench.hosts import Hosts, cleanup_dead_owners
from tests.support.requirements import required

FAMILY = "fbt"


def make_test_hosts(count: int, *, isolate: bool | None = None, **kwargs) -> Hosts:
    """Network-namespace hosts where permitted, else plain processes; where namespaces are required
    (CI), never plain processes: Hosts raises instead."""
    if isolate is None and required("netns"):
        isolate = True
    cleanup_dead_owners(FAMILY)  # what crashed test runs left behind
    pid = os.getpid()
    return Hosts(
        count, prefix=f"{FAMILY}{pid}", subnet=f"10.78.{pid % 250}", quiet=True, isolate=isolate, **kwargs
    )
