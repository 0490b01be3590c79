"""A real S3-protocol server for the tests: moto's standalone server, started as a process.

`moto_s3` (one per test session) is a `moto_server` process on a free port; `s3_bucket` makes a
fresh bucket on it for one test and gives the environment a worker or the producer needs to
reach it (`AWS_ENDPOINT_URL`, keys, region: the standard variables, nothing else). The server
keeps everything in memory; `MotoServer.pause()` / `resume()` stop and continue the process
(SIGSTOP / SIGCONT) to play a store that does not answer for a while without losing its objects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench.moto import MotoServer, start_moto


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory) -> Iterator[MotoServer]:
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@dataclass(frozen=True)
class Bucket:
    name: str
    server: MotoServer

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


@pytest.fixture
def s3_bucket(moto_s3: MotoServer) -> Bucket:
    name = f"fleet-test-{uuid.uuid4().hex[:12]}"
    moto_s3.client().create_bucket(Bucket=name)
    return Bucket(name, moto_s3)


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
