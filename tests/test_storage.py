"""Outputs: every shape Replicate gives, downloads over real HTTP without the token, atomic writes
that leave nothing half-written, and the black substitute."""
from __future__ import annotations

import base64
import errno
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from shared.errors import LocalError, TransientError
from workers.download import Downloader, extension_of, output_urls
from workers.storage import output_paths, write_stream, write_substitute

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 2000


class FileOutputLike:
    """What replicate's FileOutput looks like to us: an object with .url."""

    def __init__(self, url: str):
        self.url = url


def test_output_urls_flattens_every_shape_in_order():
    assert output_urls(None) == []
    assert output_urls("https://a/1.png") == ["https://a/1.png"]
    assert output_urls(["https://a/1.png", FileOutputLike("https://a/2.webp")]) == ["https://a/1.png", "https://a/2.webp"]
    assert output_urls({"image": "https://a/1.png", "extra": ["data:image/png;base64,AA=="]}) == [
        "https://a/1.png", "data:image/png;base64,AA=="]
    assert extension_of("https://replicate.delivery/x/out-0.webp?sig=1") == "webp"
    assert extension_of("data:image/jpeg;base64,AA==") == "jpg"


def test_output_paths_number_extra_outputs_and_refuse_to_leave_the_root(tmp_path):
    root = tmp_path / "out"
    assert [p.name for p in output_paths(root, "b/cat", 3, default_ext="webp")] == ["cat.webp", "cat_1.webp", "cat_2.webp"]
    root.mkdir()
    os.symlink(tmp_path, root / "escape")
    with pytest.raises(LocalError, match="leaves the output root"):
        output_paths(root, "escape/x.png", 1)


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


def test_substitute_is_a_black_1600x900_image_in_the_requested_format(tmp_path):
    path = write_substitute(tmp_path / "s.jpg")
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == (1600, 900) and image.getextrema()[0][1] <= 8
    assert write_substitute(tmp_path / "video.mp4").suffix == ".png"  # Pillow writes no video


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
    downloader = Downloader(max_bytes=10_000)
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
