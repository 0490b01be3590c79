"""Data follows the fleet, on the producer's side: references read once and uploaded at submit
(the real stand-in's files API), the output location probed and recorded with the batch (a real
S3-protocol server, moto, as a process), outputs checked on the store, and `producer fetch`."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image

from producer import api
from producer.cli import cli
from shared.keys import Keys
from shared.ledger import Ledger
from shared.storage import open_store, sha256_of
from tests.support.objstore import read_only_user, start_moto


def base_args(settings) -> list[str]:
    return ["--redis-url", settings.redis_url, "--env-file", "/nonexistent.env"]


def queue_length(redis_client, settings) -> int:
    from tests.support.attempt_path import held_sends

    return held_sends(settings, redis_client)


def test_references_are_read_once_by_content_uploaded_once_and_travel_as_urls(
    tmp_path, settings, sim, redis_client
):
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("RGB", (8, 8), "red").save(refs / "day.png")
    shutil.copy(refs / "day.png", refs / "day-copy.png")  # the same content under another name
    Image.new("RGB", (8, 8), "blue").save(refs / "night.png")
    items = [
        {"prompt": f"scene {i}", "model": "black-forest-labs/flux-kontext-max", "input_image": "refs/day.png"}
        for i in range(3)
    ]
    items += [
        {"prompt": "copy", "model": "black-forest-labs/flux-kontext-max", "input_image": "refs/day-copy.png"},
        {"prompt": "night", "model": "black-forest-labs/flux-kontext-max", "input_image": "refs/night.png"},
    ]
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(items))
    settings = settings.with_(replicate_base_url=sim.url)

    batch = api.submit(prompts, settings=settings)
    shutil.rmtree(refs)  # as if every worker ran on another host: the producer's files are gone
    assert sim.ledger()["files_uploaded"] == 2  # one per distinct content, not per item or path
    recorded = [batch.ledger.request(batch.id, i).reference_images for i in range(5)]
    assert all(ref.startswith(sim.url + "/v1/files/") for refs_ in recorded for ref in refs_)
    assert recorded[0] == recorded[1] == recorded[2] == recorded[3] != recorded[4]
    assert str(tmp_path) not in json.dumps([r.to_dict() for r in batch.requests or []] + [list(recorded)])
    assert queue_length(redis_client, settings) == 5
    from shared.scheduler import broker_lists
    from tests.support.attempt_path import feed

    assert len(feed(settings, redis_client)) == 5  # what a worker's feeder puts into the broker
    messages = [redis_client.lrange(name, 0, -1) for name in broker_lists(settings.queue)]
    assert sum(map(len, messages)) == 5 and str(tmp_path) not in json.dumps(messages)

    # The duplicate check compares content: the same images under other names are the same batch.
    (tmp_path / "refs").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "refs" / "day.png")
    shutil.copy(tmp_path / "refs" / "day.png", tmp_path / "refs" / "day-copy.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "refs" / "night.png")
    with pytest.raises(api.DuplicateBatchError):
        api.submit(prompts, settings=settings)
    assert sim.ledger()["files_uploaded"] == 2  # a refused duplicate uploads nothing


def test_submit_to_a_bucket_records_it_and_leaves_no_probe(
    tmp_path, settings, s3_bucket, redis_client, monkeypatch
):
    for name, value in s3_bucket.environ().items():
        monkeypatch.setenv(name, value)
    url = f"{s3_bucket.url}/fleet"
    batch = api.submit(["a red fox", "an owl"], settings=settings.with_(output_dir=url))
    assert batch.info().output_root == url and batch.output_root == url
    assert s3_bucket.keys() == {}  # the write probe was deleted
    assert queue_length(redis_client, settings) == 2
    # an item naming an object that exists is refused, naming item and field, nothing enqueued
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key="fleet/animals/fox.png", Body=b"x")
    result = CliRunner().invoke(
        cli,
        base_args(settings)
        + [
            "submit",
            str(_file(tmp_path, [{"prompt": "fox", "output": "animals/fox.png"}])),
            "--output-dir",
            url,
        ],
        env=settings.as_env(),
    )
    assert result.exit_code == 2, result.output
    assert (
        "item 0" in result.stderr and "field 'output'" in result.stderr and "already exists" in result.stderr
    )
    assert queue_length(redis_client, settings) == 2


def test_a_bucket_that_refuses_writes_is_refused_at_submit_with_nothing_enqueued(
    tmp_path, settings, redis_client
):
    server = start_moto(tmp_path / "moto-iam.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        keys = read_only_user(server, "fleet-read-only")
        env = {**settings.as_env(), **server.environ(**keys)}
        result = CliRunner().invoke(
            cli,
            base_args(settings)
            + ["submit", str(_file(tmp_path, ["a fox"])), "--output-dir", "s3://fleet-read-only/out"],
            env=env,
        )
    finally:
        server.stop()
    assert result.exit_code == 2, result.output
    assert (
        "OUTPUT_DIR" in result.stderr
        and "cannot be written" in result.stderr
        and "access denied" in result.stderr
    )
    assert keys["AWS_SECRET_ACCESS_KEY"] not in result.output
    assert queue_length(redis_client, settings) == 0 and not redis_client.keys(
        f"{settings.key_prefix}:batch:*"
    )


def test_fetch_brings_every_output_manifest_and_gallery_and_resumes(
    tmp_path, settings, s3_bucket, redis_client, monkeypatch
):
    for name, value in s3_bucket.environ().items():
        monkeypatch.setenv(name, value)
    url = f"{s3_bucket.url}/fleet"
    settings = settings.with_(output_dir=url)
    batch = api.submit(["a red fox", "an owl", "a ghost"], settings=settings)
    store = open_store(url)
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    images = {}
    for index in (0, 1):  # what the workers do: write the output, record it on the item
        key = batch.requests[index].output
        data = _png(index)
        store.put(key, data, overwrite=False, content_type="image/png")
        images[key] = data
        ledger.transition(
            batch.id,
            index,
            "succeeded",
            fields={
                "model": "black-forest-labs/flux-dev",
                "outputs": [store.url(key)],
                "files": [
                    {
                        "key": key,
                        "format": "png",
                        "content_type": "image/png",
                        "bytes": len(data),
                        "sha256": sha256_of(data),
                    }
                ],
            },
        )
    ledger.transition(batch.id, 2, "failed", fields={"error": "flagged as sensitive (E005)"})
    batch.write_manifest()
    assert {f"fleet/{batch.id}/manifest.json", f"fleet/{batch.id}/index.html"} <= set(
        s3_bucket.keys("fleet/")
    )

    to = tmp_path / "home"
    runner = CliRunner()
    first = runner.invoke(
        cli, base_args(settings) + ["fetch", batch.id, "--to", str(to)], env=settings.as_env()
    )
    assert first.exit_code == 0, first.output
    for key, data in images.items():
        assert (to / key).read_bytes() == data
    manifest = json.loads((to / batch.id / "manifest.json").read_text())
    assert [i["status"] for i in manifest["items"]] == ["succeeded", "succeeded", "failed"]
    assert "flagged as sensitive" in (to / batch.id / "index.html").read_text()

    (to / batch.requests[0].output).write_bytes(b"truncated")  # a damaged copy is fetched again
    again = runner.invoke(
        cli, base_args(settings) + ["fetch", batch.id, "--to", str(to)], env=settings.as_env()
    )
    assert again.exit_code == 0 and "fetched 1 file(s)" in again.stdout and "1 already there" in again.stdout
    assert (to / batch.requests[0].output).read_bytes() == images[batch.requests[0].output]

    store.delete(batch.requests[1].output)  # an output the store lost: not complete, exit 1, named
    shutil.rmtree(to)
    lost = runner.invoke(
        cli, base_args(settings) + ["fetch", batch.id, "--to", str(to)], env=settings.as_env()
    )
    assert lost.exit_code == 1 and f"missing: {batch.requests[1].output}" in lost.stderr


def _file(tmp_path, items) -> object:
    path = tmp_path / f"prompts-{len(list(tmp_path.glob('prompts-*')))}.json"
    path.write_text(json.dumps(items))
    return path


def _png(seed: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (16, 9), (seed * 80 % 256, 40, 90)).save(buffer, format="PNG")
    return buffer.getvalue()
