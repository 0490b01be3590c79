"""What a file is, from its first bytes: the extension and content type follow what was received.

A model asked for WebP may answer JPEG (a fallback model that only makes JPEG, a provider that
ignores `output_format`), and an URL's suffix may say nothing. The magic numbers decide.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MediaType:
    ext: str  # without the dot, as written in file names: png, jpg, webp, gif, mp4, mov, webm
    mime: str

    @property
    def video(self) -> bool:
        return self.mime.startswith("video/")


PNG = MediaType("png", "image/png")
JPEG = MediaType("jpg", "image/jpeg")
WEBP = MediaType("webp", "image/webp")
GIF = MediaType("gif", "image/gif")
MP4 = MediaType("mp4", "video/mp4")
MOV = MediaType("mov", "video/quicktime")
WEBM = MediaType("webm", "video/webm")
BY_EXTENSION = {t.ext: t for t in (PNG, JPEG, WEBP, GIF, MP4, MOV, WEBM)} | {"jpeg": JPEG}


def sniff(head: bytes) -> MediaType | None:
    """The type of a file from (at least) its first 16 bytes; None when none matches."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[4:8] == b"ftyp":
        return MOV if head[8:10] == b"qt" else MP4
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return WEBM
    return None


def written_names(name: str) -> list[str]:
    """Every key a worker may write for the reserved name `name`, the name first: the name itself
    (bytes it cannot tell) and its stem with each extension bytes can give it (`fox.png` holding
    a JPEG is written `fox.jpg`). These are the item's objects for that name: submit refuses them
    when one exists already, and they are all that `--overwrite` lets the item replace."""
    names = [name]
    for media in BY_EXTENSION.values():
        other = with_extension(name, media.ext)
        if other not in names:
            names.append(other)
    return names


def with_extension(key: str, ext: str) -> str:
    """`key` with its extension replaced by `ext` (added when it has none)."""
    folder, slash, name = key.rpartition("/")
    stem, dot, _old = name.rpartition(".")
    return f"{folder}{slash}{stem if dot else name}.{ext}"
