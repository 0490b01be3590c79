"""Real object-store servers for the tests, each started once per test session as a process:
moto's standalone S3 server (`moto_s3`), Azurite for Azure Blob (`azurite`), fake-gcs-server for
Google Cloud Storage (`fake_gcs`); bench/emulators.py starts them.

`s3_bucket`, `az_container` and `gs_bucket` make a fresh bucket (container) for one test and give
the environment a worker or the producer needs to reach it, in the standard variables only
(`AWS_ENDPOINT_URL` and keys; `AZURE_STORAGE_ACCOUNT_NAME` / `_KEY` / `_ENDPOINT`;
`STORAGE_EMULATOR_HOST`). Each keeps everything in memory; `server.pause()` / `resume()` stop and
continue the process (SIGSTOP / SIGCONT) to play a store that does not answer for a while.
Azurite and fake-gcs-server are tools (`needs`, tests/support/requirements.py): missing, the tests
that use them skip, or fail where they are required (CI).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench.emulators import AzuriteServer, FakeGcsServer, start_azurite, start_fake_gcs
from bench.moto import MotoServer, start_moto
from tests.support.requirements import need


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory) -> Iterator[MotoServer]:
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Iterator[AzuriteServer]:
    need("azurite")
    server = start_azurite(tmp_path_factory.mktemp("azurite") / "azurite.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory) -> Iterator[FakeGcsServer]:
    need("fake-gcs-server")
    server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs") / "fake-gcs.log")
    yield server
    server.stop()


@dataclass(frozen=True)
class Bucket:
    """An S3 bucket on moto; AzContainer and GsBucket answer the same questions on theirs."""

    name: str
    server: MotoServer
    scheme = "s3"

    @property
    def url(self) -> str:
        return f"s3://{self.name}"

    def environ(self) -> dict[str, str]:
        return self.server.environ()

    def keys(self, prefix: str = "") -> dict[str, bytes]:
        client = self.server.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for entry in page.get("Contents", []):
                found[entry["Key"]] = client.get_object(Bucket=self.name, Key=entry["Key"])["Body"].read()
        return found

    def put_other(self, key: str, data: bytes) -> None:
        """Another client writes `key` (not through shared.storage)."""
        self.server.client().put_object(Bucket=self.name, Key=key, Body=data)


@dataclass(frozen=True)
class AzContainer:
    name: str
    server: AzuriteServer
    scheme = "az"

    @property
    def url(self) -> str:
        return f"az://{self.name}"

    def environ(self) -> dict[str, str]:
        return self.server.environ()

    def keys(self, prefix: str = "") -> dict[str, bytes]:
        container = self.server.client().get_container_client(self.name)
        return {
            blob.name: container.download_blob(blob.name).readall()
            for blob in container.list_blobs(name_starts_with=prefix or None)
        }

    def put_other(self, key: str, data: bytes) -> None:
        self.server.client().get_blob_client(self.name, key).upload_blob(data)


@dataclass(frozen=True)
class GsBucket:
    name: str
    server: FakeGcsServer
    scheme = "gs"

    @property
    def url(self) -> str:
        return f"gs://{self.name}"

    def environ(self) -> dict[str, str]:
        return self.server.environ()

    def keys(self, prefix: str = "") -> dict[str, bytes]:
        return self.server.objects(self.name, prefix)

    def put_other(self, key: str, data: bytes) -> None:
        self.server.upload(self.name, key, data)


@pytest.fixture
def s3_bucket(moto_s3: MotoServer) -> Bucket:
    name = f"fleet-test-{uuid.uuid4().hex[:12]}"
    moto_s3.client().create_bucket(Bucket=name)
    return Bucket(name, moto_s3)


@pytest.fixture
def az_container(azurite: AzuriteServer) -> AzContainer:
    name = f"fleet-test-{uuid.uuid4().hex[:12]}"
    azurite.client().create_container(name)
    return AzContainer(name, azurite)


@pytest.fixture
def gs_bucket(fake_gcs: FakeGcsServer) -> GsBucket:
    name = f"fleet-test-{uuid.uuid4().hex[:12]}"
    fake_gcs.create_bucket(name)
    return GsBucket(name, fake_gcs)


def read_only_user(server, bucket: str) -> dict[str, str]:
    """A bucket and the keys of an IAM user that may only read it (4 unauthenticated calls)."""
    import boto3

    server.client().create_bucket(Bucket=bucket)
    iam = boto3.client(
        "iam",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    iam.create_user(UserName="reader")
    iam.put_user_policy(
        UserName="reader",
        PolicyName="read-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
