"""The CLI's structure, exit codes and the commands that need no worker: help, limits, init,
dry runs, unreachable Redis."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from producer.cli import cli

ROOT = Path(__file__).resolve().parent.parent
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"
COMMANDS = [
    "submit",
    "status",
    "results",
    "wait",
    "cancel",
    "retry",
    "list",
    "limits",
    "limits set",
    "limits reset",
    "init",
    "flower",
    "metrics",
    "models",
    "models show",
]


def run_cli(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 60):
    """The installed entry point in a subprocess: real exit codes, real streams."""
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FLEET_", "REDIS_URL"))
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        cwd=ROOT,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env(settings) -> dict[str, str]:
    return settings.as_env()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "Exit codes" in result.output


def test_top_level_help_lists_commands_and_exit_codes():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("submit", "status", "results", "wait", "cancel", "retry", "list", "limits", "init"):
        assert command in result.output
    assert "3  Redis cannot be reached" in result.output


def test_usage_errors_exit_2():
    runner = CliRunner()
    assert runner.invoke(cli, ["submit"]).exit_code == 2  # missing FILE
    assert runner.invoke(cli, ["nosuchcommand"]).exit_code == 2
    assert runner.invoke(cli, ["limits", "set"]).exit_code == 2  # nothing to set
    assert runner.invoke(cli, ["limits", "set", "--concurrency", "0"]).exit_code == 2
    assert runner.invoke(cli, ["limits", "set", "--concurrency-limit", "0"]).exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ["status", "b-x"],
        ["results", "b-x", "--json"],
        ["wait", "b-x"],
        ["cancel", "b-x"],
        ["retry", "b-x"],
        ["list"],
        ["limits"],
        ["limits", "set", "--concurrency", "3"],
    ],
)
def test_unreachable_redis_exits_3_with_one_line(args):
    result = run_cli("--redis-url", CLOSED_PORT_URL, "--env-file", "/nonexistent", *args)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Redis"), result.stderr
    assert "Traceback" not in result.stderr


def test_submit_with_unreachable_redis_exits_3_after_validation(tmp_path):
    prompts = tmp_path / "p.json"
    prompts.write_text('["a red fox"]')
    result = run_cli(
        "--redis-url",
        CLOSED_PORT_URL,
        "--env-file",
        "/nonexistent",
        "submit",
        str(prompts),
        env={"OUTPUT_DIR": str(tmp_path / "out")},
    )
    assert result.returncode == 3, result.stderr
    assert "cannot reach Redis" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_batch_is_bad_input(settings, redis_client):
    result = CliRunner().invoke(
        cli,
        ["--redis-url", settings.redis_url, "--env-file", "/nonexistent", "status", "b-nope"],
        env=cli_env(settings),
    )
    assert result.exit_code == 2 and "no batch 'b-nope'" in result.stderr


def test_dry_run_prints_the_plan_and_cost_and_writes_nothing(tmp_path, settings, redis_client, key_prefix):
    prompts = tmp_path / "p.json"
    prompts.write_text(
        json.dumps(
            {
                "model": "black-forest-labs/flux-dev",
                "items": ["a red fox", {"prompt": "a whale", "model": "google/nano-banana"}],
            }
        )
    )
    redis_client.set(f"{key_prefix}:sentinel", "1")
    before = set(redis_client.scan_iter(match=f"*{key_prefix}*"))
    runner = CliRunner()
    args = [
        "--redis-url",
        settings.redis_url,
        "--env-file",
        "/nonexistent",
        "submit",
        str(prompts),
        "--dry-run",
    ]
    result = runner.invoke(cli, args, env=cli_env(settings))
    assert result.exit_code == 0, result.output
    assert "black-forest-labs/flux-dev" in result.stdout and "google/nano-banana" in result.stdout
    assert "$" in result.stdout and "nothing was recorded or enqueued" in result.stdout
    as_json = runner.invoke(cli, args + ["--json"], env=cli_env(settings))
    assert as_json.exit_code == 0
    last = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert last["items"] == 2 and last["dry_run"] is True and last["estimated_cost_usd"] > 0
    assert set(redis_client.scan_iter(match=f"*{key_prefix}*")) == before
    assert not Path(settings.output_dir).exists()


def test_dry_run_shows_what_fallbacks_may_cost_and_no_fallback_turns_them_off(tmp_path):
    """Paid fallbacks were on with no way to turn them off but a registry file (issue 18.6)."""
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"model": "black-forest-labs/flux-dev", "items": ["a red fox", "a whale"]}))
    base = ["--redis-url", CLOSED_PORT_URL, "--env-file", "/nonexistent", "submit", str(prompts), "--dry-run"]
    on = CliRunner().invoke(cli, base, env={"OUTPUT_DIR": str(tmp_path / "out")})
    assert on.exit_code == 0, on.output
    text = " ".join(on.stdout.split())
    # flux-dev $0.025, then qwen $0.025, then imagen-4-ultra $0.06: $0.05 first, fallbacks up to $0.17 more
    assert (
        "Estimated cost: $0.05 if every first model succeeds; fallbacks may add up to $0.17 "
        "(at most $0.22 if every fallback runs)" in text
    )
    assert "2 item(s) may fall back to other models" in text and "--no-fallback" in text
    off = CliRunner().invoke(cli, base + ["--no-fallback"], env={"OUTPUT_DIR": str(tmp_path / "out")})
    assert off.exit_code == 0, off.output
    assert "Estimated cost: $0.05; no fallbacks" in off.stdout and "may add" not in off.stdout
    assert "black-forest-labs/flux-dev  [2 item(s): 0-1]" in off.stdout  # the route is the first model alone
    plan = json.loads(CliRunner().invoke(cli, base + ["--no-fallback", "--json"]).stdout.splitlines()[-1])
    assert plan["max_cost_usd"] == plan["estimated_cost_usd"] == 0.05
    assert all(item["route"] == [] for item in plan["plan"])
    tagged = tmp_path / "tagged.json"
    tagged.write_text(
        json.dumps({"model": "black-forest-labs/flux-dev", "fallback": False, "items": ["a fox"]})
    )
    by_file = CliRunner().invoke(cli, base[:4] + ["submit", str(tagged), "--dry-run"])
    assert "no fallbacks" in by_file.stdout, by_file.output


def test_dry_run_needs_no_redis(tmp_path):
    prompts = tmp_path / "p.json"
    prompts.write_text('["a red fox"]')
    result = run_cli(
        "--redis-url",
        CLOSED_PORT_URL,
        "submit",
        str(prompts),
        "--dry-run",
        env={"OUTPUT_DIR": str(tmp_path / "out")},
    )
    assert result.returncode == 0, result.stderr
    assert "Plan: 1 item" in result.stdout


# --- limits ------------------------------------------------------------------------------------------
def test_limits_show_and_set(settings, redis_client, key_prefix):
    runner = CliRunner()
    base = ["--redis-url", settings.redis_url, "--env-file", "/nonexistent"]
    shown = runner.invoke(cli, base + ["limits"], env=cli_env(settings))
    assert shown.exit_code == 0, shown.output
    assert "slots      0/60 in use" in shown.stdout and "creations  0/600" in shown.stdout
    changed = runner.invoke(
        cli,
        base + ["limits", "set", "--concurrency-limit", "7", "--create-limit", "30", "--rate-window", "20"],
        env=cli_env(settings),
    )
    assert changed.exit_code == 0, changed.output
    status = json.loads(runner.invoke(cli, base + ["limits", "--json"], env=cli_env(settings)).stdout)
    assert (status["concurrency_limit"], status["create_limit"], status["rate_window"], status["in_use"]) == (
        7,
        30,
        20.0,
        0,
    )
    assert status["holders"] == []


def test_limits_set_accepts_the_old_option_spellings(settings, redis_client):
    """--concurrency and --window were renamed --concurrency-limit and --rate-window: scripts
    that use the old spellings keep working; they are not advertised; giving both is refused."""
    runner = CliRunner()
    base = ["--redis-url", settings.redis_url, "--env-file", "/nonexistent", "limits", "set"]
    changed = runner.invoke(
        cli, base + ["--concurrency", "5", "--window", "30", "--json"], env=cli_env(settings)
    )
    assert changed.exit_code == 0, changed.output
    status = json.loads(changed.stdout)
    assert (status["concurrency_limit"], status["rate_window"]) == (5, 30.0)
    both = runner.invoke(
        cli, base + ["--concurrency", "5", "--concurrency-limit", "6"], env=cli_env(settings)
    )
    assert both.exit_code == 2 and "old spelling" in both.output
    shown = runner.invoke(cli, ["limits", "set", "--help"]).output
    assert "--concurrency-limit" in shown and "--rate-window" in shown
    assert "--concurrency " not in shown and "--window" not in shown


def test_limits_python_api_matches(settings, redis_client):
    from producer import limits_status, set_limits
    from shared.errors import InputError

    status = set_limits(settings, read_limit=1234)
    assert status.read_limit == 1234 and limits_status(settings).read_limit == 1234
    with pytest.raises(InputError):
        set_limits(settings)


def test_limits_say_where_each_limit_comes_from_and_reset_puts_the_settings_back(settings, redis_client):
    """`limits set` overrode the environment silently for ever: `limits` now shows, per limit,
    the value in force, where it comes from and what this environment says, and `limits reset`
    puts this environment's values back (issue 18.7)."""
    runner = CliRunner()
    base = ["--redis-url", settings.redis_url, "--env-file", "/nonexistent"]
    env = cli_env(settings)

    def rows(output: str) -> dict[str, str]:
        return {
            line.split()[0]: line
            for line in output.splitlines()
            if line.split()[:1]
            and line.split()[0] in ("concurrency_limit", "create_limit", "read_limit", "rate_window")
        }

    shown = rows(runner.invoke(cli, base + ["limits"], env=env).stdout)
    assert "settings: REPLICATE_GLOBAL_MAX_CONCURRENT" in shown["concurrency_limit"]
    # A worker with these settings takes a slot: its settings are the limits in Redis now.
    from shared.keys import Keys
    from shared.limiter import HolderInfo, Limiter

    worker_limiter = Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings)
    worker_limiter.acquire(HolderInfo()).release()
    worker_limiter.close()
    changed = runner.invoke(cli, base + ["limits", "set", "--concurrency-limit", "7"], env=env)
    assert changed.exit_code == 0, changed.output
    after = rows(changed.stdout)
    assert after["concurrency_limit"].split()[1] == "7" and "`limits set` 20" in after["concurrency_limit"]
    assert after["concurrency_limit"].split()[-1] == str(
        settings.concurrency_limit
    )  # what this environment says
    assert "settings: REPLICATE_CREATE_LIMIT" in after["create_limit"]
    assert "overrides REPLICATE_GLOBAL_MAX_CONCURRENT=60 of this environment" in " ".join(
        changed.stdout.split()
    )
    data = json.loads(runner.invoke(cli, base + ["limits", "--json"], env=env).stdout)
    assert data["sources"]["concurrency_limit"]["source"] == "limits set"
    assert data["sources"]["create_limit"]["source"] == "settings"
    # Another environment sees that its settings are not the ones in force, and can apply them.
    other = {**env, "REPLICATE_CREATE_LIMIT": "300"}
    told = runner.invoke(cli, base + ["limits"], env=other).stdout
    assert "another process's settings" in rows(told)["create_limit"] and "REPLICATE_CREATE_LIMIT=300" in told
    reset = runner.invoke(cli, base + ["limits", "reset", "create_limit"], env=other)
    assert reset.exit_code == 0, reset.output
    assert rows(reset.stdout)["create_limit"].split()[1] == "300"
    assert rows(reset.stdout)["concurrency_limit"].split()[1] == "7"  # only the limit named
    everything = runner.invoke(cli, base + ["limits", "reset"], env=env)
    assert everything.exit_code == 0, everything.output
    assert (
        json.loads(runner.invoke(cli, base + ["limits", "--json"], env=env).stdout)["concurrency_limit"] == 60
    )
    assert all("settings: REPLICATE_" in row for row in rows(everything.stdout).values())
    assert "overrides" not in everything.stdout
    assert runner.invoke(cli, base + ["limits", "reset", "nope"], env=env).exit_code == 2


