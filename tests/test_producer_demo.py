"""`make demo` (examples/demo.py) runs the whole pipeline and stops everything it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_end_to_end_and_cleans_up(tmp_path, redis_url, redis_client, key_prefix):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FLEET_", "REDIS_URL"))}
    env.update(REDIS_URL=redis_url, OUTPUT_DIR=str(tmp_path / "out"), PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--prefix", key_prefix],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest_line = next(line for line in result.stdout.splitlines() if "manifest:" in line)
    manifest = json.loads(Path(manifest_line.split("manifest:", 1)[1].strip()).read_text())
    assert manifest["items"] and all(item["status"] == "succeeded" for item in manifest["items"])
    root = tmp_path / "out" / "demo"
    for item in manifest["items"]:
        for output in item["outputs"]:
            path = Path(output) if Path(output).is_absolute() else root / output
            assert path.is_file() and path.stat().st_size > 0
    assert '"duplicate_inputs": 0' in result.stdout
    # nothing it started is left running
    leftovers = subprocess.run(["pgrep", "-f", f"-Q {key_prefix}"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
