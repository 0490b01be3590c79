"""Every Lua script is kept and loaded one way (shared.lua_scripts): an error raised while a script
runs names the file and line it comes from -- in the prelude or in the script itself -- although
Redis numbers the lines of the whole text it was sent."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest
import redis

from shared import lua_scripts
from shared.errors import LimiterError
from shared.keys import Keys
from shared.limiter import Limiter, Limits
from shared.limiter.limiter import KEY_NAMES


def line_of(package: str, file_name: str, code: str) -> int:
    """The line of `file_name` that holds `code` (so the test follows the file when it changes)."""
    lines = files(package).joinpath(file_name).read_text().splitlines()
    (number,) = [n for n, line in enumerate(lines, start=1) if code in line]
    return number


@pytest.fixture
def limiter(redis_client, key_prefix):
    limiter = Limiter(
        redis_client,
        Keys(key_prefix),
        Limits(concurrency_limit=2, create_limit=5, read_limit=50, rate_window=1.0),
        lease_seconds=1.5,
        orphan_seconds=3.0,
    )
    yield limiter
    limiter.close()


def test_lines_of_the_prelude_and_of_the_script_are_told_apart():
    """Pure logic: line N of the text sent is line N of the prelude, then the script's own."""
    src = lua_scripts.ScriptSource("op", "", (("common.lua", 3), ("op.lua", 2)))
    assert [src.locate(n) for n in (1, 3, 4, 5)] == ["common.lua:1", "common.lua:3", "op.lua:1", "op.lua:2"]
    message = "ERR user_script:4: boom script: 5ed1, on @user_script:4."
    assert src.translate(message) == "ERR op.lua:1: boom script: 5ed1, on @op.lua:1."


def test_an_error_in_a_script_names_its_own_file_and_line(limiter):
    with pytest.raises(LimiterError) as caught:
        limiter._call("heartbeat", 600, "not JSON")  # decoded by heartbeat.lua itself
    line = line_of("shared.limiter.lua", "heartbeat.lua", "cjson.decode(ARGV[4])")
    message = str(caught.value)
    assert f"heartbeat.lua:{line}: " in message and f"@heartbeat.lua:{line}." in message, message
    assert "user_script" not in message


def test_an_error_in_the_prelude_names_the_prelude(redis_client, key_prefix):
    status = lua_scripts.register(redis_client, "shared.limiter.lua", ["status"], prelude="common")["status"]
    keys = [Keys(key_prefix).limiter_key(name) for name in KEY_NAMES]
    with pytest.raises(redis.ResponseError) as caught:
        status(keys=keys, args=["{not JSON", ""])  # the config, decoded by common.lua
    line = line_of("shared.limiter.lua", "common.lua", "local CFG = cjson.decode(ARGV[1])")
    assert f"common.lua:{line}: " in str(caught.value), caught.value


def test_a_refusal_raised_on_purpose_names_where_it_was_raised(limiter):
    """The scripts refuse bad input with fail() (common.lua): the message says what, the location
    where it was raised, and the exception says which script."""
    with pytest.raises(LimiterError) as caught:
        limiter._call("set_limits", json.dumps({"nonsense": 3}), 0)
    line = line_of("shared.limiter.lua", "common.lua", "error({err = 'ERR limiter: ' .. message})")
    message = str(caught.value)
    assert message.startswith("limiter script set_limits failed: limiter: unknown limit nonsense"), message
    assert message.endswith(f"@common.lua:{line}."), message


def test_a_script_without_a_prelude_names_its_file(redis_client, key_prefix):
    (stamp,) = lua_scripts.register(redis_client, "workers.lua", ["attempt_stamp"]).values()
    with pytest.raises(redis.ResponseError) as caught:
        stamp(keys=[f"{key_prefix}:attempt"], args=["posting_at", "not a number"])  # the ttl
    line = line_of("workers.lua", "attempt_stamp.lua", "redis.call('EXPIRE', KEYS[1], ARGV[2])")
    assert f"@attempt_stamp.lua:{line}." in str(caught.value), caught.value


def test_an_error_in_an_inserted_function_names_the_insert(redis_client, key_prefix):
    """attempt_intent.lua calls attempt_common.lua's function (sent in front of it, after
    ledger_common.lua): the error names the line of the insert, not of the text sent."""
    inserts = {"attempt_intent": (("shared.lua", "ledger_common"), ("workers.lua", "attempt_common"))}
    (intent,) = lua_scripts.register(
        redis_client, "workers.lua", ["attempt_intent"], inserts=inserts
    ).values()
    with pytest.raises(redis.ResponseError) as caught:
        intent(
            keys=[f"{key_prefix}:attempt", f"{key_prefix}:unresolved"], args=["some/model", "not a number"]
        )
    lines = files("workers.lua").joinpath("attempt_common.lua").read_text().splitlines()
    start = line_of("workers.lua", "attempt_common.lua", "local function attempt_write_intent(")
    line = next(n for n in range(start, len(lines)) if "redis.call('EXPIRE', record, ttl)" in lines[n - 1])
    assert f"@attempt_common.lua:{line}." in str(caught.value), caught.value


def test_an_unbound_script_runs_on_the_client_each_call_names(private_redis):
    """`LuaScript(None, ...)` (kombu's unacked bookkeeping, workers.kombu_patches): no client until
    a call names one; after a Redis restart empties the script cache it loads itself again, and
    its errors name their file and line like a bound script's."""
    append = lua_scripts.LuaScript(None, lua_scripts.source("workers.lua", "unacked_append"))
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    client.script_flush()  # as after a restart (its own server: others' scripts stay cached)
    keys, args = ["unacked_index", "unacked"], ["tag", "message"]
    append(keys=keys, args=args, client=client)
    assert client.zrange("unacked_index", 0, -1) == ["tag"] and client.hget("unacked", "tag") == "message"
    client.set("unacked_index", "not a zset")
    with pytest.raises(redis.ResponseError) as caught:
        append(keys=keys, args=args, client=client)
    line = line_of("workers.lua", "unacked_append.lua", "redis.call('ZADD'")
    assert f"@unacked_append.lua:{line}." in str(caught.value), caught.value
