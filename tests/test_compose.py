"""No Docker engine runs here, so the compose files, the Dockerfile and .env.example are checked as
data: the properties the operations rely on, that every variable has a documented entry, and —
through a small re-implementation of Compose's `${...}` interpolation — what the services actually
get for a given .env (the default single-host stack, a FLEET_REDIS_URL override, and the
worker-only file for other hosts)."""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import _ENV as SETTINGS_ENV

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
WORKER_COMPOSE_FILE = ROOT / "docker-compose.worker.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

# ${NAME}, ${NAME:-default}, ${NAME:?message}; `$$` is an escaped dollar for the container's shell.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")

# What a user's .env holds at the least for the single-host stack.
BASE_ENV = {"REDIS_PASSWORD": "pw-from-env", "FLOWER_BASIC_AUTH": "ops:flower-pw"}


# --- Compose's interpolation, as compose-go implements it -----------------------------------------
class MissingVariable(Exception):
    pass


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` closing the `${` at `start`, counting nested `${`."""
    depth, i = 0, start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i)
            out.append(_substitute(text[i + 2 : end], env))
            i = end + 1
        elif text[i] == "$" and (m := re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1 :])):
            out.append(env.get(m.group(), ""))
            i += 1 + len(m.group())
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _substitute(expr: str, env: Mapping[str, str]) -> str:
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", expr, flags=re.S)
    assert m, f"not a Compose variable expression: ${{{expr}}}"
    name, op, arg = m.groups()
    value = env.get(name)
    if op is None:
        return value or ""
    # compose-go interpolates the default / message first, whether it is used or not.
    arg = interpolate(arg, env)
    if op in (":-", "-"):
        return arg if value is None or (op == ":-" and value == "") else value
    if value is None or (op == ":?" and value == ""):
        raise MissingVariable(f"{name}: {arg}")
    return value


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    """The parsed compose file with every string interpolated (Compose does it on values)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def compose_duration(text: str) -> float:
    """Seconds in a Compose duration (Go's format: `150s`, `2m30s`, `1h`, `1.5m`, `500ms`)."""
    text = text.strip()
    if text == "0":
        return 0.0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Compose duration: {text!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


# --- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def worker_compose() -> dict:
    return yaml.safe_load(WORKER_COMPOSE_FILE.read_text())


def env_example_names() -> set[str]:
    """Names with an entry in .env.example, set (NAME=...) or shown commented (# NAME=...)."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))


def command_list(service: dict) -> list[str]:
    command = service.get("command", [])
    return list(command) if isinstance(command, list) else str(command).split()


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def env_of(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def volume_targets(service: dict) -> dict[str, str]:
    """container path -> source, for short-syntax volumes (`source:target[:mode]`)."""
    result = {}
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"use the short volume syntax: {volume}"
        # the source may itself contain `:` inside ${VAR:-default}
        source, target = re.match(r"^((?:\$\{[^}]*\}|[^:])+):([^:]+)(?::(?:ro|rw))?$", volume).groups()
        result[target] = source
    return result


def builds_our_image(service: dict) -> bool:
    return "build" in service


def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


# --- the interpolation helper itself ---------------------------------------------------------------
def test_interpolation_and_durations_behave_like_compose():
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("${A}-${B:-x}-${EMPTY:-y}-${EMPTY-z}-$$A-$A", env) == "1-x-y--$A-1"
    assert interpolate("${B:-a${A}b${C:-c}}", env) == "a1bc"
    with pytest.raises(MissingVariable, match="B: say"):
        interpolate("${B:?say}", env)
    with pytest.raises(MissingVariable):  # a nested required variable fails even when not used
        interpolate("${A:-${B:?say}}", env)
    assert compose_duration("150s") == 150 and compose_duration("2m30s") == 150
    assert compose_duration("1h") == 3600 and compose_duration("1.5m") == 90
    assert compose_duration("500ms") == 0.5
    for bad in ("150", "2x", "s", "1m 30s", ""):
        with pytest.raises(ValueError):
            compose_duration(bad)


# --- docker-compose.yml -----------------------------------------------------------------------------
def test_services_and_profiles(services):
    assert {"redis", "worker", "flower", "producer", "replicate-sim", "metrics"} <= set(services)
    assert services["producer"].get("profiles") == ["tools"]
    assert services["replicate-sim"].get("profiles") == ["dev"]
    for name in ("redis", "worker", "flower", "metrics"):
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"


def test_no_service_leaves_the_compose_network(services):
    for name, service in services.items():
        assert "network_mode" not in service, f"{name}: network_mode bypasses the private network"
        assert "privileged" not in service and "pid" not in service, name
        assert str(service.get("user", "")).split(":")[0] not in ("0", "root"), name


def test_redis_is_private_persistent_noeviction_and_password_protected(services):
    redis = services["redis"]
    command = command_text(redis)
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert re.search(r'--requirepass "?\$\$REDIS_PASSWORD', command), "password from the environment"
    assert env_of(redis)["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?"), "no default password"
    assert "ports" not in redis, "Redis must not be published to the host by default"
    assert "6379" in [str(p) for p in redis.get("expose", [])]
    assert volume_targets(redis).get("/data") == "redis-data", "append-only file on the named volume"
    test = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in test and "-a" in test.split() and "REDIS_PASSWORD" in test


def test_redis_runs_as_the_redis_user_and_fsyncs_every_write(services):
    command = command_list(services["redis"])
    assert command[:2] == ["sh", "-c"], command
    script = command[2]
    # The official image drops root (gosu redis) only through its entrypoint, and only when the
    # first argument is redis-server; exec keeps redis-server as PID 1 (it gets SIGTERM).
    assert re.match(r"^exec docker-entrypoint\.sh redis-server\s", script), script
    assert "entrypoint" not in services["redis"], "the image's own entrypoint must stay in charge"
    # An attempt's intent and prediction id must survive a Redis crash: fsync before answering.
    assert re.search(r"--appendfsync always\b", script), script
    assert "everysec" not in script and "--appendfsync no" not in script


def test_worker_is_scalable_and_shuts_down_warm(services):
    from workers.celery_app import SOFT_SHUTDOWN_SECONDS

    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "build" in worker
    command = command_text(worker)
    assert command.startswith("celery -A workers worker")
    assert "--task-events" in command or " -E" in command, "Flower needs task events"
    assert "%h" in command, "node name unique per replica"
    assert worker["stop_signal"] == "SIGTERM"
    grace = compose_duration(resolve(worker["stop_grace_period"], {}))
    assert grace >= 60, "warm shutdown needs time to hand back tasks and release slots"
    assert grace > SOFT_SHUTDOWN_SECONDS, "a soft shutdown (SIGQUIT) must end before Compose's SIGKILL"
    assert compose_duration(resolve(worker["stop_grace_period"], {"WORKER_STOP_GRACE": "2m30s"})) == 150
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_service_of_ours_is_built_from_the_repos_dockerfile(services, worker_compose):
    for file_services in (services, worker_compose["services"]):
        for name, service in file_services.items():
            if not builds_our_image(service):
                continue
            build = service["build"]
            assert (ROOT / build["context"]).resolve() == ROOT, name
            assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE.resolve(), name
            assert service["image"].startswith("replicate-fleet:"), name
    built = {name for name, service in services.items() if builds_our_image(service)}
    assert built == set(services) - {"redis", "minio", "minio-bucket"}, (
        "every service but Redis and the object store runs the project's image"
    )


def test_every_command_program_exists_in_the_image(services, worker_compose):
    """The program each service runs: one of the project's console scripts (pyproject.toml), the
    `celery` script of a declared dependency, or `python -m <a module of this repo>`."""
    project = pyproject()["project"]
    scripts = project["scripts"]
    dependencies = " ".join(project["dependencies"])
    for name, service in [*services.items(), *worker_compose["services"].items()]:
        if not builds_our_image(service):
            continue
        argv = list(service.get("entrypoint") or []) + command_list(service)
        program = argv[0]
        if program == "celery":
            assert re.search(r"\bcelery\b", dependencies), name
            assert argv[1:3] == ["-A", "workers"] and (ROOT / "workers" / "__init__.py").is_file(), name
        elif program in ("python", "python3"):
            assert argv[1] == "-m", name
            assert importlib.util.find_spec(argv[2]) is not None, f"{name}: no module {argv[2]}"
            assert (ROOT / Path(*argv[2].split("."))).with_suffix(".py").is_file(), name
        else:
            assert program in scripts, f"{name}: {program!r} is not a console script of pyproject.toml"
            module, _, function = scripts[program].partition(":")
            assert callable(getattr(importlib.import_module(module), function)), scripts[program]


def test_redis_url_inside_compose_carries_the_password(services):
    for name in ("worker", "flower", "producer", "metrics", "webhooks"):
        env = env_of(services[name])
        assert env["REDIS_URL"].startswith("${FLEET_REDIS_URL:-redis://:${REDIS_PASSWORD:?"), name
        assert "@redis:6379/" in env["REDIS_URL"], name
        assert env["CELERY_BROKER_URL"] == env["REDIS_URL"], name


def test_resolved_urls_default_to_the_compose_redis_and_follow_fleet_redis_url(compose):
    resolved = resolve(compose, BASE_ENV)["services"]
    for name in ("worker", "flower", "producer", "metrics", "webhooks"):
        env = env_of(resolved[name])
        assert env["REDIS_URL"] == env["CELERY_BROKER_URL"] == "redis://:pw-from-env@redis:6379/0", name
    remote = "rediss://:p%40ss@redis.example:6380/0?ssl_cert_reqs=required"
    env = {**BASE_ENV, "FLEET_REDIS_URL": remote, "REDIS_URL": "redis://127.0.0.1:6379/0"}
    resolved = resolve(compose, env)["services"]
    for name in ("worker", "flower", "producer", "metrics", "webhooks"):
        assert env_of(resolved[name])["REDIS_URL"] == remote, name  # .env's REDIS_URL is for the host
    for missing in ("REDIS_PASSWORD", "FLOWER_BASIC_AUTH"):
        with pytest.raises(MissingVariable, match=missing):
            resolve(compose, {k: v for k, v in BASE_ENV.items() if k != missing})


def test_flower_auth_persistence_port_and_address(compose, services):
    flower = services["flower"]
    env = env_of(flower)
    assert env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?"), "auth is mandatory"
    assert env["REPLICATE_API_TOKEN"] == "", "Flower gets no token"
    command = command_text(flower)
    assert "celery -A workers flower" in command
    assert "--persistent=True" in command
    # Inside its container Flower listens on every interface; the host port is on FLOWER_BIND.
    assert "--address=0.0.0.0" in command_list(flower)
    db = re.search(r"--db=(\S+)", command).group(1)
    mounts = volume_targets(flower)
    assert any(db.startswith(path + "/") and source == "flower-data" for path, source in mounts.items()), (
        "Flower's state file is on the flower-data volume"
    )
    [port] = flower["ports"]
    assert port.startswith("${FLOWER_BIND:-127.0.0.1}:") and port.endswith(":5555")
    assert resolve(port, BASE_ENV) == "127.0.0.1:5555:5555"
    # The exporter (no auth) likewise: every interface inside its container (it defaults to
    # 127.0.0.1, unreachable through a published port), the host port on METRICS_BIND.
    metrics = services["metrics"]
    assert command_list(metrics)[-2:] == ["--address", "0.0.0.0"]
    [port] = metrics["ports"]
    assert resolve(port, BASE_ENV) == "127.0.0.1:9808:9808"
    assert "healthcheck" in flower


def test_webhook_receiver_is_opt_in_and_published_on_localhost_by_default(services):
    hooks = services["webhooks"]
    assert hooks.get("profiles") == ["webhooks"]
    assert command_text(hooks).startswith("fleet-webhooks")
    assert hooks["env_file"] == [".env"] and env_of(hooks)["REDIS_URL"].startswith(
        "${FLEET_REDIS_URL:-redis://:"
    )
    [port] = hooks["ports"]
    assert port.startswith("${WEBHOOKS_BIND:-127.0.0.1}:") and port.endswith(":8785")
    assert "/healthz" in " ".join(hooks["healthcheck"]["test"])


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if "tools" not in service.get("profiles", []) and service.get("restart") != "no":  # not one-shots
            assert "healthcheck" in service, name


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    assert {"redis-data", "flower-data", "output"} <= declared
    for name, service in services.items():
        for source in volume_targets(service).values():
            if not source.startswith((".", "/", "$", "~")):
                assert source in declared, f"{name}: volume {source!r} is not declared at the top level"


def test_shared_output_volume_input_mount_and_env_file(compose, services):
    resolved = resolve(compose, BASE_ENV)["services"]
    for name in ("worker", "producer"):
        assert volume_targets(services[name]).get("/data/output") == "output", name
        assert env_of(resolved[name])["OUTPUT_DIR"] == "/data/output"
    for name in ("worker", "flower", "producer", "metrics"):
        assert services[name]["env_file"] == [".env"], name
    # Reference images and prompts.json: the producer's working directory is the host's input
    # directory, and the workers see the same files at the same path.
    producer, worker = services["producer"], services["worker"]
    assert producer["working_dir"] == "/input"
    assert producer["entrypoint"] == ["producer"]
    for service in (producer, worker):
        assert "${FLEET_INPUT_DIR:-./input}:/input:ro" in service["volumes"]
    assert volume_targets(resolve(producer, BASE_ENV))["/input"] == "./input"


# --- docker-compose.worker.yml ------------------------------------------------------------------
def test_worker_only_file_runs_the_same_worker_against_a_remote_redis(services, worker_compose):
    assert set(worker_compose["services"]) == {"worker"}, "worker hosts run no Redis, Flower, ..."
    remote = worker_compose["services"]["worker"]
    local = services["worker"]
    assert "depends_on" not in remote, "there is no redis service to wait for on a worker host"
    assert "ports" not in remote and "container_name" not in remote and "network_mode" not in remote
    assert remote["command"] == local["command"], "the same worker command line as docker-compose.yml"
    for key in ("stop_signal", "healthcheck", "env_file", "restart", "build", "image"):
        assert remote[key] == local[key], key
    for env in ({}, {"WORKER_STOP_GRACE": "5m"}):
        assert compose_duration(resolve(remote["stop_grace_period"], env)) == compose_duration(
            resolve(local["stop_grace_period"], env)
        )
    env = env_of(remote)
    assert env["REDIS_URL"].startswith("${FLEET_REDIS_URL:?"), "no silent default on a worker host"
    assert env["CELERY_BROKER_URL"].startswith("${FLEET_REDIS_URL:?")
    assert env["OUTPUT_DIR"] == "/data/output"
    targets = volume_targets(remote)
    assert {"/data/output", "/input"} <= set(targets)
    declared = set(worker_compose.get("volumes") or {})
    for source in targets.values():
        assert source.startswith(("${", ".", "/")) or source in declared, source


def test_worker_only_file_resolves_with_just_the_remote_url(worker_compose):
    url = "rediss://:tok3n_urlsafe-pw@redis.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/run/fleet-tls/ca.pem"
    # No REDIS_PASSWORD or FLOWER_BASIC_AUTH on a worker host: nothing else is required.
    resolved = resolve(worker_compose, {"FLEET_REDIS_URL": url, "REDIS_URL": "redis://127.0.0.1:6379/0"})
    env = env_of(resolved["services"]["worker"])
    assert env["REDIS_URL"] == env["CELERY_BROKER_URL"] == url
    assert volume_targets(resolved["services"]["worker"])["/run/fleet-tls"] == "./tls"
    with pytest.raises(MissingVariable, match="FLEET_REDIS_URL"):
        resolve(worker_compose, {"REDIS_PASSWORD": "x"})
    assert compose_duration(resolved["services"]["worker"]["stop_grace_period"]) == 150


# --- .env.example, Dockerfile ---------------------------------------------------------------------------
def test_every_variable_has_an_entry_in_env_example():
    documented = env_example_names()
    for path in (COMPOSE_FILE, WORKER_COMPOSE_FILE):
        used = set(INTERPOLATION.findall(path.read_text()))
        assert used, f"the pattern found nothing in {path.name}: the test would be vacuous"
        assert used - documented == set(), f"{path.name}: variables missing from .env.example"
    assert set(SETTINGS_ENV) - documented == set(), "settings missing from .env.example"


def test_env_example_holds_no_secret():
    text = ENV_EXAMPLE.read_text()
    assert re.search(r"^REPLICATE_API_TOKEN=\s*$", text, flags=re.MULTILINE)
    assert re.search(r"^REDIS_PASSWORD=\s*$", text, flags=re.MULTILINE)
    # An example login would pass compose's ${FLOWER_BASIC_AUTH:?} guard and ship a known password.
    assert re.search(r"^FLOWER_BASIC_AUTH=\s*$", text, flags=re.MULTILINE)
    assert not re.search(r"r8_[A-Za-z0-9]{20,}", text)
    assigned = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE))
    for name, value in assigned.items():
        if re.search(r"TOKEN|PASSWORD|SECRET|AUTH|_URL$", name):
            assert value.strip() == "", f"{name} must be empty in .env.example"


def test_dockerfile_is_slim_non_root_and_secret_free():
    text = DOCKERFILE.read_text()
    instructions = [
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert instructions[0].startswith("FROM python:3.11-slim")
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must run as a non-root user"
    for line in instructions:
        if line.startswith(("COPY", "ADD")):
            assert ".env" not in line.split(), line
            assert not re.search(r"\s\.\s", f" {line} ") or "--chown" in line, (
                f"copy specific paths, not the tree: {line}"
            )
        if line.startswith(("ENV", "ARG")):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|BASIC_AUTH", line), f"no secret baked in: {line}"
    # The project is installed, so its console scripts (producer, fleet-webhooks, ...) exist.
    assert re.search(r"pip install --no-deps \.", text)
    for package in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]:
        top = package.rstrip("*")
        assert re.search(rf"^COPY {top} \./{top}$", text, flags=re.MULTILINE), (
            f"{top} is not copied into the image"
        )
    ignored = DOCKERIGNORE.read_text().split()
    assert ".env" in ignored and ".git/" in ignored and "tls/" in ignored


def test_the_s3_profile_runs_minio_with_a_created_bucket_and_the_fleet_can_write_there(compose, services):
    minio, bucket = services["minio"], services["minio-bucket"]
    assert minio["profiles"] == bucket["profiles"] == ["s3"]
    assert "minio server /data" in command_text(minio) and "MINIO_ROOT_PASSWORD" in command_text(minio)
    assert "9000" in minio["expose"] and all(
        p.startswith("${MINIO_CONSOLE_BIND:-127.0.0.1}:") for p in minio["ports"]
    )
    assert volume_targets(minio)["/data"] == "minio-data" and "minio-data" in compose["volumes"]
    assert "mc ready local" in " ".join(minio["healthcheck"]["test"])
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in command_text(bucket) and "$$MINIO_BUCKET" in command_text(bucket)
    # the default profile needs no MinIO password; with the s3 profile the services write to the bucket
    plain = resolve(compose, BASE_ENV)["services"]
    assert env_of(plain["minio"])["MINIO_ROOT_PASSWORD"] == ""
    with_s3 = resolve(compose, {**BASE_ENV, "FLEET_OUTPUT_LOCATION": "s3://fleet-outputs/runs"})["services"]
    for name in ("worker", "producer", "flower", "metrics"):
        assert env_of(with_s3[name])["OUTPUT_DIR"] == "s3://fleet-outputs/runs", name
    assert "s3" in pyproject()["project"]["optional-dependencies"]
    assert "[s3" in DOCKERFILE.read_text(), "the image carries the object-store extra"


def test_the_license_is_an_spdx_expression_so_installs_print_no_deprecation():
    """`make demo` (pip install -e) printed setuptools' "`project.license` as a TOML table is
    deprecated" three times: the license is an SPDX string, which needs setuptools >= 77 to
    build (issue 18.8; checked by hand with `pip wheel --no-deps -v .`)."""
    data = pyproject()
    assert isinstance(data["project"]["license"], str) and data["project"]["license"] == "MIT"
    requires = " ".join(data["build-system"]["requires"])
    minimum = re.search(r"setuptools>=(\d+)", requires)
    assert minimum and int(minimum.group(1)) >= 77, requires
