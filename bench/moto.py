"""moto's standalone S3 server as a process: for the tests' fixtures and for bench.storage_write.

`start_moto(log_path)` runs `moto_server` on a free port and returns once it answers; the server
keeps everything in memory. `pause()` / `resume()` stop and continue the process (SIGSTOP /
SIGCONT): a store that does not answer for a while, and loses nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import free_port

MOTO_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


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
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=merged["AWS_DEFAULT_REGION"],
            aws_access_key_id=merged["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=merged["AWS_SECRET_ACCESS_KEY"],
        )

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


def start_moto(
    log_path: Path, *, host: str = "127.0.0.1", port: int | None = None, env: dict[str, str] | None = None
) -> MotoServer:
    """`moto_server` on `host:port` (a free port by default), once it answers."""
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if binary is None:
        raise RuntimeError("moto_server is not installed: pip install -e '.[test]' (it brings moto[server])")
    port = port or free_port(host)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [binary, "-H", host, "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = MotoServer(process, port, host)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"moto_server exited with {process.returncode}: {log_path.read_text()[-2000:]}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("moto_server did not answer within 20 s")
