from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import Settings

pytestmark = pytest.mark.unit


def test_defaults_match_the_design_brief():
    s = Settings.load(environ={}, dotenv_path=None)
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert (s.concurrency_limit, s.create_limit, s.read_limit, s.rate_window) == (60, 600, 3000, 60.0)
    assert s.output_dir == Path("./output")
    assert s.replicate_api_token is None


def test_precedence_dotenv_then_environment_then_overrides(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("REPLICATE_CREATE_LIMIT=100\nREPLICATE_READ_LIMIT=200\nOUTPUT_DIR=/from/dotenv\n")
    s = Settings.load(
        {"output_dir": Path("/from/flag"), "concurrency_limit": None},
        environ={"REPLICATE_READ_LIMIT": "300", "REPLICATE_GLOBAL_MAX_CONCURRENT": "7"},
        dotenv_path=env_file,
    )
    assert s.create_limit == 100  # .env
    assert s.read_limit == 300  # environment beats .env
    assert s.output_dir == Path("/from/flag")  # override beats both
    assert s.concurrency_limit == 7  # a None override leaves the value alone


def test_token_never_in_repr():
    s = Settings.load({"replicate_api_token": "r8_secretsecretsecret"}, environ={}, dotenv_path=None)
    assert "r8_secret" not in repr(s)
    assert "r8_secret" not in str(s)


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"REPLICATE_GLOBAL_MAX_CONCURRENT": "ten"}, "REPLICATE_GLOBAL_MAX_CONCURRENT='ten'"),
        ({"REPLICATE_CREATE_LIMIT": "0"}, "create_limit must be at least 1"),
        ({"REPLICATE_RATE_WINDOW": "-1"}, "positive"),
    ],
)
def test_bad_values_are_clear_errors(env, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        Settings.load(environ=env, dotenv_path=None)


def test_unknown_override_is_rejected():
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.load({"concurrency": 3}, environ={}, dotenv_path=None)


def test_as_env_round_trips(tmp_path):
    s = Settings.load({"create_limit": 42, "output_dir": tmp_path}, environ={}, dotenv_path=None)
    again = Settings.load(environ=s.as_env(), dotenv_path=None)
    assert again == s


@pytest.mark.parametrize(
    "raw",
    [
        "https://api.replicate.com",
        "https://api.replicate.com/",
        "https://api.replicate.com/v1",
        "https://api.replicate.com/v1/",
    ],
)
def test_replicate_base_url_with_or_without_v1(raw):
    """Replicate's docs write URLs with /v1; the official client adds it itself (issue 18.8)."""
    settings = Settings.load(environ={"REPLICATE_BASE_URL": raw}, dotenv_path=None)
    assert settings.replicate_base_url == "https://api.replicate.com"
