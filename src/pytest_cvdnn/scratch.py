"""Temporary files and folders, named after the process that made them, and swept when that process is gone.

A session killed with SIGKILL cannot clean up: its ``cvdnn-*`` folders in the temp dir (the TensorFlow helper's
socket folder, cv2.dnn child folders, conversion scratch) and its half-written cache entries (``.<name>.<pid>.*``)
stay.  Every such name carries its owner's pid; :func:`sweep` (run when a session starts) removes those whose
owner no longer runs.  Nothing here imports more than the standard library.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["prefix", "cache_prefix", "sweep"]

_TEMP = re.compile(r"^cvdnn-[a-z-]+?-(\d+)-")
_CACHE = re.compile(r"^\..*\.(\d+)\.(?:[\w-]+\.)?tmp$|^\..+\.(\d+)\.[\w-]+$")


def prefix(kind: str) -> str:
    """The prefix of a temp folder of this process: ``cvdnn-<kind>-<pid>-``."""
    return f"cvdnn-{kind}-{os.getpid()}-"


def cache_prefix(name: str) -> str:
    """The prefix of a half-written cache entry of this process: ``.<name>.<pid>.``."""
    return f".{name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def sweep(cache_root: Path | None = None, temp: Path | None = None) -> list[Path]:
    """Remove the temp folders and half-written cache entries of processes that no longer run; returns them."""
    removed: list[Path] = []
    folders = [(Path(temp or tempfile.gettempdir()), _TEMP)]
    if cache_root is not None and Path(cache_root).is_dir():
        folders += [(Path(cache_root), _CACHE)] + [(p, _CACHE) for p in Path(cache_root).iterdir()
                                                 if p.is_dir() and not p.is_symlink()]
    for folder, pattern in folders:
        try:
            names = [e.name for e in os.scandir(folder)]
        except OSError:
            continue
        for name in names:
            match = pattern.match(name)
            pid = next((int(g) for g in (match.groups() if match else ()) if g), None)
            if pid is not None and not _alive(pid):
                _remove(folder / name)
                removed.append(folder / name)
    return removed
