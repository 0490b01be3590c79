"""Output names against what the output location already holds (issues 15/18): a worker names
each file after the bytes it received, so `cats/cat.webp` may be written as `cats/cat.jpg`. Submit
compares every name a worker may write for an item (shared.storage.sniff.written_names) with the
existing files, refusing before anything is paid unless --overwrite; with --overwrite the item
replaces only those objects of its own stem. Real workers, the stand-in returning another format
than the name asked for (a fallback model that makes JPEG), a local folder and an S3 store."""

from __future__ import annotations

import json

import pytest

from producer import api
from shared.errors import InputError
from tests.test_producer_e2e import cli

pytestmark = pytest.mark.e2e

FLUX_DEV = "black-forest-labs/flux-dev"  # makes WebP; when it fails the route ends on a JPEG model
JPEG_MAGIC = b"\xff\xd8\xff"


def jpeg_fallback_sim(sim_factory):
    """flux-dev and qwen-image fail: the item asked as `.webp` is made by imagen-4-ultra, a JPEG."""
    return sim_factory(always_fail_models=[FLUX_DEV, "qwen/qwen-image"])


def test_a_local_file_of_the_same_stem_refuses_the_submit_before_anything_is_paid(
    settings, sim_factory, worker_factory, tmp_path
):
    sim = jpeg_fallback_sim(sim_factory)
    settings = settings.with_(replicate_base_url=sim.url, output_dir=tmp_path / "out")
    cats = tmp_path / "out" / "cats"
    cats.mkdir(parents=True)
    (cats / "cat.jpg").write_bytes(b"the user's own cat")
    (cats / "cat_1.jpg").write_bytes(b"another stem")
    fleet = worker_factory(settings, count=1, sim=sim)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps(
            [
                {"prompt": "a dog", "model": FLUX_DEV, "output": "cats/dog.webp"},
                {"prompt": "a cat", "model": FLUX_DEV, "output": "cats/cat.webp"},
            ]
        )
    )

    refused = cli(settings, sim, "submit", str(prompts))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "item 1" in refused.stderr and "'cats/cat.jpg' already exists" in refused.stderr, refused.stderr
    assert "item 0" not in refused.stderr, refused.stderr
    assert sim.ledger()["creations"] == 0  # refused before any prediction was paid for
    assert (cats / "cat.jpg").read_bytes() == b"the user's own cat"

    # --overwrite: the item may replace the objects of its own stem, and only those.
    done = cli(settings, sim, "submit", str(prompts), "--overwrite", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr + fleet.logs()[-3000:]
    # said before anything was enqueued: the file replaced is not the one the user named
    assert "note: --overwrite: 1 existing file(s)" in done.stderr, done.stderr
    assert "'cats/cat.jpg' (item 1, asked as 'cats/cat.webp')" in done.stderr, done.stderr
    assert (cats / "cat.jpg").read_bytes().startswith(JPEG_MAGIC)
    assert (cats / "cat_1.jpg").read_bytes() == b"another stem"
    assert not (cats / "cat.webp").exists()


def test_an_object_of_the_same_stem_in_s3_refuses_the_submit_and_overwrite_replaces_only_it(
    settings, sim_factory, worker_factory, s3_bucket, monkeypatch, tmp_path
):
    for name, value in s3_bucket.environ().items():
        monkeypatch.setenv(name, value)
    sim = jpeg_fallback_sim(sim_factory)
    settings = settings.with_(replicate_base_url=sim.url, output_dir=f"{s3_bucket.url}/runs")
    s3_bucket.put_other("runs/cats/cat.jpg", b"the user's own cat")
    s3_bucket.put_other("runs/cats/cat_1.jpg", b"another stem")
    s3_bucket.put_other("runs/many/0003.png", b"an earlier run")
    one = [{"prompt": "a cat", "model": FLUX_DEV, "output": "cats/cat.webp"}]

    with pytest.raises(InputError) as lone:  # a few names: a HEAD per key a worker may write
        api.submit(one, settings=settings)
    assert "'cats/cat.jpg' already exists" in str(lone.value) and "item 0" in str(lone.value)
    # Many names in one folder: one listing; `0003.webp` may be written `0003.png`.
    many = [{"prompt": f"p {i}", "model": FLUX_DEV, "output": f"many/{i:04d}.webp"} for i in range(10)]
    with pytest.raises(InputError) as listed:
        api.submit(many, settings=settings)
    assert "'many/0003.png' already exists" in str(listed.value), listed.value
    assert [p.index for p in listed.value.problems] == [3]
    assert sim.ledger()["creations"] == 0

    fleet = worker_factory(settings, count=1, sim=sim, **s3_bucket.environ())
    batch = api.submit(one, settings=settings, overwrite=True)
    assert any("'cats/cat.jpg' (item 0, asked as 'cats/cat.webp')" in note for note in batch.notes)
    snap = batch.wait(timeout=120, poll_interval=0.3)
    assert snap.all_succeeded, (batch.results(), fleet.logs()[-3000:])
    stored = s3_bucket.keys("runs/cats/")
    assert stored["runs/cats/cat.jpg"].startswith(JPEG_MAGIC)
    assert stored["runs/cats/cat_1.jpg"] == b"another stem"
    assert "runs/cats/cat.webp" not in stored
    assert batch.results()[0]["files"][0]["key"] == "cats/cat.jpg"
