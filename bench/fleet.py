"""The real fleet on the harness's hosts: `celery -A workers worker` processes spread over the
namespaces, a batch submitted through the producer API, and the per-process cost read from /proc.

    fleet = Fleet(hosts, settings, sim_url=sim.url, workers_per_host=1, concurrency=32)
    fleet.start(); fleet.wait_ready()
    run = fleet.submit(prompts, model=...)      # -> batch id, started at
    fleet.wait_finished(batch_id, timeout=...)  # polls the ledger, returns when every item is terminal
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.hosts import Hosts
from bench.processes import ChildProcess, free_port, stop_all, wait_workers_ready, worker_argv, worker_env
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_TOKEN = "r8_bench_not_a_real_token"  # the stand-in takes any token


@dataclass
class ProcStats:
    """CPU seconds (user+system, the process and its reaped children) and peak RSS of one process."""

    cpu_seconds: float
    peak_rss_bytes: int

    @classmethod
    def read(cls, pid: int) -> ProcStats | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        # fields[0] is state (field 3); utime=14, stime=15, cutime=16, cstime=17 (1-based)
        cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
        hwm = 0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
        return cls(cpu, hwm)


def worker_pid(proc: subprocess.Popen) -> int:
    """The celery process itself: `ip netns exec` exec()s into it (and libfaketime is preloaded,
    not a wrapper process), so it is proc.pid."""
    return proc.pid


@dataclass
class WorkerHandle(ChildProcess):
    """A worker (or the webhook receiver) of the fleet, on host `host`, with its last CPU/RSS sample."""

    host: int = 0
    clock_offset: float | None = None
    last_stats: ProcStats | None = None

    def sample(self) -> ProcStats | None:
        stats = ProcStats.read(worker_pid(self.proc)) if self.alive() else None
        if stats is not None:
            self.last_stats = stats
        return self.last_stats

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.sample()  # its cost so far, before it is gone
        super().kill(sig)


@dataclass
class Fleet:
    hosts: Hosts
    settings: Settings
    sim_url: str
    workers_per_host: int = 1
    concurrency: int = 32
    log_dir: Path | None = None
    host_indexes: list[int] | None = None  # default: every host
    clock_offsets: dict[int, float] = field(default_factory=dict)  # host -> seconds ahead
    loglevel: str = "WARNING"
    webhooks: bool = False  # run a webhook receiver and have the workers ask Replicate for webhooks
    workers: list[WorkerHandle] = field(default_factory=list)
    retired: list[WorkerHandle] = field(default_factory=list)  # killed ones, for the cost totals

    def __post_init__(self) -> None:
        self.log_dir = Path(self.log_dir or self.hosts.workdir / "logs")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = worker_env(self.settings, sim_url=self.sim_url, REPLICATE_API_TOKEN=BENCH_TOKEN)
        self._serial = 0
        self.receiver: WorkerHandle | None = None

    def start(self) -> None:
        if self.webhooks:
            self.start_receiver()
        for host in self.host_indexes or [h.index for h in self.hosts.hosts]:
            for _ in range(self.workers_per_host):
                self.start_worker(host)

    def start_worker(self, host: int) -> WorkerHandle:
        self._serial += 1
        name = f"w{self._serial}-h{host}-{self.settings.key_prefix}@bench"
        log_path = self.log_dir / f"worker-{self._serial}-h{host}.log"
        argv = worker_argv(self.settings, name, concurrency=self.concurrency, loglevel=self.loglevel)
        offset = self.clock_offsets.get(host)
        proc = self.hosts.popen(
            host, argv, env=self.env, log_path=log_path, cwd=REPO_ROOT, clock_offset=offset
        )
        worker = WorkerHandle(name, proc, log_path, host=host, clock_offset=offset)
        self.workers.append(worker)
        return worker

    def start_receiver(self, timeout: float = 15.0) -> WorkerHandle:
        """`python -m workers.webhook_receiver` in the root namespace, on the address the stand-in
        reaches; the workers then create predictions with its URL (FLEET_WEBHOOK_URL)."""
        import httpx

        address = self.hosts.server_address
        port = free_port(address)
        env = worker_env(
            self.settings,
            sim_url=self.sim_url,
            REPLICATE_API_TOKEN=BENCH_TOKEN,
            FLEET_WEBHOOK_LISTEN=f"{address}:{port}",
        )
        log_path = self.log_dir / "webhook-receiver.log"
        started = ChildProcess.start(
            "webhook-receiver",
            [sys.executable, "-m", "workers.webhook_receiver"],
            log_path,
            env=env,
            cwd=REPO_ROOT,
        )
        self.hosts.processes.append(started.proc)
        self.receiver = WorkerHandle(started.name, started.proc, log_path)
        proc = started.proc
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"http://{address}:{port}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"webhook receiver did not start:\n{self.receiver.log(3000)}")
            time.sleep(0.1)
        self.env["FLEET_WEBHOOK_URL"] = f"http://{address}:{port}/webhooks/replicate"
        return self.receiver

    def alive(self) -> list[WorkerHandle]:
        return [w for w in self.workers if w.alive()]

    def wait_ready(self, timeout: float = 60.0) -> list[str]:
        return wait_workers_ready(
            self.settings, [w for w in self.workers if w not in self.retired], timeout=timeout
        )

    def kill_random(self, rng: random.Random, *, restart: bool = True) -> WorkerHandle | None:
        """SIGKILL one live worker (a crash); start a replacement on the same host if asked."""
        live = self.alive()
        if not live:
            return None
        victim = rng.choice(live)
        victim.kill(signal.SIGKILL)
        self.retired.append(victim)
        if restart:
            self.start_worker(victim.host)
        return victim

    def sample(self) -> None:
        for worker in self._processes():
            worker.sample()

    def _processes(self) -> list[WorkerHandle]:
        return self.workers + ([self.receiver] if self.receiver is not None else [])

    def cost(self) -> dict[str, Any]:
        """CPU seconds (workers and webhook receiver) and peak RSS (per worker) of every process
        this fleet ran (killed ones included, as of their last sample)."""
        self.sample()
        stats = [w.last_stats for w in self.workers if w.last_stats is not None]
        receiver = self.receiver.last_stats if self.receiver is not None else None
        return {
            "worker_processes": len(self.workers),
            "receiver_cpu_seconds": round(receiver.cpu_seconds, 2) if receiver else 0.0,
            "cpu_seconds": round(
                sum(s.cpu_seconds for s in stats) + (receiver.cpu_seconds if receiver else 0), 2
            ),
            "peak_rss_bytes_max": max((s.peak_rss_bytes for s in stats), default=0),
            "peak_rss_bytes_sum": sum(s.peak_rss_bytes for s in stats),
        }

    def stop(self) -> None:
        self.sample()
        stop_all(self._processes(), timeout=15)

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"===== {w.name} =====\n{w.log(tail)}" for w in self.workers)


def submit(
    settings: Settings,
    prompts: list[str] | list[dict[str, str]],
    *,
    model: str,
    batch_id: str | None = None,
    params: dict | None = None,
) -> str:
    from producer.api import submit as producer_submit

    batch = producer_submit(prompts, settings=settings, model=model, batch_id=batch_id, params=params)
    return batch.id


def wait_finished(
    settings: Settings,
    batch_id: str,
    *,
    timeout: float,
    poll: float = 0.2,
    on_tick: Callable[[float, Any], None] | None = None,
    redis_client: Any = None,
) -> tuple[bool, float, Any]:
    """Poll the ledger until the batch is finished. Returns (finished, when (time.time()), info).
    Redis errors (a restart under test) are waited out, not raised."""
    import redis

    from shared.keys import Keys
    from shared.ledger import Ledger

    client = redis_client or redis.Redis.from_url(
        settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
    )
    ledger = Ledger(client, Keys(settings.key_prefix))
    deadline = time.monotonic() + timeout
    info = None
    polls = 0
    while time.monotonic() < deadline:
        try:
            info = ledger.batch(batch_id)
            polls += 1
        except redis.RedisError:
            info = None
        now = time.time()
        if on_tick is not None:
            on_tick(now, info)
        if info is not None and info.finished:
            wait_finished.polls = polls  # type: ignore[attr-defined]
            return True, now, info
        time.sleep(poll)
    wait_finished.polls = polls  # type: ignore[attr-defined]
    return False, time.time(), info
