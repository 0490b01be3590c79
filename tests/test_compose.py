"""No Docker engine runs here, so the compose file, the Dockerfile and .env.example are checked as
data: the properties the operations rely on, and that every variable has a documented entry."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from shared.settings import _ENV as SETTINGS_ENV

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"

# ${NAME}, ${NAME:-default}, ${NAME:?message}; `$$` is an escaped dollar for the container's shell.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_example_names() -> set[str]:
    """Names with an entry in .env.example, set (NAME=...) or shown commented (# NAME=...)."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def env_of(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def test_services_and_profiles(services):
    assert {"redis", "worker", "flower", "producer", "replicate-sim"} <= set(services)
    assert services["producer"].get("profiles") == ["tools"]
    assert services["replicate-sim"].get("profiles") == ["dev"]
    for name in ("redis", "worker", "flower"):
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"


def test_redis_is_private_persistent_noeviction_and_password_protected(services):
    redis = services["redis"]
    command = command_text(redis)
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert re.search(r'--requirepass "?\$\$REDIS_PASSWORD', command), "password from the environment"
    assert env_of(redis)["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?"), "no default password"
    assert "ports" not in redis, "Redis must not be published to the host by default"
    assert "6379" in [str(p) for p in redis.get("expose", [])]
    assert any(v.endswith(":/data") for v in redis["volumes"]), "append-only file on a volume"
    test = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in test and "-a" in test.split() and "REDIS_PASSWORD" in test


def test_worker_is_scalable_and_shuts_down_warm(services):
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "build" in worker
    command = command_text(worker)
    assert command.startswith("celery -A workers worker")
    assert "--task-events" in command or " -E" in command, "Flower needs task events"
    assert "%h" in command, "node name unique per replica"
    assert worker["stop_signal"] == "SIGTERM"
    grace = worker["stop_grace_period"]
    seconds = int(re.search(r"(\d+)s", grace.split(":-")[-1]).group(1))
    assert seconds >= 60, "warm shutdown needs time to hand back tasks and release slots"
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_url_inside_compose_carries_the_password(services):
    for name in ("worker", "flower", "producer", "metrics"):
        env = env_of(services[name])
        assert env["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?"), name
        assert "@redis:6379/" in env["REDIS_URL"], name
        assert env["CELERY_BROKER_URL"] == env["REDIS_URL"], name


def test_flower_auth_persistence_and_port(services):
    flower = services["flower"]
    env = env_of(flower)
    assert env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?"), "auth is mandatory"
    assert env["REPLICATE_API_TOKEN"] == "", "Flower gets no token"
    command = command_text(flower)
    assert "celery -A workers flower" in command
    assert "--persistent=True" in command
    db = re.search(r"--db=(\S+)", command).group(1)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in flower["volumes"]}
    assert any(db.startswith(path + "/") for path in mounts), "Flower's state file is on a volume"
    assert any(str(p).endswith(":5555") for p in flower["ports"])
    assert "healthcheck" in flower


def test_webhook_receiver_is_opt_in_and_published_on_localhost_by_default(services):
    hooks = services["webhooks"]
    assert hooks.get("profiles") == ["webhooks"]
    assert command_text(hooks).startswith("fleet-webhooks")
    assert hooks["env_file"] == [".env"] and env_of(hooks)["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
    [port] = hooks["ports"]
    assert port.startswith("${WEBHOOKS_BIND:-127.0.0.1}:") and port.endswith(":8785")
    assert "/healthz" in " ".join(hooks["healthcheck"]["test"])


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if "tools" not in service.get("profiles", []):
            assert "healthcheck" in service, name


def test_shared_output_volume_and_env_file(compose, services):
    assert "output" in compose["volumes"]
    for name in ("worker", "producer"):
        assert "output:/data/output" in services[name]["volumes"], name
        assert env_of(services[name])["OUTPUT_DIR"] == "/data/output"
    for name in ("worker", "flower", "producer", "metrics"):
        assert services[name]["env_file"] == [".env"], name
    # Reference images: the producer's working directory is visible to the workers at the same path.
    assert services["producer"]["working_dir"] == "/input"
    assert any(v.endswith(":/input:ro") for v in services["worker"]["volumes"])


def test_every_variable_has_an_entry_in_env_example():
    documented = env_example_names()
    used = set(INTERPOLATION.findall(COMPOSE_FILE.read_text()))
    assert used, "the pattern found nothing: the test would be vacuous"
    assert used - documented == set(), "compose variables missing from .env.example"
    assert set(SETTINGS_ENV) - documented == set(), "settings missing from .env.example"


def test_env_example_holds_no_secret():
    text = ENV_EXAMPLE.read_text()
    assert re.search(r"^REPLICATE_API_TOKEN=\s*$", text, flags=re.MULTILINE)
    assert re.search(r"^REDIS_PASSWORD=\s*$", text, flags=re.MULTILINE)
    assert not re.search(r"r8_[A-Za-z0-9]{20,}", text)


def test_dockerfile_is_slim_non_root_and_secret_free():
    text = DOCKERFILE.read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert instructions[0].startswith("FROM python:3.11-slim")
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must run as a non-root user"
    for line in instructions:
        if line.startswith(("COPY", "ADD")):
            assert ".env" not in line.split(), line
            assert not re.search(r"\s\.\s", f" {line} ") or "--chown" in line, f"copy specific paths, not the tree: {line}"
        if line.startswith(("ENV", "ARG")):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|BASIC_AUTH", line), f"no secret baked in: {line}"
    ignored = DOCKERIGNORE.read_text().split()
    assert ".env" in ignored and ".git/" in ignored
