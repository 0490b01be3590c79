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