def test_limits_table_fits_80_columns(settings, redis_client):
    """The holders' lines were 150 columns wide; now every line fits 80 (issue 18.8)."""
    from shared.keys import Keys
    from shared.limiter import HolderInfo, Limiter

    limiter = Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings)
    leases = [
        limiter.acquire(
            HolderInfo(
                host="a-rather-long-host-name.example.internal",
                task_id="t" * 36,
                batch_id="b-20261204-af36d0-with-a-long-suffix",
                index=1234,
                model="black-forest-labs/flux-kontext-max",
                prediction_id=p,
            )
        )
        for p in ("dh5bjkfcoo2a56xktxzaoc34j4", None)
    ]
    try:
        result = CliRunner().invoke(
            cli,
            ["--redis-url", settings.redis_url, "--env-file", "/nonexistent", "limits"],
            env=cli_env(settings),
        )
    finally:
        for lease in leases:
            lease.release()
        limiter.close()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    header = next(i for i, line in enumerate(lines) if line.startswith("HOST"))
    assert header > 0 and lines[header].split() == ["HOST", "PID", "PREDICTION", "HELD", "ITEM"]
    assert (
        "dh5bjkfcoo2a56xktxzaoc34j4" in lines[header + 1] or "dh5bjkfcoo2a56xktxzaoc34j4" in lines[header + 2]
    )
    # The columns line up: every holder's PID ends where the header's does.
    end = lines[header].index("PID") + 3
    assert all(line[:end].rstrip().endswith(str(os.getpid())) for line in lines[header + 1 : header + 3])


