"""A batch through real workers: record it in the ledger and enqueue it, wait for its end, and
check its files against what the stand-in served."""

from __future__ import annotations

import hashlib
from pathlib import Path

from producer.prompts import parse_prompts
from shared.keys import Keys
from shared.ledger import Ledger
from shared.models import load_registry
from tests.support.wait import wait_until
from workers.dispatch import enqueue_items

MODEL = "black-forest-labs/flux-dev"


def submit(settings, redis_client, batch_id, prompts, *, model=MODEL, options=None, data=None):
    requests = parse_prompts(
        data if data is not None else prompts,
        batch_id=batch_id,
        output_root=Path(settings.output_dir),
        registry=load_registry(),
        model=model,
    )
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    assert ledger.create_batch(
        batch_id, requests, output_root=str(settings.output_dir), options=options or {}
    )
    enqueue_items(settings, batch_id, requests)
    return ledger, requests


def wait_finished(ledger: Ledger, batch_id: str, timeout: float, fleet=None) -> None:
    def explain() -> str:
        return f"counts {ledger.batch(batch_id).counts}" + ("\n" + fleet.logs() if fleet else "")

    wait_until(
        lambda: ledger.batch(batch_id).finished,
        timeout,
        f"batch {batch_id} to finish",
        interval=0.2,
        explain=explain,
    )


def wait_manifest(output_dir: str | Path, batch_id: str, timeout: float = 10.0) -> Path:
    """The batch's manifest, which the worker that finishes the batch writes right after the
    ledger says it finished (so a moment after wait_finished returns)."""
    path = Path(output_dir) / batch_id / "manifest.json"
    wait_until(path.is_file, timeout, f"a manifest at {path}")
    return path


def served_hashes(ledger_json: dict) -> set[str]:
    files = ledger_json.get("files_served") or {}
    return set(files.values()) if isinstance(files, dict) else set()


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
