"""The storage interface on a local folder and on a real S3-protocol server (moto's standalone
server as a process, reached by obstore over HTTP): the same guarantees on both."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest

from shared.errors import ConfigError, OutputExistsError, StorageError, StorageUnavailableError
from shared.storage import open_store, parse_location, probe, sniff, write_once
from shared.storage.sniff import with_extension
from tests.support.objstore import read_only_user, start_moto

PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"j" * 64


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path / "out")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"{bucket.url}/runs/out", environ=bucket.environ())


def test_each_output_is_written_once_whole_and_never_replaced_without_overwrite(store):
    first = write_once(store, "b-1/0000_fox.png", PNG, content_type="image/png")
    assert first.fresh and first.size == len(PNG)
    again = write_once(store, "b-1/0000_fox.png", PNG)  # a redelivered write of the same bytes
    assert not again.fresh and again.sha256 == first.sha256
    with pytest.raises(OutputExistsError, match="other content"):
        write_once(store, "b-1/0000_fox.png", JPEG)
    assert store.get("b-1/0000_fox.png") == PNG  # the first object stays
    assert write_once(store, "b-1/0000_fox.png", JPEG, overwrite=True).fresh
    assert store.get("b-1/0000_fox.png") == JPEG
    assert dict(store.list("b-1")) == {"b-1/0000_fox.png": len(JPEG)}
    assert store.size("b-1/none.png") is None


@pytest.mark.parametrize(
    "key", ["/etc/passwd", "../up.png", "a/../../b.png", "a\\b.png", "a//b.png", "", "a/\x00.png"]
)
def test_path_rules_hold_on_every_store(store, key):
    with pytest.raises(StorageError):
        store.put(key, PNG, overwrite=True)


def test_the_probe_leaves_nothing_behind(store):
    probe(store)
    assert list(store.list()) == []


def test_the_conditional_write_is_the_servers_not_a_check_before(s3_bucket):
    """Another client puts the object between our decision and our write: S3 refuses ours
    (412 on If-None-Match: *), the other object stays."""
    store = open_store(s3_bucket.url, environ=s3_bucket.environ())
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key="x/0.png", Body=JPEG)
    with pytest.raises(OutputExistsError):
        store.put("x/0.png", PNG, overwrite=False)
    assert s3_bucket.keys("x/") == {"x/0.png": JPEG}


def test_store_errors_are_classified(s3_bucket, tmp_path):
    env = s3_bucket.environ()
    with pytest.raises(StorageError, match="no such bucket"):
        probe(open_store("s3://fleet-no-such-bucket/out", environ=env))
    with pytest.raises(ConfigError, match="unsupported scheme"):
        open_store("ftp://host/out")
    with pytest.raises(ConfigError, match="credentials"):
        parse_location("s3://key:secret@bucket/out")
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(StorageError, match="permission denied"):
            probe(open_store(tmp_path / "ro"))


def test_a_read_only_bucket_is_refused_with_access_denied(tmp_path):
    """moto with IAM on: a user allowed to read only gets 403 on every write."""
    server = start_moto(tmp_path / "moto-iam.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        keys = read_only_user(server, "fleet-read-only")
        store = open_store("s3://fleet-read-only/out", environ=server.environ(**keys))
        with pytest.raises(StorageError, match="access denied") as refused:
            probe(store)
        assert keys["AWS_SECRET_ACCESS_KEY"] not in str(refused.value)
    finally:
        server.stop()


def test_a_store_that_does_not_answer_is_unavailable_and_the_write_completes_later(s3_bucket):
    from shared.storage.cloud import CloudStore

    store = CloudStore(
        parse_location(s3_bucket.url), environ=s3_bucket.environ(), timeout=timedelta(seconds=2)
    )
    s3_bucket.server.pause()
    began = time.monotonic()
    try:
        with pytest.raises(StorageUnavailableError, match="did not answer"):
            write_once(store, "late/0.png", PNG)
    finally:
        s3_bucket.server.resume()
    assert time.monotonic() - began < 30  # bounded: the caller retries, it is not stuck
    assert not write_once(store, "late/0.png", PNG).fresh or s3_bucket.keys("late/") == {"late/0.png": PNG}
    assert s3_bucket.keys("late/") == {"late/0.png": PNG}


def test_types_come_from_the_bytes_not_the_name():
    assert sniff(PNG).ext == "png" and sniff(JPEG).mime == "image/jpeg"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ").ext == "webp"
    assert sniff(b"\x00\x00\x00\x18ftypisom").ext == "mp4" and sniff(b"\x00\x00\x00\x14ftypqt  ").ext == "mov"
    assert sniff(b"hello") is None
    assert with_extension("b/0000_fox.webp", "jpg") == "b/0000_fox.jpg"
    assert with_extension("b.x/noext", "png") == "b.x/noext.png"
