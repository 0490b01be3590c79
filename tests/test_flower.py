"""Flower as `producer flower` starts it: auth on, same broker, no secret anywhere it shows."""

from __future__ import annotations

import json

import pytest

from bench.processes import free_port
from producer.flower import check_basic_auth, flower_command
from shared.errors import ConfigError
from shared.settings import Settings
from tests.support.flower import REDIS_PASSWORD, TOKEN, flower_answers, http_get, stop_process
from tests.support.wait import wait_until


def _settings(**overrides) -> Settings:
    values = {"redis_url": f"redis://:{REDIS_PASSWORD}@redis:6379/0", "replicate_api_token": TOKEN}
    values.update(overrides)
    return Settings.load(values, environ={}, dotenv_path=None)


@pytest.mark.unit
class TestCommand:
    def test_no_secret_in_argv_and_no_token_in_env(self, tmp_path):
        command = flower_command(
            _settings(),
            5566,
            "admin:pw",
            tmp_path / "state" / "flower.db",
            base_env={"REPLICATE_API_TOKEN": TOKEN, "PATH": "/bin"},
        )
        argv = " ".join(command.argv)
        assert REDIS_PASSWORD not in argv and "admin:pw" not in argv and TOKEN not in argv
        assert TOKEN not in json.dumps(command.env)
        assert command.env["CELERY_BROKER_URL"].endswith("@redis:6379/0")
        assert command.env["FLOWER_BASIC_AUTH"] == "admin:pw"
        assert "--persistent=True" in command.argv
        assert f"--db={tmp_path / 'state' / 'flower.db'}" in command.argv
        assert (tmp_path / "state").is_dir()
        assert command.argv[command.argv.index("-A") + 1] == "workers"

    @pytest.mark.parametrize("bad", [None, "", "admin", "admin:", ":pw", "a:b,c"])
    def test_auth_is_required(self, bad):
        with pytest.raises(ConfigError):
            check_basic_auth(bad)

    def test_several_users(self):
        assert check_basic_auth("a:1, b:2") == "a:1,b:2"
        assert check_basic_auth(["a:1", "b:2"]) == "a:1,b:2"

    def test_listens_on_localhost_unless_told_otherwise(self, tmp_path):
        argv = flower_command(_settings(), 5566, "admin:pw", None, base_env={}).argv
        assert "--address=127.0.0.1" in argv and not any(a.startswith("--address=0") for a in argv)
        argv = flower_command(_settings(), 5566, "admin:pw", None, address="0.0.0.0", base_env={}).argv
        assert "--address=0.0.0.0" in argv
        with pytest.raises(ConfigError):
            flower_command(_settings(), 5566, "admin:pw", None, address="", base_env={})

    def test_cli_address_option_and_auth_from_the_environment(self, monkeypatch):
        """`producer flower`: --address (default 127.0.0.1) reaches Flower; the credentials come
        from FLOWER_BASIC_AUTH, so they need not be on the command line (where `ps` shows them)."""
        from click.testing import CliRunner

        import producer.flower
        from producer.cli import cli

        calls = []

        def fake_run_flower(settings, port, basic_auth, persistent_path, **options):
            calls.append((port, basic_auth, options))
            return 0

        monkeypatch.setattr(producer.flower, "run_flower", fake_run_flower)
        env = {"FLOWER_BASIC_AUTH": "ops:from-env", "REDIS_URL": "redis://127.0.0.1:6379/0"}
        runner = CliRunner()
        result = runner.invoke(cli, ["--env-file", "/nonexistent", "flower", "--port", "5577"], env=env)
        assert result.exit_code == 0, result.output
        result = runner.invoke(cli, ["--env-file", "/nonexistent", "flower", "--address", "0.0.0.0"], env=env)
        assert result.exit_code == 0, result.output
        assert calls == [
            (5577, "ops:from-env", {"address": "127.0.0.1"}),
            (5555, "ops:from-env", {"address": "0.0.0.0"}),
        ]
        assert "--address" in runner.invoke(cli, ["flower", "--help"]).output


@pytest.mark.e2e
def test_flower_with_a_real_worker(stub_fleet):
    fleet = stub_fleet
    # Authentication on: pages and API refuse without credentials.
    for path in ("/", "/tasks", "/api/tasks", "/broker"):
        assert http_get(fleet.url + path, auth=False)[0] == 401, path

    task_ids = fleet.send_batch("b-flower", [f"a red fox number {i}" for i in range(3)])
    tasks = wait_until(
        lambda: (lambda t: t if all(t.get(i, {}).get("state") == "SUCCESS" for i in task_ids) else None)(
            json.loads(http_get(f"{fleet.url}/api/tasks")[1])
        ),
        30,
        "the batch's tasks to succeed in Flower",
        interval=0.2,
    )
    for index, task_id in enumerate(task_ids):
        assert tasks[task_id]["name"] == "workers.generate_image"
        assert f"batch=b-flower item={index}" in tasks[task_id]["args"]

    # Every page Flower can show for this fleet: no token, no Redis password.
    worker_name = wait_until(
        lambda: list(json.loads(http_get(f"{fleet.url}/api/workers?refresh=1")[1])),
        10,
        "worker list",
        interval=0.2,
    )[0]
    pages = [
        "/",
        "/workers",
        "/tasks",
        "/broker",
        f"/worker/{worker_name}",
        f"/task/{task_ids[0]}",
        "/api/tasks",
        "/api/workers?refresh=1",
        f"/api/task/info/{task_ids[0]}",
        "/api/queues/length",
        "/metrics",
    ]
    for path in pages:
        status, body = http_get(fleet.url + path)
        assert status == 200, (path, status, body[:300])
        assert TOKEN not in body, path
        assert REDIS_PASSWORD not in body, path
    assert "b-flower" in http_get(f"{fleet.url}/task/{task_ids[0]}")[1]
    # The bait setting is on the worker page, censored (so the check above was not vacuous).
    worker_page = http_get(f"{fleet.url}/worker/{worker_name}")[1]
    assert "replicate_api_token" in worker_page and "********" in worker_page

    # The Flower process: no token in its environment, no secret on its command line.
    environ = open(f"/proc/{fleet.flower.pid}/environ", "rb").read().decode(errors="replace")
    cmdline = open(f"/proc/{fleet.flower.pid}/cmdline", "rb").read().decode(errors="replace")
    assert TOKEN not in environ
    assert REDIS_PASSWORD not in cmdline and "flower-pw-123" not in cmdline

    # Persistent state is written on shutdown.
    fleet.flower.terminate()
    fleet.flower.wait(15)
    assert any(p.name.startswith("flower.db") for p in fleet.db_path.parent.iterdir())
    assert TOKEN not in fleet.output() and REDIS_PASSWORD not in fleet.output()


def test_flower_loads_the_project_app(tmp_path, settings):
    """`celery -A workers flower` as run_flower starts it: the app module loads and Flower answers."""
    from producer.flower import start_flower

    port = free_port()
    process = start_flower(
        settings,
        port,
        "u:p",
        None,
        address="127.0.0.1",
        stdout=(tmp_path / "flower.log").open("w"),
        stderr=-2,
    )
    try:
        wait_until(
            lambda: flower_answers(f"http://127.0.0.1:{port}"),
            30,
            "Flower with the workers app",
            interval=0.2,
        )
        assert http_get(f"http://127.0.0.1:{port}/api/workers", auth=False)[0] == 401
    finally:
        stop_process(process)
