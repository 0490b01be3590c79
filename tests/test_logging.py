"""Structured logging: one line per event with the item's context, and never the token."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared.logging_setup import (
    bind_log_context,
    celery_setup_logging,
    configure_logging,
    get_logger,
    log_context,
)
from shared.settings import Settings

TOKEN = "r8_" + "Zx9" * 12  # shaped like a real token, 39 characters
OTHER_TOKEN = "r8_" + "Q" * 30  # not the configured one: caught by its shape


@pytest.fixture
def log_settings() -> Settings:
    return Settings.load({"replicate_api_token": TOKEN, "log_level": "DEBUG"}, environ={}, dotenv_path=None)


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _capture(settings: Settings, *, json_lines: bool) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(settings, stream=stream, json=json_lines)
    return stream


@pytest.mark.usefixtures("restore_root")
class TestRedaction:
    def test_token_in_message_args_tuple_and_exception(self, log_settings):
        stream = _capture(log_settings, json_lines=False)
        log = logging.getLogger("fleet.test")
        log.info("token is %s", TOKEN)
        log.info("headers %r", ({"Authorization": f"Bearer {TOKEN}"}, 3))
        log.warning("split " + TOKEN[:10] + "%s", TOKEN[10:])  # only the merged text shows it
        log.info("other token %s and redis %s", OTHER_TOKEN, "rediss://:hunter2secret@redis:6380/0")
        try:
            raise RuntimeError(f"call failed with token {TOKEN}")
        except RuntimeError:
            log.exception("boom %s", TOKEN)
        log.error("with stack", stack_info=True, extra={"model": f"m-{TOKEN}"})

        out = stream.getvalue()
        assert TOKEN not in out
        assert TOKEN[10:] not in out
        assert OTHER_TOKEN not in out
        assert "hunter2secret" not in out
        assert "RuntimeError: call failed with token [REDACTED]" in out
        assert "rediss://:***@redis:6380/0" in out
        assert out.count("[REDACTED]") >= 6

    def test_one_line_per_event_even_with_traceback(self, log_settings):
        stream = _capture(log_settings, json_lines=False)
        log = logging.getLogger("fleet.test")
        try:
            raise ValueError("line1\nline2")
        except ValueError:
            log.exception("failed")
        log.info("second")
        lines = stream.getvalue().splitlines()
        assert len(lines) == 2
        assert lines[0].startswith("ts=") and "level=ERROR" in lines[0] and 'exc="Traceback' in lines[0]

    def test_json_lines_parse_and_carry_no_token(self, log_settings):
        stream = _capture(log_settings, json_lines=True)
        try:
            {}["k"]  # noqa: B018
        except KeyError:
            logging.getLogger("fleet.test").exception("lookup failed for %s", TOKEN)
        (line,) = stream.getvalue().splitlines()
        record = json.loads(line)
        assert record["level"] == "ERROR"
        assert record["msg"] == "lookup failed for [REDACTED]"
        assert "KeyError" in record["exc"]
        assert TOKEN not in line

    def test_object_whose_repr_holds_the_token(self, log_settings):
        class Client:
            def __repr__(self):
                return f"Client(token={TOKEN!r})"

        stream = _capture(log_settings, json_lines=True)
        logging.getLogger("fleet.test").info("client %r", Client())
        assert TOKEN not in stream.getvalue()
        assert "Client(token='[REDACTED]')" in stream.getvalue()


@pytest.mark.usefixtures("restore_root")
class TestContext:
    def test_context_fields_in_order_and_nesting(self, log_settings):
        stream = _capture(log_settings, json_lines=False)
        log = logging.getLogger("workers.tasks")
        with log_context(batch="b1", item=3, model="flux-schnell"):
            with log_context(attempt=2):
                bind_log_context(prediction="p-123")
                log.info("created prediction")
            log.info("outside attempt")
        log.info("no context")
        first, second, third = stream.getvalue().splitlines()
        assert (
            'batch=b1 item=3 model=flux-schnell prediction=p-123 attempt=2 msg="created prediction"' in first
        )
        assert "attempt=" not in second and "prediction=" not in second and "batch=b1" in second
        assert "batch=" not in third

    def test_adapter_and_extra(self, log_settings):
        stream = _capture(log_settings, json_lines=True)
        log = get_logger("workers.tasks", batch="b2", item=0)
        log.info("downloaded", extra={"model": "m", "bytes": 1234})
        record = json.loads(stream.getvalue())
        assert record["batch"] == "b2" and record["item"] == 0 and record["model"] == "m"
        assert record["bytes"] == 1234

    def test_level_from_settings(self, log_settings):
        stream = _capture(log_settings.with_(log_level="WARNING"), json_lines=False)
        logging.getLogger("fleet.test").info("hidden")
        logging.getLogger("fleet.test").warning("shown")
        assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()

    def test_reconfigure_does_not_duplicate_lines(self, log_settings):
        configure_logging(log_settings, stream=io.StringIO())
        stream = _capture(log_settings, json_lines=False)
        logging.getLogger("fleet.test").info("once")
        assert len(stream.getvalue().splitlines()) == 1


def test_celery_setup_logging_routes_celery_loggers(log_settings, restore_root):
    from celery.utils.log import get_task_logger

    stream = io.StringIO()
    celery_setup_logging(log_settings, json=False, stream=stream)
    get_task_logger("workers.tasks").info("task says %s", TOKEN)
    logging.getLogger("celery.worker").info("worker says hi")
    out = stream.getvalue()
    assert "task says [REDACTED]" in out and "worker says hi" in out and TOKEN not in out


def test_uncaught_exception_in_a_real_celery_worker_is_redacted(tmp_path, redis_url):
    """A real worker (solo pool, our setup_logging receiver) runs a task that raises with the token
    in its message; Celery logs the failure, and nothing the process writes contains the token."""
    import os

    import redis

    queue = f"ops-logging-{tmp_path.name}"
    marker = tmp_path / "failed"
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "leaky_app.py").write_text(
        textwrap.dedent(f"""
        from pathlib import Path
        from celery import Celery, signals
        from shared.logging_setup import celery_setup_logging, log_context
        from shared.settings import Settings

        app = Celery("leaky", broker={redis_url!r})
        app.conf.task_default_queue = {queue!r}

        @signals.setup_logging.connect
        def _setup(**_):
            celery_setup_logging(Settings.load(environ={{"REPLICATE_API_TOKEN": {TOKEN!r}}}, dotenv_path=None))

        @signals.task_failure.connect
        def _failed(**_):
            Path({str(marker)!r}).write_text("x")

        @app.task(name="leaky.fail")
        def fail():
            with log_context(batch="b9", item=1, model="m"):
                raise RuntimeError("upstream said: bad token {TOKEN}")
    """)
    )
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from celery.contrib.testing.worker import start_worker
        from leaky_app import app, fail
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="INFO"):
            fail.delay()
            deadline = time.monotonic() + 30
            while not Path({str(marker)!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.3)  # let the failure line be written after the signal
        print("done", Path({str(marker)!r}).exists())
    """)
    try:
        run = subprocess.run(
            [sys.executable, "-c", script],
            cwd=app_dir,
            env={"PYTHONPATH": f"{app_dir}:{os.getcwd()}", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        client = redis.Redis.from_url(redis_url)
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        client.close()
    output = run.stdout + run.stderr
    assert "done True" in run.stdout, output
    assert "upstream said: bad token [REDACTED]" in output, output
    assert TOKEN not in output


def test_json_chosen_by_settings_for_celery(log_settings, restore_root):
    stream = io.StringIO()
    celery_setup_logging(log_settings.with_(log_json=True), stream=stream)
    logging.getLogger("celery.worker").info("ready")
    assert json.loads(stream.getvalue())["msg"] == "ready"


# --- a whole run, greped ------------------------------------------------------------------------
def _child_env(settings: Settings, **extra: str) -> dict[str, str]:
    import os
    from pathlib import Path

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REPLICATE_", "FLEET_", "CELERY_", "REDIS_URL"))
    }
    env.update(
        settings.as_env(), PYTHONPATH=str(Path(__file__).resolve().parent.parent), PYTHONUNBUFFERED="1"
    )
    env.update(extra)
    return env


class _Run:
    """The processes a run starts (producer CLI, receiver, exporter) with `settings`, and
    everything each printed, by name."""

    def __init__(self, settings: Settings, tmp_path: Path):
        self.settings = settings
        self.tmp_path = tmp_path
        self.outputs: dict[str, str] = {}
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        """A long-running process in its own session, logging to tmp_path/NAME.log."""
        log = (self.tmp_path / f"{name}.log").open("w")
        process = subprocess.Popen(
            argv,
            env=_child_env(self.settings, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "producer.cli", "--env-file", "/nonexistent", *args],
            env=_child_env(self.settings),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.tmp_path,
        )
        self.outputs["producer " + " ".join(args)] = result.stdout + result.stderr
        return result

    def stop(self) -> None:
        import os
        import signal

        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)

    def collect_files(self) -> None:
        """Add the processes' logs and every file the run wrote (outputs, manifest)."""
        for path in self.tmp_path.glob("*.log"):
            self.outputs[path.name] = path.read_text(errors="replace")
        for path in Path(self.settings.output_dir).rglob("*"):
            if path.is_file():
                self.outputs[str(path)] = path.read_bytes().decode("latin-1")


