"""How a worker writes outputs, on real pieces: files named for the bytes received (a fallback
model's JPEG is never a `.webp`), outputs beyond what was reserved at submit refused, an item's
own earlier output replaced but never another item's, a store that refuses failing the item as a
local error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producer import api
from shared.errors import StorageError

JPEG_MAGIC = b"\xff\xd8\xff"


@pytest.mark.e2e
def test_after_a_fallback_the_file_is_named_for_the_bytes_received(
    settings, sim_factory, worker_factory, redis_client
):
    sim = sim_factory(always_fail_models=["black-forest-labs/flux-dev", "qwen/qwen-image"])
    settings = settings.with_(replicate_base_url=sim.url)
    worker_factory(settings, count=1, sim=sim)
    batch = api.submit(
        [{"prompt": "a cat", "model": "black-forest-labs/flux-dev", "output": "cats/cat.webp"}],
        settings=settings,
    )
    snap = batch.wait(timeout=90)
    record = batch.results()[0]
    assert snap.all_succeeded and record["model"] == "google/imagen-4-ultra", record
    root = Path(settings.output_dir).resolve()
    assert record["outputs"] == [str(root / "cats" / "cat.jpg")]
    assert (root / "cats" / "cat.jpg").read_bytes().startswith(JPEG_MAGIC)
    assert not (root / "cats" / "cat.webp").exists()
    assert record["files"][0]["format"] == "jpg" and record["files"][0]["content_type"] == "image/jpeg"
    manifest = json.loads((root / batch.id / "manifest.json").read_text())
    assert manifest["items"][0]["files"][0]["key"] == "cats/cat.jpg"


def test_outputs_beyond_the_reserved_names_are_refused_and_never_overwrite_another_item(
    settings, sim, tmp_path
):
    """A model answers with 3 outputs for an item that reserved one name: only that one is written;
    `stem_1` belongs to another item here and stays untouched."""
    from workers.context import WorkerContext
    from workers.outputs import OutputSaver
    from workers.replicate_calls import PredictionView

    settings = settings.with_(replicate_base_url=sim.url)
    batch = api.submit(
        [
            {"prompt": "a fox", "model": "black-forest-labs/flux-dev", "output": "f/fox.png"},
            {"prompt": "other", "model": "black-forest-labs/flux-dev", "output": "f/fox_1.png"},
        ],
        settings=settings,
    )
    other = Path(settings.output_dir).resolve() / "f" / "fox_1.png"
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_bytes(b"the other item's image")
    three = sim_prediction_urls(sim, count=3)
    ctx = WorkerContext.build(settings)
    first, second = ref(batch.id, 0), ref(batch.id, 0, attempt=2)
    claims = [claimed(ctx, first), claimed(ctx, second)]  # as the runs writing them hold them
    try:
        saver = OutputSaver(ctx)
        request = ctx.ledger.request(batch.id, 0)
        view = PredictionView(id="p-three", status="succeeded", output=three)
        files = saver.save(first, request, ctx.registry.get(request.model), view, claims[0])
        assert [f["key"] for f in files] == ["f/fox.png"] and "3 outputs" in files[0]["note"]
        assert other.read_bytes() == b"the other item's image"
        # the same item's later attempt may replace its own earlier output (other bytes)
        again = saver.save(
            second,
            request,
            ctx.registry.get(request.model),
            PredictionView(id="p-again", status="succeeded", output=three[1:2]),
            claims[1],
        )
        assert again[0]["sha256"] != files[0]["sha256"]
        # ... but item 1 may not replace item 0's file (another item's object): a local error
        request1 = ctx.ledger.request(batch.id, 1)
        with pytest.raises(StorageError, match="exists already"):
            saver._write(
                ref(batch.id, 1), ctx.stores.for_batch(batch.id), "f/fox.png", b"\x89PNG\r\n\x1a\nx", False
            )
        assert request1.output == "f/fox_1.png"
    finally:
        for claim in claims:
            claim.release()
        ctx.close()


def ref(batch_id: str, index: int, attempt: int = 1):
    from workers.attempts import AttemptRef

    return AttemptRef(batch_id, index, attempt)


def claimed(ctx, attempt):
    claim = ctx.claims.try_claim(attempt.claim_key(ctx.keys))
    assert claim is not None
    return claim


def sim_prediction_urls(sim, count: int) -> list[str]:
    """Output URLs of a real prediction of the stand-in with `count` outputs."""
    import replicate

    client = replicate.Client(api_token="r8_test", base_url=sim.url)
    prediction = client.models.predictions.create(
        model="black-forest-labs/flux-dev",
        input={"prompt": "x", "num_outputs": count, "output_format": "png"},
    )
    prediction.wait()
    return [str(getattr(o, "url", o)) for o in prediction.output]
