"""moto's standalone S3 server as a process: for the tests' fixtures and for bench.storage_write.

`start_moto(log_path)` runs `moto_server` on a free port and returns once it answers; the server
keeps everything in memory. `pause()` / `resume()` stop and continue the process (SIGSTOP /
SIGCONT): a store that does not answer for a while, and loses nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.emulators import ServerProcess, start_server
from bench.processes import free_port

MOTO_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class MotoServer(ServerProcess):
    def client(self, **keys: str):
        import boto3

        merged = {**MOTO_KEYS, **keys}
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=merged["AWS_DEFAULT_REGION"],
            aws_access_key_id=merged["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=merged["AWS_SECRET_ACCESS_KEY"],
        )

    def environ(self, **keys: str) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.url, **MOTO_KEYS, **keys}


def start_moto(
    log_path: Path, *, host: str = "127.0.0.1", port: int | None = None, env: dict[str, str] | None = None
) -> MotoServer:
    """`moto_server` on `host:port` (a free port by default), once it answers."""
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if binary is None:
        raise RuntimeError("moto_server is not installed: pip install -e '.[test]' (it brings moto[server])")
    port = port or free_port(host)
    process = start_server(
        [binary, "-H", host, "-p", str(port)], log_path, host=host, port=port, env=env, wait=20
    )
    return MotoServer(process, port, host)