def _page(url: str) -> str:
    """The page at `url`, or "" while nothing answers there."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return ""


def _start_webhook_receiver(run: _Run, port: int) -> None:
    from tests.support.wait import wait_until

    bin_dir = Path(sys.executable).parent
    argv = [str(bin_dir / "fleet-webhooks"), "--listen", f"127.0.0.1:{port}", "--env-file", "/nonexistent"]
    run.start("webhooks", argv)
    healthz = f"http://127.0.0.1:{port}/healthz"
    wait_until(lambda: _page(healthz) == "ok", 30, "the webhook receiver", interval=0.2)


def _metrics_page(run: _Run, port: int, *, showing: str) -> str:
    """`producer metrics` started, and its /metrics page once it shows `showing` (the workers'
    counters reach Redis within their flush interval)."""
    from tests.support.wait import wait_until

    argv = [sys.executable, "-m", "producer.cli", "--env-file", "/nonexistent"]
    run.start("metrics", [*argv, "metrics", "--port", str(port), "--addr", "127.0.0.1"])
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: showing in _page(metrics_url), 30, f"{showing} on /metrics", interval=0.3)
    return _page(metrics_url)


@pytest.mark.e2e
def test_the_token_never_appears_in_anything_a_run_prints_or_writes(
    tmp_path, settings, redis_client, sim_factory, worker_factory
):
    """A real run at DEBUG level with the stand-in accepting only TOKEN (so the token was really
    used): the producer CLI's output (`submit --wait`, `results --json`, `status`, `limits`), the
    workers' logs, the webhook receiver's log (it fetched its signing secret with the token), the
    stand-in's log, the metrics exporter's log and its /metrics page, the files and the manifest —
    none contains the token."""
    import time

    from bench.processes import free_port
    from shared.keys import Keys
    from shared.metrics import read_counters

    sim = sim_factory(token=TOKEN, latency_scale=0.02)
    run = _Run(
        settings.with_(replicate_api_token=TOKEN, replicate_base_url=sim.url, log_level="DEBUG"), tmp_path
    )
    hook_port, metrics_port = free_port(), free_port()
    try:
        _start_webhook_receiver(run, hook_port)
        fleet = worker_factory(
            run.settings,
            count=1,
            sim=sim,
            FLEET_WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/webhooks/replicate",
        )
        prompts = tmp_path / "prompts.json"
        prompts.write_text(json.dumps([f"a red kite over a hill, take {i}" for i in range(4)]))

        submitted = run.cli(
            "submit", str(prompts), "-m", "black-forest-labs/flux-dev", "--batch-id", "tok-run", "--wait"
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr + fleet.logs()
        records = [json.loads(line) for line in run.cli("results", "tok-run", "--json").stdout.splitlines()]
        assert [r["status"] for r in records] == ["succeeded"] * 4
        assert run.cli("status", "tok-run").returncode == 0
        assert run.cli("limits").returncode == 0
        assert run.cli("limits", "--json").returncode == 0

        succeeded = 'fleet_predictions_total{model="black-forest-labs/flux-dev",outcome="succeeded"} 4.0'
        run.outputs["GET /metrics"] = _metrics_page(run, metrics_port, showing=succeeded)
        assert succeeded in run.outputs["GET /metrics"]
    finally:
        run.stop()
    time.sleep(0.1)

    # Not vacuous: the stand-in accepted only TOKEN, and the receiver (whose signing secret was
    # fetched with it) accepted the stand-in's signed deliveries.
    assert sim.ledger(detail=False)["creations"] == 4
    counters = read_counters(redis_client, Keys(settings.key_prefix))
    assert sum(v for labels, v in counters.get("webhooks", []) if labels.get("outcome") == "accepted") == 4

    outputs = run.outputs
    outputs["stand-in log"] = sim.log()
    outputs["workers"] = fleet.logs(tail=10**7)
    run.collect_files()
    assert any(p.endswith("manifest.json") for p in outputs), list(outputs)
    assert "DEBUG" in outputs["workers"] and "level=" in outputs["webhooks.log"]
    for name, text in outputs.items():
        assert TOKEN not in text, f"the token appears in {name}"
        assert TOKEN[3:20] not in text, f"a piece of the token appears in {name}"
