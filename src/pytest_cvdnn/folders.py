"""The files of a folder the user points an option at (--cvdnn-inputs, --cvdnn-images), read as untrusted."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .errors import CvdnnError

__all__ = ["IMAGE_SUFFIXES", "folder_files", "image_dimensions"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def folder_files(folder: Path, suffixes: Sequence[str], option: str) -> list[Path]:
    """The files of ``folder`` with one of ``suffixes``, sorted; anything else with such a name (a named
    pipe, a device, a folder) is named and refused — reading a pipe would wait forever."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in suffixes:
            continue
        if not path.is_file():
            kind = ("a named pipe" if path.is_fifo() else "a folder" if path.is_dir() else "a socket"
                    if path.is_socket() else "a device" if path.is_char_device() or path.is_block_device()
                    else "missing (a broken link?)")
            raise CvdnnError(f"{option}={folder}: {path.name} is not a regular file ({kind})",
                             fix=f"remove it from {folder}, or point {option} at a folder of regular files")
        found.append(path)
    return found


def image_dimensions(path: Path) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG, BMP or GIF header without decoding the pixels (None for another
    format, or a header that cannot be read: the decoder judges it)."""
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                return int(w), int(h)
            if head[:6] in (b"GIF87a", b"GIF89a"):
                w, h = struct.unpack("<HH", head[6:10])
                return int(w), int(h)
            if head.startswith(b"BM") and len(head) >= 26:
                w, h = struct.unpack("<ii", head[18:26])
                return abs(int(w)), abs(int(h))
            if head.startswith(b"\xff\xd8"):
                return _jpeg_dimensions(fh)
    except (OSError, struct.error):
        return None
    return None


def _jpeg_dimensions(fh: Any) -> tuple[int, int] | None:
    """Walk a JPEG's markers to its start-of-frame (which holds the size)."""
    import struct

    fh.seek(2)
    for _ in range(10000):
        marker = fh.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:  # no length
            continue
        length = struct.unpack(">H", fh.read(2))[0]
        if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">xHH", fh.read(5))
            return int(w), int(h)
        fh.seek(length - 2, 1)
    return None
