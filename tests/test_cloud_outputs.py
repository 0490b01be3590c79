"""A batch's files on Azure Blob and Google Cloud Storage, end to end on one host: real celery
workers make the images with the stand-in and write them to a container on Azurite (the worker's
credentials in its `.env`, the producer's in its environment: both routes); `producer
fetch` brings them home from az://, and from gs:// (fake-gcs-server) where another client
published a finished batch's folder. (The multi-host run with a store outage is S3's, in
tests/test_fleet_storage.py; it is not repeated per store.)

Workers cannot write to gs:// here: fake-gcs-server (1.54.0) implements only GCS's JSON upload
API and obstore writes through the XML API, and no flag or option bridges them
(tests/test_object_store.py, FAKE_GCS_WRITES, says which request gets which answer, and what that
leaves untested)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from producer import api
from producer.cli import cli
from shared.storage import sniff

pytestmark = [pytest.mark.e2e]

PROMPTS = [
    {"prompt": "a red fox in snow", "model": "black-forest-labs/flux-dev"},
    {"prompt": "a lighthouse at dusk", "model": "black-forest-labs/flux-dev"},
    {"prompt": "a quiet harbour", "model": "black-forest-labs/flux-dev", "output": "harbour/dawn.png"},
]


def fetch_cli(settings, env: dict[str, str], *args: str):
    base = ["--redis-url", settings.redis_url, "--env-file", "/nonexistent.env", "fetch", *args]
    return CliRunner().invoke(cli, base, env={**settings.as_env(), **env})


def run_batch(settings, sim) -> api.Batch:
    """PROMPTS through the workers already started, all succeeded, one creation each."""
    batch = api.submit(PROMPTS, settings=settings)
    snap = batch.wait(timeout=120)
    assert snap.finished and snap.all_succeeded, snap.counts
    assert sim.ledger()["creations"] == len(PROMPTS)  # one prediction per image, none again
    return batch


def recorded_files(batch: api.Batch) -> dict[str, str]:
    """key -> sha256 of every output the items recorded."""
    return {f["key"]: f["sha256"] for record in batch.results() for f in record["files"]}


def assert_fetched(home: Path, batch: api.Batch, files: dict[str, str]) -> None:
    for key, digest in files.items():
        data = (home / key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest and sniff(data) is not None, key
    manifest = json.loads((home / batch.id / "manifest.json").read_text())
    assert [item["status"] for item in manifest["items"]] == ["succeeded"] * len(PROMPTS)
    assert (home / batch.id / "index.html").is_file()


def test_real_workers_write_a_batch_to_azure_and_fetch_brings_it_home(
    settings, sim, worker_factory, az_container, tmp_path, monkeypatch
):
    env = az_container.environ()
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the producer's side: the write probe at submit
    url = f"{az_container.url}/runs"
    settings = settings.with_(replicate_base_url=sim.url, output_dir=url)
    with monkeypatch.context() as worker_side:  # the worker has the credentials in its .env only
        for name in env:
            worker_side.delenv(name)
        worker_factory(settings, count=1, sim=sim, dotenv=env)
    batch = run_batch(settings, sim)

    files = recorded_files(batch)
    assert len(files) == len(PROMPTS) and "harbour/dawn.png" in files  # an item's own path is kept
    stored = az_container.keys("runs/")
    for key, digest in files.items():  # every output whole in the container, as recorded
        assert hashlib.sha256(stored[f"runs/{key}"]).hexdigest() == digest
    assert {f"runs/{batch.id}/manifest.json", f"runs/{batch.id}/index.html"} <= set(stored)
    outputs = [o for record in batch.results() for o in record["outputs"]]
    assert outputs and all(o.startswith(f"{url}/") for o in outputs)  # results name az:// URLs

    home = tmp_path / "home"
    first = fetch_cli(settings, env, batch.id, "--to", str(home))
    assert first.exit_code == 0, first.output
    assert_fetched(home, batch, files)
    again = fetch_cli(settings, env, batch.id, "--to", str(home))  # resumable: nothing copied twice
    assert again.exit_code == 0 and f"{len(files)} already there" in again.stdout, again.output


def test_fetch_brings_a_batch_home_from_gcs(settings, sim, worker_factory, gs_bucket, tmp_path):
    """A finished batch's folder published to a bucket by another client (as `gcloud storage
    rsync` would), its local folder gone: `producer fetch --from gs://...` reads the manifest,
    lists, sizes and copies every output through obstore, resumably."""
    out = tmp_path / "out"
    settings = settings.with_(replicate_base_url=sim.url, output_dir=str(out))
    worker_factory(settings, count=1, sim=sim)
    batch = run_batch(settings, sim)
    files = recorded_files(batch)
    for path in sorted(out.rglob("*")):
        if path.is_file():
            gs_bucket.put_other(f"published/{path.relative_to(out).as_posix()}", path.read_bytes())
    shutil.rmtree(out)

    env = gs_bucket.environ()
    home = tmp_path / "home"
    args = [batch.id, "--from", f"{gs_bucket.url}/published", "--to", str(home)]
    first = fetch_cli(settings, env, *args)
    assert first.exit_code == 0, first.output
    assert_fetched(home, batch, files)
    (home / next(iter(files))).write_bytes(b"truncated")  # a damaged copy is fetched again
    again = fetch_cli(settings, env, *args)
    assert again.exit_code == 0 and "fetched 1 file(s)" in again.stdout, again.output
    assert_fetched(home, batch, files)


def test_store_credentials_in_dotenv_reach_submit_and_fetch(settings, az_container, tmp_path, monkeypatch):
    """The store's variables may live in `.env` like every setting (the environment wins over
    it): submit probes the container with them, fetch reads with them. Nothing in os.environ."""
    for name in az_container.environ():
        monkeypatch.delenv(name, raising=False)
    dotenv = tmp_path / "fleet.env"
    dotenv.write_text("".join(f"{name}={value}\n" for name, value in az_container.environ().items()))
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(["a red fox"]))
    url = f"{az_container.url}/dotenv"
    base = ["--redis-url", settings.redis_url, "--env-file", str(dotenv)]
    env = {k: v for k, v in settings.as_env().items() if k != "OUTPUT_DIR"}
    submitted = CliRunner().invoke(
        cli, base + ["submit", str(prompts), "--output-dir", url, "--json"], env=env
    )
    assert submitted.exit_code == 0, submitted.output
    assert az_container.keys() == {}  # the probe was written and deleted with the .env's key
    batch_id = json.loads(submitted.stdout.splitlines()[-1])["batch"]
    az_container.put_other(f"dotenv/{batch_id}/index.html", b"<html></html>")  # as a worker would
    fetched = CliRunner().invoke(cli, base + ["fetch", batch_id, "--to", str(tmp_path / "home")], env=env)
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "home" / batch_id / "index.html").read_bytes() == b"<html></html>"