@pytest.mark.unit
@pytest.mark.parametrize(
    "counts, total, priority, limit",
    [
        ({"succeeded": 998, "failed": 2}, 1000, "normal", None),
        ({"succeeded": 400, "running": 60, "pending": 540}, 1000, "normal", None),
        ({"succeeded": 40, "running": 6, "pending": 54}, 100, "high", 20_000_000),
        ({"succeeded": 12, "held": 88}, 100, "low", 500_000),
        ({"succeeded": 3, "canceled": 7}, 10, "normal", 1_000_000),
    ],
)
def test_list_fits_80_columns(counts, total, priority, limit):
    """`producer list` was 93+ columns wide; a default batch id with up to three states, 1000
    items, or a limit, now fits 80, every field still there (an age, short state words)."""
    from types import SimpleNamespace

    from producer.api import BatchOverview
    from producer.cli.batches import LIST_HEADER, list_row
    from producer.progress import snapshot_from_info

    now = 1_796_000_000.0
    info = SimpleNamespace(
        id="b-20261205-ab12cd", created_at=now - 3 * 3600 - 5, priority=priority, total=total, counts=counts
    )
    spend = SimpleNamespace(spent=12_340_000, reserved=10_000, limit=limit)
    row = list_row(BatchOverview(info, snapshot_from_info(info, now=now), spend), now)
    assert len(LIST_HEADER) <= 80 and len(row) <= 80, f"{LIST_HEADER}\n{row}"
    assert row.startswith("b-20261205-ab12cd 3h   ")
    done = sum(n for state, n in counts.items() if state in ("succeeded", "failed", "canceled"))
    assert f" {done}/{total} " in row and " 12.35/" in row
    assert ("norm" if priority == "normal" else priority) in row.split()
    short = {"succeeded": "ok", "running": "run", "pending": "pend"}
    assert row.endswith(" ".join(f"{short.get(state, state)} {n}" for state, n in counts.items()))


