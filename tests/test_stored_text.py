"""Text that cannot be encoded as UTF-8, already in Redis (a batch recorded before submit refused
such text), never makes the manifest writer raise: `producer cancel` of such a batch answers
without a traceback, and the manifest and gallery are written, the text escaped, read back equal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.keys import Keys
from shared.ledger import Ledger
from shared.request import ImageRequest

ROOT = Path(__file__).resolve().parent.parent
CUT = "a fox \ud83e"  # JSON "a fox \ud83e": an emoji cut in half by a JavaScript string slice


def test_cancel_of_a_batch_holding_unencodable_text_writes_the_manifest(settings, redis_client, tmp_path):
    output_root = tmp_path / "out"
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    request = ImageRequest(
        index=0,
        id="fox\udcff",
        prompt=CUT,
        requested_model="black-forest-labs/flux-dev",
        model="black-forest-labs/flux-dev",
        params={"style": "\ud800"},
        output="b-cut/0000.png",
    )
    assert ledger.create_batch("b-cut", [request], output_root=str(output_root))

    result = producer(settings, "cancel", "b-cut")
    assert result.returncode == 0, result.stderr
    assert (
        "Traceback" not in result.stderr
        and "batch b-cut canceled: 1 queued item(s) canceled now" in result.stdout
    )

    manifest = json.loads((output_root / "b-cut" / "manifest.json").read_text(encoding="utf-8"))
    item = manifest["items"][0]
    assert (item["prompt"], item["id"], item["status"]) == (CUT, "fox\udcff", "canceled")
    assert "a fox" in (output_root / "b-cut" / "index.html").read_text(encoding="utf-8")

    result = producer(settings, "results", "b-cut")  # the text table prints the id: escaped
    assert result.returncode == 0 and "Traceback" not in result.stderr and "fox\\udcff" in result.stdout


def producer(settings, *args: str) -> subprocess.CompletedProcess:
    """The installed CLI in a subprocess: real streams, as strict as a terminal's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FLEET_", "REDIS_URL"))}
    env.update(settings.as_env(), PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", "--env-file", "/nonexistent", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="strict",
        timeout=60,
    )


def test_cancel_status_and_results_of_a_batch_whose_stored_records_cannot_be_read(
    settings, redis_client, tmp_path
):
    """Stored records no writer of ours produces (a request that is not JSON, an attempt that is
    not a number: written by hand or by a broken version) never make the CLI print a traceback:
    the items are shown with what could be read and the reason on the item."""
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    requests = [
        ImageRequest(
            index=i, id=str(i), prompt=f"a hare {i}", requested_model="m/a", model="m/a", output=f"b/{i}.png"
        )
        for i in range(3)
    ]
    assert ledger.create_batch("b-garbled", requests, output_root=str(tmp_path / "out"))
    keys = Keys(settings.key_prefix)
    redis_client.hset(keys.item("b-garbled", 1), "request", "{not json")
    redis_client.hset(keys.item("b-garbled", 2), "attempt", "one")
    for args in (("cancel", "b-garbled"), ("status", "b-garbled"), ("results", "b-garbled", "--json")):
        result = producer(settings, *args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr)
    records = [
        json.loads(line) for line in producer(settings, "results", "b-garbled", "--json").stdout.splitlines()
    ]
    assert [r["status"] for r in records] == ["canceled"] * 3
    assert (
        "stored record unreadable" in records[1]["error"]
        and "stored record unreadable" in records[2]["error"]
    )
    assert records[0]["prompt"] == "a hare 0"
