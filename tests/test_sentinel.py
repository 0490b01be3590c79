"""Redis Sentinel: the fleet's clients (limiter, ledger, Celery broker) find the primary through a
real Sentinel, and follow it when Sentinel fails over to the replica.

Starts its own primary, replica and Sentinel (`redis-server --sentinel`) on free ports: needs
redis-server (tests/support/requirements.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from bench.processes import ChildProcess, free_port
from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter
from shared.redis_conn import connect, parse_sentinel_url, redact_url
from shared.settings import Settings
from tests.support.wait import wait_until

MASTER = "fleetmaster"

pytestmark = pytest.mark.needs("redis-server")


# A server or Sentinel that does not answer yet, or answers "not yet": keep waiting.
NOT_YET = (redis.RedisError, OSError)


class SentinelSetup:
    """primary + replica + one Sentinel (quorum 1), all on 127.0.0.1, with password `pw`."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.primary, self.replica, self.sentinel = free_port(), free_port(), free_port()
        self.procs: list[ChildProcess] = []

    def start(self) -> SentinelSetup:
        common = [
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "pw",
            "--masterauth",
            "pw",
            "--bind",
            "127.0.0.1",
        ]
        self._spawn("primary", ["redis-server", "--port", str(self.primary), *common])
        self._spawn(
            "replica",
            [
                "redis-server",
                "--port",
                str(self.replica),
                *common,
                "--replicaof",
                "127.0.0.1",
                str(self.primary),
            ],
        )
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary} 1\n"
            f"sentinel auth-pass {MASTER} pw\n"
            f"sentinel down-after-milliseconds {MASTER} 2000\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
        )
        self._spawn("sentinel", ["redis-server", str(conf), "--sentinel"])
        wait_until(
            lambda: self.node(self.replica).info("replication")["master_link_status"] == "up",
            15,
            "the replica to sync",
            ignore=NOT_YET,
        )
        wait_until(
            lambda: self.sentinel_client().sentinel_master(MASTER)["num-slaves"] >= 1,
            15,
            "Sentinel to see the replica",
            ignore=NOT_YET,
        )
        return self

    def replicas(self) -> list[dict[str, str]]:
        """`SENTINEL REPLICAS <name>`: one dict of Sentinel's fields per replica."""
        raw = self.sentinel_client().execute_command("SENTINEL", "REPLICAS", MASTER)
        rows = []
        for entry in raw:
            pairs = entry.items() if isinstance(entry, dict) else zip(entry[::2], entry[1::2])
            rows.append({str(k): str(v) for k, v in pairs})
        return rows

    def promotable_replica(self) -> dict[str, str] | None:
        """Our replica once Sentinel would pick it in a failover: it has had an INFO answer from
        it saying the link to the primary is up (`master-link-status` ok; "err" until then), and
        does not consider it down or disconnected. Without this, FAILOVER can answer NOGOODSLAVE
        although the data already reached the replica."""
        for row in self.replicas():
            if int(row.get("port", 0)) != self.replica:
                continue
            flags = set(row.get("flags", "").split(","))
            if row.get("master-link-status") == "ok" and not flags & {"s_down", "o_down", "disconnected"}:
                return row
        return None

    def failover(self, attempts: int = 5, pause: float = 1.0) -> None:
        """SENTINEL FAILOVER, asked again a few times while Sentinel answers NOGOODSLAVE (its view
        of the replica can lag a moment behind what the replica itself reports)."""
        wait_until(self.promotable_replica, 20, "Sentinel to consider the replica healthy", ignore=NOT_YET)
        for attempt in range(attempts):
            try:
                self.sentinel_client().execute_command("SENTINEL", "FAILOVER", MASTER)
                return
            except redis.ResponseError as exc:
                if "NOGOODSLAVE" not in str(exc) or attempt == attempts - 1:
                    raise AssertionError(
                        f"SENTINEL FAILOVER refused: {exc}; replicas: {self.replicas()}"
                    ) from exc
                time.sleep(pause)
                wait_until(
                    self.promotable_replica, 20, "Sentinel to consider the replica healthy", ignore=NOT_YET
                )

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.procs.append(ChildProcess.start(name, argv, self.workdir / f"{name}.log", cwd=self.workdir))

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password="pw", decode_responses=True, socket_timeout=2)

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel, decode_responses=True, socket_timeout=2)

    @property
    def url(self) -> str:
        # kombu's form; the second entry is a dead Sentinel the clients must skip
        return f"sentinel://:pw@127.0.0.1:{self.sentinel}/3;sentinel://127.0.0.1:{free_port()}"

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()


