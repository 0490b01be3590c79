"""Outputs: every shape Replicate gives, downloads over real HTTP without the token, atomic writes
that leave nothing half-written, and the black substitute."""

from __future__ import annotations

import base64
import errno
import io
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from shared.errors import LocalError, TransientError
from workers.download import Downloader, output_urls
from workers.storage import substitute_image, write_stream

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 2000


class FileOutputLike:
    """What replicate's FileOutput looks like to us: an object with .url."""

    def __init__(self, url: str):
        self.url = url


def test_output_urls_flattens_every_shape_in_order():
    assert output_urls(None) == []
    assert output_urls("https://a/1.png") == ["https://a/1.png"]
    assert output_urls(["https://a/1.png", FileOutputLike("https://a/2.webp")]) == [
        "https://a/1.png",
        "https://a/2.webp",
    ]
    assert output_urls({"image": "https://a/1.png", "extra": ["data:image/png;base64,AA=="]}) == [
        "https://a/1.png",
        "data:image/png;base64,AA==",
    ]


def test_write_stream_is_atomic_capped_and_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "d" / "img.png"
    assert write_stream(target, [b"ab", b"cd"], max_bytes=10) == 4 and target.read_bytes() == b"abcd"

    with pytest.raises(LocalError, match="cap"):
        write_stream(target, [b"123456", b"7890123"], max_bytes=10)
    with pytest.raises(LocalError, match="empty"):
        write_stream(target, [], max_bytes=10)

    def network_drops():
        yield b"12"
        raise TransientError("download interrupted")

    with pytest.raises(TransientError):  # the network's error, not turned into a local one
        write_stream(target, network_drops(), max_bytes=10)

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(LocalError, match="disk full"):
        write_stream(target, [b"xyz"], max_bytes=10)
    assert target.read_bytes() == b"abcd"  # every failure left the previous file as it was
    assert [p.name for p in target.parent.iterdir()] == ["img.png"]  # and no temporary file


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["022", "027", "077"])
def test_written_files_follow_the_umask_like_any_new_file(tmp_path, umask):
    """Outputs and manifests are read by a web server or a colleague: mode 0666 less the umask
    (0644 with the usual 022), as `open()` would give, not the 0600 of a private temp file."""
    previous = os.umask(umask)
    try:
        write_stream(tmp_path / "d" / "img.png", [b"png"], max_bytes=10)
        (tmp_path / "plain").write_bytes(b"x")  # what the same process gets from a plain open()
    finally:
        os.umask(previous)
    mode = (tmp_path / "d" / "img.png").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask == (tmp_path / "plain").stat().st_mode & 0o777, oct(mode)


def test_a_file_where_the_directory_should_be_is_a_local_error(tmp_path):
    (tmp_path / "batch").write_text("not a directory")
    with pytest.raises(LocalError, match="cannot write"):
        write_stream(tmp_path / "batch" / "0.png", [b"x"], max_bytes=10)


def test_substitute_is_a_black_1600x900_image_in_the_requested_format():
    key, data = substitute_image("b/s.jpg")
    with Image.open(io.BytesIO(data)) as image:
        assert key == "b/s.jpg"
        assert image.format == "JPEG" and image.size == (1600, 900) and image.getextrema()[0][1] <= 8
    assert substitute_image("b/video.mp4")[0] == "b/video.png"  # Pillow writes no video
    assert substitute_image("b/noext")[0] == "b/noext.png"


@pytest.fixture
def file_server():
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(dict(self.headers))
            if self.path == "/img.png":
                self.send_response(200)
                self.send_header("Content-Length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)
            elif self.path == "/huge.png":
                self.send_response(200)
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_downloads_over_http_without_credentials(file_server, tmp_path, monkeypatch):
    base, seen = file_server
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_must_never_travel")
    from workers.download import AddressScope

    downloader = Downloader(max_bytes=10_000, scope=AddressScope.LOOPBACK)  # as with the stand-in
    try:
        assert downloader.save(f"{base}/img.png", tmp_path / "a.png") == len(PNG)
        assert (tmp_path / "a.png").read_bytes() == PNG
        assert all("Authorization" not in headers for headers in seen)

        with pytest.raises(TransientError) as gone:
            downloader.save(f"{base}/expired.png", tmp_path / "b.png")
        assert gone.value.status == 404  # the attempt then asks for a new prediction
        with pytest.raises(LocalError, match="cap"):
            downloader.save(f"{base}/huge.png", tmp_path / "c.png")
        with pytest.raises(LocalError, match="scheme"):
            downloader.save("ftp://example/x.png", tmp_path / "d.png")
        with pytest.raises(TransientError):
            downloader.save("http://127.0.0.1:9/nothing.png", tmp_path / "e.png")  # connection refused

        data_uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
        downloader.save(data_uri, tmp_path / "f.png")
        assert (tmp_path / "f.png").read_bytes() == PNG
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "f.png"]
    finally:
        downloader.close()


