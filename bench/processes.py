"""What the bench harness and the test suite both need to run servers and workers as processes."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (the kernel's pick; bound and released at once, so use it soon)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