# --- init --------------------------------------------------------------------------------------------
SECRET = "r8_Secret_Token_For_Init_Test_123"


def test_init_checks_the_token_and_writes_env_with_mode_600(tmp_path, sim_factory):
    sim = sim_factory(token=SECRET)
    (tmp_path / ".env").write_text("OUTPUT_DIR=/data/out\nREPLICATE_API_TOKEN=old\n")
    os.chmod(tmp_path / ".env", 0o644)
    result = subprocess.run(
        [sys.executable, "-m", "producer.cli", "init", "--token-stdin", "--base-url", sim.url],
        cwd=tmp_path,
        input=SECRET + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    lines = env_file.read_text().splitlines()
    assert f"REPLICATE_API_TOKEN={SECRET}" in lines and "REPLICATE_API_TOKEN=old" not in lines
    assert "OUTPUT_DIR=/data/out" in lines and f"REPLICATE_BASE_URL={sim.url}" in lines
    assert list(tmp_path.iterdir()) == [env_file]  # no temp file left behind


def test_init_accepts_a_base_url_ending_in_v1_and_says_when_it_replaces_the_token(tmp_path, sim_factory):
    """`--base-url https://api.replicate.com/v1` (as Replicate's docs write it) works and is stored
    without `/v1`; a second init says it replaces the token (issue 18.8)."""
    sim = sim_factory(token=SECRET)

    def init(base_url: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "producer", "init", "--token-stdin", "--base-url", base_url],
            cwd=tmp_path,
            input=SECRET + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    first = init(sim.url + "/v1/")
    assert first.returncode == 0, first.stderr
    assert "saved in .env" in first.stdout and "replace" not in first.stdout
    assert f"REPLICATE_BASE_URL={sim.url}" in (tmp_path / ".env").read_text().splitlines()
    again = init(sim.url)
    assert again.returncode == 0 and "the same token was in .env already" in again.stdout, again.stdout
    (tmp_path / ".env").write_text("REPLICATE_API_TOKEN=r8_an_older_one\n")
    replaced = init(sim.url)
    assert replaced.returncode == 0 and "it replaces the token that was in .env" in replaced.stdout
    assert SECRET not in first.stdout + again.stdout + replaced.stdout + replaced.stderr


def test_python_dash_m_producer_is_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "producer", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: producer" in result.stdout and "submit" in result.stdout


def test_init_rejected_token_exits_2_and_writes_nothing(tmp_path, sim_factory):
    sim = sim_factory(token=SECRET)
    wrong = "r8_wrong_token_value_456"
    result = subprocess.run(
        [sys.executable, "-m", "producer.cli", "init", "--token-stdin", "--base-url", sim.url],
        cwd=tmp_path,
        input=wrong,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2, result.stderr
    assert "rejected the token" in result.stderr and wrong not in result.stdout + result.stderr
    assert not (tmp_path / ".env").exists()


def test_init_unreachable_api_exits_3_with_the_reason_and_a_hint_without_the_token(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "producer.cli", "init", "--token-stdin", "--base-url", "http://127.0.0.1:1"],
        cwd=tmp_path,
        input=SECRET,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 3, result.stderr
    first, hint = result.stderr.strip().splitlines()
    assert first.startswith("error: cannot reach http://127.0.0.1:1/v1/account: ")
    assert "Connection refused" in first  # the underlying reason, not only the exception's class
    assert hint.startswith("hint: the address came from --base-url") and "REPLICATE_BASE_URL" in hint
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr and not (tmp_path / ".env").exists()


@pytest.mark.parametrize(
    "status, body, reason",
    [(502, b"bad gateway", "HTTP 502"), (200, b"<html>not an API</html>", "did not answer an account")],
)
def test_init_against_something_that_is_not_the_api_exits_3(tmp_path, monkeypatch, status, body, reason):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.chdir(tmp_path)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(
            cli,
            ["--env-file", str(tmp_path / ".env"), "init", "--token-stdin"],
            input=SECRET + "\n",
            env={"REPLICATE_BASE_URL": url},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 3, result.output
    assert reason in result.stderr and "hint: the address came from REPLICATE_BASE_URL" in result.stderr
    assert SECRET not in result.output and not (tmp_path / ".env").exists()


def test_model_help_says_what_happens_without_a_model():
    text = " ".join(CliRunner().invoke(cli, ["submit", "--help"]).output.split())
    model_help = text.split("-m, --model OWNER/NAME", 1)[1].split("-p, --param", 1)[0]
    assert "required" not in model_help and "the registry's default model is used" in model_help
    assert "--again" in text


def test_init_without_a_terminal_asks_for_token_stdin(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "producer.cli", "init"],
        cwd=tmp_path,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2 and "--token-stdin" in result.stderr