# --- which addresses a download may reach ----------------------------------------------------------
@pytest.fixture
def redirector():
    """A loopback server whose every answer redirects to wherever `targets[0]` says."""
    targets: list[str] = ["http://169.254.169.254/latest/meta-data/"]
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(302)
            self.send_header("Location", targets[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", targets, hits
    server.shutdown()
    server.server_close()


def test_outputs_on_private_addresses_are_refused_at_every_hop(file_server, redirector, tmp_path):
    """Loopback, private, link-local, cloud-metadata, reserved: refused before any connection is
    made to them, whether the output URL names them, a name resolves to them, or a redirect leads
    there. A refusal is a LocalError: the item fails, no new (paid) prediction."""
    from shared.errors import RefusedOutputURLError
    from workers.download import AddressScope

    base, seen = file_server
    public_only = Downloader(max_bytes=10_000, scope=AddressScope.PUBLIC)
    loopback_too = Downloader(max_bytes=10_000, scope=AddressScope.LOOPBACK)
    try:
        for url in (
            f"{base}/img.png",
            base.replace("127.0.0.1", "localhost") + "/img.png",
            base.replace("127.0.0.1", "[::ffff:127.0.0.1]") + "/img.png",
        ):
            with pytest.raises(RefusedOutputURLError, match="FLEET_ALLOW_PRIVATE_OUTPUT_URLS"):
                public_only.save(url, tmp_path / "a.png")
        assert seen == []  # not one request reached the loopback server
        for url in (
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/latest/",
            "http://10.20.30.40/x.png",
            "http://192.168.1.1/x.png",
            "http://100.100.100.200/x",
            "http://0.0.0.0:9/x.png",
            "http://224.0.0.1/x.png",
            "http://240.0.0.1/x.png",
        ):
            with pytest.raises(LocalError, match="refused"):
                loopback_too.save(url, tmp_path / "b.png")

        # the first hop is allowed (loopback), the redirect's target is not
        entry, targets, hits = redirector
        for target in (
            "http://169.254.169.254/latest/meta-data/iam/",
            "http://10.0.0.7/x.png",
            f"{base}/img.png",
        ):
            targets[0] = target.replace("127.0.0.1", "[::1]") if target.startswith(base) else target
            expected_error = TransientError if target.startswith(base) else RefusedOutputURLError
            with pytest.raises(expected_error):  # ::1 is loopback too, but nothing listens there
                loopback_too.save(f"{entry}/out.png", tmp_path / "c.png")
        targets[0] = f"{base}/img.png"  # a redirect to an allowed address is followed
        assert loopback_too.save(f"{entry}/out.png", tmp_path / "c.png") == len(PNG)
        assert len(hits) == 4 and not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()
    finally:
        public_only.close()
        loopback_too.close()


def test_the_allowed_addresses_follow_the_setting_or_where_replicate_is(settings):
    from workers.download import AddressScope, output_scope

    assert output_scope(settings.with_(replicate_base_url=None)) is AddressScope.PUBLIC  # Replicate
    assert output_scope(settings.with_(replicate_base_url="https://8.8.8.8/")) is AddressScope.PUBLIC
    assert output_scope(settings.with_(replicate_base_url="http://127.0.0.1:8787")) is AddressScope.LOOPBACK
    assert output_scope(settings.with_(replicate_base_url="http://localhost:8787")) is AddressScope.LOOPBACK
    assert output_scope(settings.with_(replicate_base_url="http://172.18.0.5:8787")) is AddressScope.ANY
    assert (
        output_scope(settings.with_(replicate_base_url="https://8.8.8.8/", allow_private_output_urls=True))
        is AddressScope.ANY
    )


def test_a_data_uri_over_the_cap_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    from workers import download

    decoded: list[int] = []
    real = base64.b64decode
    monkeypatch.setattr(
        download.base64, "b64decode", lambda data, **kw: decoded.append(len(data)) or real(data, **kw)
    )
    downloader = Downloader(max_bytes=3000)
    try:
        with pytest.raises(LocalError, match="cap"):
            downloader.save(
                "data:image/png;base64," + base64.b64encode(b"x" * 3001).decode(), tmp_path / "a.png"
            )
        with pytest.raises(LocalError, match="cap"):
            downloader.save("data:image/png," + "%41" * 3001, tmp_path / "b.png")
        assert decoded == []  # refused on its length alone
        downloader.save("data:image/png;base64," + base64.b64encode(b"x" * 3000).decode(), tmp_path / "c.png")
        assert (tmp_path / "c.png").read_bytes() == b"x" * 3000
    finally:
        downloader.close()
