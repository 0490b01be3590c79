"""Headless Chromium for the browser tests: one run per call, off the network, no profile kept.
Tests that use it are marked `needs("browser")` (tests/support/requirements.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.requirements import chromium_path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # screenshots kept after the run


def chromium(tmp_path: Path, url: str, *extra: str, budget_ms: int = 5000) -> subprocess.CompletedProcess:
    """One headless Chromium run. The flags keep it off the network (this machine has none but
    loopback) and away from any profile, GPU, or sandbox that root cannot use."""
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    argv = [
        chromium_path(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        "--window-size=1400,900",
        *extra,
        url,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90)


def dump_dom(tmp_path: Path, url: str) -> str:
    result = chromium(tmp_path, url, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def served_responses(tmp_path: Path, url: str) -> list[list[str]]:
    """The HTTP response headers (status line first) the browser received loading `url`, read from
    Chromium's own network log."""
    netlog = tmp_path / f"netlog-{len(list(tmp_path.glob('netlog-*')))}.json"
    result = chromium(tmp_path, url, f"--log-net-log={netlog}", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    text = netlog.read_text(errors="replace")
    return [
        re.findall(r'"((?:[^"\\]|\\.)*)"', block)
        for block in re.findall(r'"headers":\[("HTTP/[^\]]*)\]', text)
    ]


def screenshot(tmp_path: Path, url: str, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    result = chromium(tmp_path, url, f"--screenshot={path}")
    assert result.returncode == 0 and path.is_file() and path.stat().st_size > 10_000, result.stderr[-2000:]
    return path
