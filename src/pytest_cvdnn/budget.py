"""The memory budget: what a check may allocate, judged before anything is allocated (no imports beyond the
standard library and the errors module)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CvdnnError

__all__ = ["ram_bytes", "memory_budget_bytes", "check_image_budget", "check_blob_budget",
           "IMAGE_PEAK_BYTES_PER_VALUE"]


def ram_bytes() -> int:
    """This machine's physical memory (8 GiB where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 8 << 30


def memory_budget_bytes(budget_gib: float | None) -> float:
    """The memory budget in bytes: ``budget_gib`` (--cvdnn-memory-budget), else half of the RAM."""
    return budget_gib * (1 << 30) if budget_gib is not None else ram_bytes() / 2


#: bytes per pixel value an image costs at its peak when read and preprocessed (the decoded uint8 image, float32
#: copies for the reference's resize and normalisation, the blob): a 20000x20000 photo needs ~19 GiB
IMAGE_PEAK_BYTES_PER_VALUE = 16


def check_image_budget(path: Path, option: str, budget_gib: float | None = None) -> None:
    """Refuse, before decoding it, an image whose pixels alone would exceed the memory budget."""
    from .folders import image_dimensions

    size = image_dimensions(path)
    if size is None:
        return
    width, height = size
    need = width * height * 4 * IMAGE_PEAK_BYTES_PER_VALUE
    budget = memory_budget_bytes(budget_gib)
    if need > budget:
        raise CvdnnError(
            f"{option}: {path.name} is {width}x{height} pixels; reading and preprocessing it would need about "
            f"{need / (1 << 30):.3g} GiB, more than the memory budget of {budget / (1 << 30):.3g} GiB; it is not read",
            fix="resize it (e.g. cv2.resize to the model's input size or a few times it) or remove it from that "
            "folder; or raise --cvdnn-memory-budget (GiB) on a machine that has the memory")


def check_blob_budget(width: int, height: int, channels: int, count: int, what: str,
                      budget_gib: float | None = None) -> None:
    """Refuse a blob of ``count`` images at ``width`` x ``height`` that would exceed the memory budget."""
    need = float(width) * float(height) * max(channels, 1) * max(count, 1) * IMAGE_PEAK_BYTES_PER_VALUE
    budget = memory_budget_bytes(budget_gib)
    if need > budget:
        raise CvdnnError(
            f"{what}: a blob of {count} image(s) at {width}x{height}x{channels} would need about "
            f"{need / (1 << 30):.3g} GiB, more than the memory budget of {budget / (1 << 30):.3g} GiB; it is not made",
            fix="check the size= of --cvdnn-preprocess (or the model's declared input size); raise "
            "--cvdnn-memory-budget (GiB) only on a machine that has the memory")