@pytest.fixture
def sentinel(tmp_path):
    setup = SentinelSetup(tmp_path).start()
    yield setup
    setup.stop()


@pytest.fixture
def sentinel_settings(sentinel, key_prefix, tmp_path):
    return Settings.load(
        {
            "redis_url": sentinel.url,
            "redis_sentinel_master": MASTER,
            "key_prefix": key_prefix,
            "queue": f"{key_prefix}-q",
            "output_dir": tmp_path / "out",
            "replicate_api_token": "r8_test_token_not_real",
        },
        environ={},
        dotenv_path=None,
    )


@pytest.mark.unit
def test_sentinel_url_parsing_and_redaction():
    target = parse_sentinel_url("sentinel://:s3cret@s1:26380/2;sentinel://s2;sentinel://s3:1")
    assert target.sentinels == [("s1", 26380), ("s2", 26379), ("s3", 1)]
    assert (target.password, target.db, target.username) == ("s3cret", 2, None)
    assert (
        redact_url("sentinel://:s3cret@s1:26380/2;sentinel://s2")
        == "sentinel://:***@s1:26380/2;sentinel://s2"
    )


def test_clients_find_the_primary_and_follow_a_failover(sentinel, sentinel_settings, key_prefix):
    client = connect(sentinel_settings, ride_out_restarts=True)
    limiter = Limiter.from_settings(client, Keys(key_prefix), sentinel_settings.with_(concurrency_limit=2))
    try:
        lease = limiter.acquire(HolderInfo(task_id="before"), timeout=5)
        on_primary = redis.Redis(port=sentinel.primary, password="pw", db=3)  # the URL's database
        assert on_primary.zcard(Keys(key_prefix).limiter_key("holders")) == 1
        client.set(f"{key_prefix}:marker", "1")
        wait_until(lambda: client.wait(1, 1000) >= 1, 5, "the write to reach the replica", ignore=NOT_YET)

        sentinel.failover()
        wait_until(
            lambda: (
                int(sentinel.sentinel_client().sentinel_get_master_addr_by_name(MASTER)[1])
                == sentinel.replica
            ),
            20,
            "Sentinel to promote the replica",
            ignore=NOT_YET,
        )
        # The same client object now talks to the new primary: reads and limiter writes work.
        assert (
            wait_until(lambda: client.get(f"{key_prefix}:marker"), 20, "the client to follow", ignore=NOT_YET)
            == "1"
        )
        second = limiter.acquire(HolderInfo(task_id="after"), timeout=10)
        status = limiter.status()
        assert status.in_use == 2 and {h.task_id for h in status.holders} == {"before", "after"}
        assert sentinel.node(sentinel.replica).info("replication")["role"] == "master"
        lease.release()
        second.release()
    finally:
        limiter.close()
        client.close()


@pytest.mark.e2e
def test_workers_and_producer_run_a_batch_through_sentinel(sentinel_settings, sim, worker_factory):
    from producer.api import submit

    fleet = worker_factory(sentinel_settings, count=1, sim=sim)  # broker, limiter, ledger: all via Sentinel
    batch = submit(
        ["a heron at dawn", "a heron at dusk", "a heron at noon"],
        settings=sentinel_settings,
        model="black-forest-labs/flux-dev",
    )
    snap = batch.wait(timeout=60, check_workers=False)
    assert snap.finished and snap.counts.get("succeeded") == 3, (snap.counts, fleet.logs())
    assert sim.ledger(detail=False)["creations"] == 3
