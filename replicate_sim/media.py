"""Output files: real, decodable images and videos, unique per prediction, cheap to make.

Content is a pure function of (prediction id, output index, format, size), so a file can be made
again on demand and hash the same; the server only caches recent ones.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
from functools import cache
from importlib import resources

CONTENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "mp4": "video/mp4",
}
_PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
BASE_AREA = 1_000_000  # Replicate's image models default to about one megapixel


def parse_ratio(aspect_ratio: str | None) -> float:
    """Width / height for "16:9"; 1.0 for anything that names no ratio (match_input_image)."""
    if not aspect_ratio or ":" not in aspect_ratio:
        return 1.0
    w, _, h = aspect_ratio.partition(":")
    try:
        return float(w) / float(h)
    except (ValueError, ZeroDivisionError):
        return 1.0


def image_size(
    aspect_ratio: str | None, megapixels: float = 1.0, image_scale: float = 1.0
) -> tuple[int, int]:
    """Dimensions following the aspect ratio, about `megapixels * image_scale` megapixels.

    Even numbers (video-friendly), not multiples of 16 like real models, so that tiny test
    images keep their aspect ratio."""
    ratio = parse_ratio(aspect_ratio)
    area = max(BASE_AREA * megapixels * image_scale, 64.0)
    width = math.sqrt(area * ratio)
    height = width / ratio
    return max(8, int(round(width / 2)) * 2), max(8, int(round(height / 2)) * 2)


def _colour(seed: bytes) -> tuple[int, int, int]:
    return seed[0], seed[1], seed[2]


def render_image(prediction_id: str, index: int, fmt: str, size: tuple[int, int], quality: int = 80) -> bytes:
    from PIL import Image, ImageDraw  # imported here so the server starts fast

    digest = hashlib.sha256(f"{prediction_id}/{index}".encode()).digest()
    width, height = size
    image = Image.new("RGB", size, _colour(digest))
    draw = ImageDraw.Draw(image)
    # A second colour block and the id make each output visibly different, not only by hash.
    draw.rectangle((0, 0, width // 2, height // 2), fill=_colour(digest[3:]))
    if width >= 64 and height >= 16:
        draw.text((4, height // 2 + 2), f"{prediction_id[:12]} #{index}", fill=(255, 255, 255))
    buffer = io.BytesIO()
    pil_format = _PIL_FORMATS[fmt]
    options: dict = {}
    if pil_format in ("JPEG", "WEBP"):
        options["quality"] = max(1, min(int(quality), 100))
    image.save(buffer, pil_format, **options)
    return buffer.getvalue()


@cache
def _video_template(orientation: str) -> bytes:
    return resources.files("replicate_sim.data").joinpath(f"tiny-{orientation}.mp4").read_bytes()


def render_video(prediction_id: str, aspect_ratio: str | None) -> bytes:
    """A tiny valid H.264 MP4 (shipped), made unique by a trailing top-level `free` box.

    Players skip `free` boxes, so the file stays valid while its bytes differ per prediction.
    """
    ratio = parse_ratio(aspect_ratio)
    orientation = "16x9" if ratio > 1.01 else "9x16" if ratio < 0.99 else "1x1"
    payload = f"replicate-sim prediction {prediction_id}".encode()
    return _video_template(orientation) + struct.pack(">I4s", 8 + len(payload), b"free") + payload


def render_output(
    prediction_id: str,
    index: int,
    fmt: str,
    *,
    aspect_ratio: str | None,
    megapixels: float,
    image_scale: float,
    quality: int = 80,
) -> bytes:
    if fmt == "mp4":
        return render_video(prediction_id, aspect_ratio)
    return render_image(prediction_id, index, fmt, image_size(aspect_ratio, megapixels, image_scale), quality)
