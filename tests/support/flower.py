"""Helpers and fixtures for the Flower tests.

`stub_fleet` runs a real Celery worker of a tiny app that behaves like the project's workers from
Flower's point of view (task name, argsrepr with batch/item/model/prompt, events on, the token in
the worker's environment and, as bait, in its Celery config) plus a real Flower started through
producer.flower, against a Redis URL that carries a password. It lets the Flower configuration be
tested before, and independently of, the real pipeline.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from bench.processes import free_port
from producer.flower import start_flower
from shared.settings import Settings
from tests.support.wait import wait_until

TOKEN = "r8_" + "Fl0w3rT0k3n" * 3  # shaped like a real token
REDIS_PASSWORD = "s3cret-redis-pw"
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-pw-123"

STUB_APP = """
import os
from celery import Celery

app = Celery("stubfleet", broker=os.environ["CELERY_BROKER_URL"])
app.conf.task_default_queue = os.environ["STUB_QUEUE"]
app.conf.worker_send_task_events = True
app.conf.task_send_sent_event = True
app.conf.worker_hijack_root_logger = False
# Bait: a setting whose value is the token. Celery must censor it in `inspect conf` (Flower's
# worker page); the real workers keep the token out of the Celery config altogether.
app.conf.replicate_api_token = os.environ.get("REPLICATE_API_TOKEN")


@app.task(name="workers.generate_image", bind=True)
def generate_image(self, batch_id, index, attempt, model):
    import time
    time.sleep(0.2)
    return {"batch": batch_id, "index": index, "status": "succeeded"}


def send_batch(batch_id, prompts, model="black-forest-labs/flux-schnell"):
    results = []
    for index, prompt in enumerate(prompts):
        results.append(generate_image.apply_async(
            (batch_id, index, 1, model),
            argsrepr=f"batch={batch_id} item={index} model={model} prompt={prompt[:40]!r}",
            kwargsrepr="{}",
        ))
    return [r.id for r in results]
"""


def redis_url_with_password(redis_url: str) -> str:
    """The test Redis has no requirepass; its `default` user is `nopass`, which accepts any
    password given with the user name (AUTH default <pw>) — so the URL can carry a password that
    must be masked everywhere, as in production."""
    return redis_url.replace("redis://", f"redis://default:{REDIS_PASSWORD}@", 1)


def basic_auth_header(user: str = FLOWER_USER, password: str = FLOWER_PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def http_get(url: str, *, auth: bool = True, timeout: float = 10) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=basic_auth_header() if auth else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


@dataclass
class StubFleet:
    url: str  # Flower base URL
    broker_url: str
    queue: str
    app_dir: Path
    flower: subprocess.Popen
    worker: subprocess.Popen
    db_path: Path
    logs: list[Path] = field(default_factory=list)

    def send_batch(self, batch_id: str, prompts: list[str]) -> list[str]:
        code = f"from stubapp import send_batch; print(','.join(send_batch({batch_id!r}, {prompts!r})))"
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.app_dir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.strip().split(",")

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(self.app_dir),
            "CELERY_BROKER_URL": self.broker_url,
            "STUB_QUEUE": self.queue,
        }

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def stub_fleet(tmp_path, redis_url, key_prefix):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "stubapp.py").write_text(textwrap.dedent(STUB_APP))
    broker_url = redis_url_with_password(redis_url)
    queue = f"{key_prefix}-flowerq"
    settings = Settings.load(
        {"redis_url": broker_url, "key_prefix": key_prefix, "queue": queue, "replicate_api_token": TOKEN},
        environ={},
        dotenv_path=None,
    )
    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(app_dir),
        "REPLICATE_API_TOKEN": TOKEN,  # must be stripped by producer.flower
        "STUB_QUEUE": queue,
        "HOME": str(tmp_path),
    }
    worker_log, flower_log = tmp_path / "worker.log", tmp_path / "flower.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "stubapp",
            "worker",
            "-P",
            "threads",
            "-c",
            "4",
            "-E",
            "-n",
            f"stub-{key_prefix}@%h",
            "-l",
            "INFO",
        ],
        cwd=app_dir,
        env={**base_env, "CELERY_BROKER_URL": broker_url},
        stdout=worker_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    port = free_port()
    db_path = tmp_path / "flower-state" / "flower.db"
    flower = start_flower(
        settings,
        port,
        f"{FLOWER_USER}:{FLOWER_PASSWORD}",
        db_path,
        app="stubapp",
        address="127.0.0.1",
        base_env=base_env,
        purge_offline_workers=None,
        stdout=flower_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    fleet = StubFleet(
        url=f"http://127.0.0.1:{port}",
        broker_url=broker_url,
        queue=queue,
        app_dir=app_dir,
        flower=flower,
        worker=worker,
        db_path=db_path,
        logs=[worker_log, flower_log],
    )
    try:
        wait_until(lambda: flower_answers(fleet.url), 30, "Flower to answer", interval=0.2)
        # Flower lists the worker once it has seen its heartbeat/events.
        wait_until(
            lambda: f"stub-{key_prefix}" in http_get(f"{fleet.url}/api/workers?refresh=1")[1],
            30,
            "the worker to show in Flower",
            interval=0.2,
        )
        yield fleet
    finally:
        stop_process(flower)
        stop_process(worker)
        client = redis.Redis.from_url(redis_url)
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        client.close()


def flower_answers(url: str) -> bool:
    try:
        return http_get(f"{url}/healthcheck", auth=False, timeout=2)[0] == 200
    except OSError:
        return False


@contextlib.contextmanager
def flower_beside_a_worker(settings: Settings, redis_client, tmp_path: Path, name: str) -> Iterator[str]:
    """A real Flower (producer.flower, basic auth, logging to tmp_path/flower.log) beside one
    project worker as compose runs it (tmp_path/worker.log); yields Flower's URL once it answers.
    Both stopped, and the worker's queue forgotten, at the end."""
    from tests.support.workers import compose_worker, forget_queue

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flower = start_flower(
        settings,
        port,
        f"{FLOWER_USER}:{FLOWER_PASSWORD}",
        tmp_path / "flower" / "flower.db",
        address="127.0.0.1",
        stdout=(tmp_path / "flower.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    worker = compose_worker(settings, name, tmp_path / "worker.log")
    try:
        wait_until(lambda: flower_answers(url), 30, "Flower to answer", interval=0.2)
        yield url
    finally:
        worker.stop(timeout=15)
        stop_process(flower)
        forget_queue(redis_client, settings.queue)
