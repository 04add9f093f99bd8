"""The files of a folder the user points an option at (--cvdnn-inputs, --cvdnn-images), read as untrusted."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .errors import CvdnnError

__all__ = ["IMAGE_SUFFIXES", "folder_files"]

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
