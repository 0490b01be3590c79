"""Start the stand-in as a subprocess and drive its private /_sim endpoints (for tests, benchmarks, demos)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class SimError(RuntimeError):
    """The stand-in did not start, or a control call failed (a tool problem, not a project error)."""


class SimClient:
    """The control endpoints of a stand-in already running at `url`."""

    def __init__(self, url: str, *, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - local URL
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise SimError(
                f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}"
            ) from None

    def health(self) -> dict:
        return self._call("GET", "/_sim/health")

    def ledger(self, *, detail: bool = True) -> dict:
        return self._call("GET", "/_sim/ledger" + ("" if detail else "?detail=0"))

    def events(self, since: int = 0) -> dict:
        """{"events": [...], "next": cursor}: creations, completions, 429s and 5xx with timestamps."""
        return self._call("GET", f"/_sim/events?since={since}")

    def config(self) -> dict:
        return self._call("GET", "/_sim/config")

    def configure(self, **options: Any) -> dict:
        """Change options at run time (limits, latency, failure injection); returns the new config."""
        return self._call("POST", "/_sim/config", options)

    def reset(self, **options: Any) -> dict:
        """Forget every prediction, file and count; optionally change options at the same time."""
        return self._call("POST", "/_sim/reset", options)


class SimProcess(SimClient):
    """A stand-in running in a child process. Use as a context manager or call `.stop()`."""

    def __init__(self, process: subprocess.Popen, url: str, port: int, log_path: Path, workdir: Path):
        super().__init__(url)
        self.process = process
        self.port = port
        self.pid = process.pid
        self.log_path = log_path
        self._workdir = workdir

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; removes the temp dir (and the log, unless `log_path` was given)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SimProcess(url={self.url!r}, pid={self.pid})"


def start_sim(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    python: str | None = None,
    log_path: str | Path | None = None,
    env: dict[str, str] | None = None,
    catalog: str | Path | None = None,
    **options: Any,
) -> SimProcess:
    """Start `python -m replicate_sim` and return once it answers /_sim/health.

    `options` are SimConfig fields (create_limit=5, latency_scale=0.01, model_fail_rates={...}, ...).
    The child writes its real port to a file, so port=0 works; its output goes to `log_path`
    (a temp file by default) so a full pipe can never block it.
    """
    workdir = Path(tempfile.mkdtemp(prefix="replicate-sim-"))
    port_file = workdir / "port.json"
    log_file = Path(log_path) if log_path else workdir / "sim.log"
    argv = [
        python or sys.executable,
        "-m",
        "replicate_sim",
        "--host",
        host,
        "--port",
        str(port),
        "--port-file",
        str(port_file),
    ]
    if options:
        argv += ["--config", json.dumps(options)]
    if catalog:
        argv += ["--catalog", str(catalog)]
    child_env = dict(os.environ if env is None else env)
    # The child must import this very package, wherever the caller runs from.
    package_root = str(Path(__file__).resolve().parent.parent)
    child_env["PYTHONPATH"] = package_root + os.pathsep + child_env.get("PYTHONPATH", "")
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SimError(f"replicate-sim exited with {process.returncode}: {_tail(log_file)}")
        if port_file.exists():
            info = json.loads(port_file.read_text())
            sim = SimProcess(process, info["url"], info["port"], log_file, workdir)
            try:
                sim.health()
                return sim
            except (OSError, SimError):
                pass
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise SimError(f"replicate-sim did not start within {timeout}s: {_tail(log_file)}")


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"
