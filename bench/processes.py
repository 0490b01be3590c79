"""The processes the bench harness and the test suite both start: `celery -A workers worker`
processes and redis-server, each in a process group of its own, with its output in a log file.

    env = worker_env(settings, sim_url=sim.url)
    worker = ChildProcess.start("w1", worker_argv(settings, "w1@%h", concurrency=16), log_path, env=env)
    wait_workers_ready(settings, [worker])
    worker.kill()                                  # SIGKILL the group: a crash
    server = RedisServer("127.0.0.1", free_port(), workdir, appendonly=True).start()
    server.restart(sig=signal.SIGKILL)             # the same port and data directory

Every process started here is tracked: `kill_tracked()` (atexit, in bench/hosts.py) kills what a
crashed run would otherwise leave behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

_tracked: list[subprocess.Popen] = []
_tracked_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (the kernel's pick; bound and released at once, so use it soon)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def log_tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


def track(proc: subprocess.Popen) -> subprocess.Popen:
    with _tracked_lock:
        _tracked.append(proc)
    return proc


def kill_tracked() -> None:
    """SIGKILL the process group of every tracked process still running (the last safety net)."""
    with _tracked_lock:
        for proc in _tracked:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def stop_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` s; returns once the process is gone."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class ChildProcess:
    """A process in its own group, its output in `log_path`."""

    name: str
    proc: subprocess.Popen
    log_path: Path

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> ChildProcess:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,
            )
        return cls(name, track(proc), Path(log_path))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group (the process and anything it started); after SIGKILL, reap it."""
        if not self.alive():
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGKILL:
            self.proc.wait(15)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a warm shutdown for a worker), then SIGKILL after `timeout` s."""
        stop_group(self.proc, grace=timeout)

    def log(self, tail: int | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text if tail is None else text[-tail:]


def stop_all(processes: Iterable[ChildProcess], timeout: float = 10.0) -> None:
    """SIGTERM every one at once, then wait for them together; SIGKILL what outlives `timeout`."""
    processes = [p for p in processes if p.alive()]
    for process in processes:
        process.kill(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill(signal.SIGKILL)


def worker_env(settings: Any, *, sim_url: str | None = None, **overrides: Any) -> dict[str, str]:
    """A worker's environment: this process's without any REPLICATE_/FLEET_/CELERY_ variable or
    REDIS_URL (nothing of the caller's own configuration leaks in), then `settings`, the stand-in's
    URL and `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FLEET_", "CELERY_"))}
    env.pop("REDIS_URL", None)
    env.update(settings.as_env())
    if sim_url:
        env["REPLICATE_BASE_URL"] = sim_url
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def worker_argv(settings: Any, name: str, *, concurrency: int, loglevel: str = "INFO") -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "worker",
        "-n",
        name,
        "-c",
        str(concurrency),
        "--pool",
        "threads",
        "-Q",
        settings.queue,
        "--without-mingle",
        "--without-gossip",
        "-l",
        loglevel,
    ]


def wait_workers_ready(
    settings: Any, workers: Sequence[ChildProcess], *, want: int | None = None, timeout: float = 30.0
) -> list[str]:
    """Until `want` workers (default: every live one) answer a ping on the queue; fails at once, with
    its log, if one of them exits by itself (not SIGKILLed on purpose)."""
    from workers.dispatch import workers_alive

    want = len([w for w in workers if w.alive()]) if want is None else want
    deadline = time.monotonic() + timeout
    names: list[str] = []
    while time.monotonic() < deadline:
        dead = [w for w in workers if not w.alive() and w.proc.returncode != -signal.SIGKILL]
        if dead:
            raise RuntimeError(
                f"worker {dead[0].name} exited with {dead[0].proc.returncode}:\n{dead[0].log(3000)}"
            )
        names = workers_alive(settings, timeout=1.0)
        if len(names) >= want:
            return names
    logs = "\n".join(f"===== {w.name} =====\n{w.log(3000)}" for w in workers)
    raise RuntimeError(f"only {len(names)} of {want} workers answered within {timeout} s:\n{logs}")


@dataclass
class RedisServer:
    """A redis-server of our own: persistence per `appendonly`/`appendfsync`; restarted on the same
    port and directory (its append-only file, if enabled)."""

    host: str
    port: int
    workdir: Path
    appendonly: bool
    appendfsync: str = "everysec"
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            "redis-server",
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--dir",
            str(self.workdir),
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--maxclients",
            "10000",
            "--logfile",
            str(self.workdir / "redis.log"),
            *self.extra,
        ]
        self.process = track(
            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: "
                    f"{log_tail(self.workdir / 'redis.log', 1500)}"
                )
            if self.ping():  # also waits out an AOF reload after a restart (PING answers LOADING until then)
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on {self.host}:{self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """SIGKILL: a crash. SIGTERM: a clean shutdown (the append-only file is synced first)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def restart(self, *, down_for: float = 0.0, sig: int = signal.SIGKILL) -> float:
        """Kill (SIGKILL by default: a crash, not a clean shutdown), stay down `down_for` s, start
        again from the same directory. Returns the seconds it was unreachable."""
        began = time.monotonic()
        self.kill(sig)
        if down_for > 0:
            time.sleep(down_for)
        self.start()
        return time.monotonic() - began

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def client(self, **kwargs: Any):
        import redis

        kwargs.setdefault("decode_responses", True)
        return redis.Redis(host=self.host, port=self.port, **kwargs)
