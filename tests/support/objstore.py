"""A real S3-protocol server for the tests: moto's standalone server, started as a process.

`moto_s3` (one per test session) is a `moto_server` process on a free port; `s3_bucket` makes a
fresh bucket on it for one test and gives the environment a worker or the producer needs to
reach it (`AWS_ENDPOINT_URL`, keys, region: the standard variables, nothing else). The server
keeps everything in memory; `MotoServer.pause()` / `resume()` stop and continue the process
(SIGSTOP / SIGCONT) to play a store that does not answer for a while without losing its objects.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from bench.processes import free_port

MOTO_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class MotoServer:
    process: subprocess.Popen
    port: int
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **keys: str):
        import boto3

        merged = {**MOTO_KEYS, **keys}
        return boto3.client("s3", endpoint_url=self.url, region_name=merged["AWS_DEFAULT_REGION"],
                            aws_access_key_id=merged["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=merged["AWS_SECRET_ACCESS_KEY"])

    def environ(self, **keys: str) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.url, **MOTO_KEYS, **keys}

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_moto(log_path: Path, *, host: str = "127.0.0.1", port: int | None = None,
               env: dict[str, str] | None = None) -> MotoServer:
    """`moto_server` on `host:port` (a free port by default), once it answers."""
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if binary is None:
        pytest.fail("moto_server is not installed: pip install -e '.[test]' (it brings moto[server])")
    port = port or free_port(host)
    with open(log_path, "ab") as log:
        process = subprocess.Popen([binary, "-H", host, "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    server = MotoServer(process, port, host)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("moto_server did not answer within 20 s")


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
    iam = boto3.client("iam", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
