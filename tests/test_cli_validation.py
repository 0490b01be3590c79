"""Every malformed input is rejected through the CLI: exit 2, a message naming the item and the
field, and nothing written — Redis keys under our prefix (batch, items, Celery queue) and the
output folder are exactly as before. Redis is reachable and real, so a bad input that slipped
through would show up as a recorded batch."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from PIL import Image

from producer.cli import cli
from tests.support.redis_db import delete_prefix

LONG = "a" * 20_000

# (name, prompts.json text, extra CLI args, fragments that must all appear in stderr)
CASES = [
    ("bad json", '[{"prompt": "a",}]', [], ["item 0", "line 1, column 16: a trailing comma"]),
    ("empty file", "", [], ["empty"]),
    ("top-level number", "42", [], ["expected a list"]),
    ("no items", "[]", [], ["no items"]),
    ("item not an object", "[42]", [], ["item 0", "integer"]),
    ("missing prompt", '[{"model": "black-forest-labs/flux-dev"}]', [], ["item 0", "'prompt'", "missing"]),
    ("blank prompt", '[{"prompt": "   "}]', [], ["item 0", "'prompt'", "empty"]),
    ("prompt not text", '[{"prompt": 5}]', [], ["item 0", "'prompt'"]),
    ("prompt too long", json.dumps([LONG]), [], ["item 0", "'prompt'", "limit"]),
    ("unknown field", '[{"prompt": "a", "colour": 1}]', [], ["item 0", "'colour'", "unknown field"]),
    ("unknown model", '[{"prompt": "a", "model": "nope-model"}]', [], ["item 0", "'model'", "Known models"]),
    (
        "unknown model in defaults",
        '{"model": "nope", "items": ["a", "b"]}',
        [],
        ["file defaults, field 'model'", "Known models"],
    ),
    (
        "unknown top-level key without items",
        '{"model": "black-forest-labs/flux-dev", "itemz": ["a"]}',
        [],
        ["field 'itemz'", "Did you mean 'items'?", "needs 'items'"],
    ),
    ("unknown param", '[{"prompt": "a", "params": {"bogus": 1}}]', [], ["item 0", "params.bogus"]),
    (
        "param value not allowed",
        '[{"prompt": "a", "params": {"aspect_ratio": "7:3"}}]',
        [],
        ["item 0", "params.aspect_ratio", "7:3"],
    ),
    ("params not an object", '[{"prompt": "a", "params": "x"}]', [], ["item 0", "'params'"]),
    (
        "flag param out of range",
        '["a"]',
        ["-m", "black-forest-labs/flux-dev", "-p", "num_outputs=99"],
        ["field '--param num_outputs'", "above the maximum"],
    ),
    ("malformed --param", '["a"]', ["-p", "novalue"], ["--param", "key=value"]),
    (
        "reference missing",
        '[{"prompt": "a", "image_input": ["missing.png"]}]',
        [],
        ["item 0", "image_input[0]", "not found"],
    ),
    (
        "reference not an image",
        '[{"prompt": "a", "image_input": ["notimage.png"]}]',
        [],
        ["item 0", "image_input[0]", "not an image"],
    ),
    (
        "too many references",
        '[{"prompt": "a", "model": "google/nano-banana", '
        '"image_input": ["ok.png", "ok.png", "ok.png", "ok.png"]}]',
        [],
        ["item 0", "'image_input'"],
    ),
    ("absolute output", '[{"prompt": "a", "output": "/tmp/x.png"}]', [], ["item 0", "'output'", "absolute"]),
    ("output escapes with ..", '[{"prompt": "a", "output": "../x.png"}]', [], ["item 0", "'output'", ".."]),
    (
        "output escapes through a symlink",
        '[{"prompt": "a", "output": "link/x.png"}]',
        [],
        ["item 0", "'output'", "symbolic link"],
    ),
    (
        "two items, one file",
        '[{"prompt": "a", "output": "same.png"}, {"prompt": "b", "output": "same.png"}]',
        [],
        ["item 1", "'output'", "item 0"],
    ),
    (
        "existing file without --overwrite",
        '[{"prompt": "a", "output": "exists.png"}]',
        [],
        ["item 0", "'output'", "--overwrite"],
    ),
    (
        "duplicate ids",
        '[{"prompt": "a", "id": "x"}, {"prompt": "b", "id": "x"}]',
        [],
        ["item 1", "'x'", "'id'"],
    ),
    ("items not a list", '{"items": 5}', [], ["'items'"]),
    (
        "NaN",
        '[{"prompt": "a", "params": {"seed": NaN}}]',
        [],
        ["item 0, field 'params.seed'", "line 1, column 37", "NaN"],
    ),
    (
        "duplicate key",
        '[{"prompt": "a", "prompt": "b"}]',
        [],
        ["item 0, field 'prompt'", "line 1, column 18", "duplicate key 'prompt'"],
    ),
    ("bad batch id", '["a"]', ["--batch-id", "../x"], ["batch_id"]),
    # Text that cannot be encoded as UTF-8 (a lone UTF-16 surrogate: JSON "\ud83e" from a string cut
    # in the middle of an emoji), anywhere in an item, and NUL characters in paths.
    (
        "lone surrogate in a prompt",
        '[{"prompt": "a fox \\ud83e"}]',
        [],
        ["item 0", "'prompt'", "UTF-8", "\\ud83e"],
    ),
    (
        "lone surrogate in a param value",
        '[{"prompt": "a", "params": {"aspect_ratio": "16:9\\udc00"}}]',
        [],
        ["item 0", "'params.aspect_ratio'", "UTF-8"],
    ),
    (
        "lone surrogate deep in a param",
        '[{"prompt": "a", "params": {"x": [{"y": "\\ud800"}]}}]',
        [],
        ["item 0", "'params.x[0].y'", "UTF-8"],
    ),
    ("lone surrogate in an id", '[{"prompt": "a", "id": "x\\ud800"}]', [], ["item 0", "'id'", "UTF-8"]),
    (
        "lone surrogate in an output name",
        '[{"prompt": "a", "output": "x\\ud800.png"}]',
        [],
        ["item 0", "'output'", "UTF-8"],
    ),
    (
        "lone surrogate in a reference path",
        '[{"prompt": "a", "image_input": ["ok\\ud800.png"]}]',
        [],
        ["item 0", "'image_input[0]'", "UTF-8"],
    ),
    (
        "lone surrogate in a field name",
        '[{"prompt": "a", "\\udfff": 1}]',
        [],
        ["item 0", "UTF-8", "field name"],
    ),
    (
        "lone surrogate in the file defaults",
        '{"params": {"aspect_ratio": "\\ud800"}, "items": ["a", "b"]}',
        [],
        ["file defaults, field 'params.aspect_ratio'", "UTF-8"],
    ),
    (
        "lone surrogate in a --param",
        '["a"]',
        ["-p", 'aspect_ratio="\\ud800"'],
        ["'--param aspect_ratio'", "UTF-8"],
    ),
    (
        "undecodable byte in a --param",
        '["a"]',
        ["-p", "aspect_ratio=16:9\udcff"],
        ["'--param aspect_ratio'", "UTF-8"],
    ),
    ("lone surrogate in --model", '["a"]', ["-m", "black-forest-labs/flux\ud800"], ["'--model'", "UTF-8"]),
    (
        "NUL in a reference path",
        '[{"prompt": "a", "image_input": ["ok.png\\u0000.png"]}]',
        [],
        ["item 0", "'image_input[0]'", "NUL"],
    ),
    (
        "NUL in an output name",
        '[{"prompt": "a", "output": "x\\u0000.png"}]',
        [],
        ["item 0", "'output'", "NUL"],
    ),
    (
        "several problems at once",
        '[{"prompt": ""}, {"prompt": "b", "model": "nope"}, {"prompt": "c", "x": 1}]',
        [],
        ["item 0", "item 1", "item 2", "3 problems"],
    ),
]


def _keys(client, prefix: str) -> set[str]:
    return set(client.scan_iter(match=f"{prefix}*")) | set(client.scan_iter(match=f"{{{prefix}*"))


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """cwd with reference files; an output root holding one file and a symlink leading out."""
    (tmp_path / "notimage.png").write_text("not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "exists.png").write_bytes(b"old")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, out / "link")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name,text,args,fragments", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_exits_2_names_item_and_field_and_writes_nothing(
    name, text, args, fragments, workspace, redis_url, redis_client, key_prefix
):
    # Something of ours exists already, so "unchanged" is not trivially "empty".
    redis_client.set(f"{key_prefix}:sentinel", "1")
    before = _keys(redis_client, key_prefix)
    files_before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    (workspace / "prompts.json").write_text(text)
    env = {
        "FLEET_KEY_PREFIX": key_prefix,
        "FLEET_QUEUE": f"{key_prefix}-q",
        "OUTPUT_DIR": str(workspace / "out"),
        "REPLICATE_API_TOKEN": "r8_not_real",
    }
    result = CliRunner().invoke(
        cli,
        ["--redis-url", redis_url, "--env-file", "/nonexistent", "submit", "prompts.json", *args],
        env=env,
    )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert all(
        line.startswith(("error: ", f"{len(result.stderr.splitlines()) - 1} problems"))
        for line in result.stderr.splitlines()
    ), result.stderr
    assert result.stdout == ""
    assert _keys(redis_client, key_prefix) == before
    files_after = sorted(p.relative_to(workspace) for p in workspace.rglob("*") if p.name != "prompts.json")
    assert files_after == files_before
    assert (workspace / "out" / "exists.png").read_bytes() == b"old"
    delete_prefix(redis_client, key_prefix)


def test_a_bad_default_is_one_line_and_long_problem_lists_are_capped(
    workspace, redis_url, redis_client, key_prefix
):
    """5000 items under one unknown default model: one line, not 5000. 5000 items with their
    own problem: 50 lines, then the rest summed up by kind."""
    env = {
        "FLEET_KEY_PREFIX": key_prefix,
        "FLEET_QUEUE": f"{key_prefix}-q",
        "OUTPUT_DIR": str(workspace / "out"),
        "REPLICATE_API_TOKEN": "r8_not_real",
    }
    args = ["--redis-url", redis_url, "--env-file", "/nonexistent", "submit", "prompts.json"]
    (workspace / "prompts.json").write_text(json.dumps({"model": "nope", "items": ["a fox"] * 5000}))
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: file defaults, field 'model': unknown model 'nope'"
    )

    items = [{"prompt": ""} for _ in range(4990)] + [
        {"prompt": "a", "params": {"seed": "x"}} for _ in range(10)
    ]
    (workspace / "prompts.json").write_text(json.dumps(items))
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 52, lines[-3:]
    assert lines[0] == "error: item 0, field 'prompt': prompt is empty"
    assert lines[49].startswith("error: item 49, ")
    assert lines[50].startswith(
        "error: ... and 4950 more problems (4940 like: field 'prompt': prompt is empty; "
        "10 like: field 'params.seed': "
    )
    assert lines[51] == "5000 problems; nothing was enqueued or written."
    assert not _keys(redis_client, key_prefix)
