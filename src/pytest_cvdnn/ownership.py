"""Writes only where the plugin owns the path: the user's files are never removed or overwritten.

Every folder the plugin writes outside its cache (bundles, repro and fix folders) is filled in a fresh
temporary folder beside its destination, marked with a ``.pytest-cvdnn`` file, and moved into place.  An
existing destination is replaced only when it carries that marker (or is a bundle whose every file its
manifest lists, as bundles written before the marker are), and never when it is one of the session's inputs
(the model, the ONNX to ship, a folder of inputs), a folder holding one, a folder inside a model folder, the
rootdir or a folder holding the working directory.  Report files are replaced only when they are reports the
plugin wrote (or empty).  Nothing here imports pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .errors import CvdnnError

__all__ = ["MARKER", "Protected", "owned_folder", "owned_report", "publish_folder", "check_report_path",
           "check_folder_destination"]

#: the file that marks a folder as written by the plugin (its content names the tool)
MARKER = ".pytest-cvdnn"
#: what a report the plugin wrote holds near its start (JSON: the "tool" key; HTML: the generator meta tag)
REPORT_MARKERS = ('"tool": "pytest-cvdnn"', '<meta name="generator" content="pytest-cvdnn">',
                  "<title>pytest-cvdnn: ")  # (the last: pages written before the generator tag)
_HEAD = 64 * 1024


def _real(path: Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _within(path: Path, folder: Path) -> bool:
    """Is ``path`` ``folder`` or inside it (both resolved)?"""
    return path == folder or folder in path.parents


@dataclass(frozen=True)
class Protected:
    """What a session must never replace: its inputs (model files and folders, the ONNX to ship, input folders,
    bundles it replays), the rootdir and the working directory."""

    inputs: tuple[Path, ...] = ()
    rootdir: Path | None = None
    cwd: Path = field(default_factory=Path.cwd)

    @classmethod
    def of(cls, inputs: Iterable[str | Path | None], rootdir: Path | None = None,
           cwd: Path | None = None) -> "Protected":
        return cls(tuple(_real(Path(p)) for p in inputs if p), _real(rootdir) if rootdir else None,
                   _real(cwd or Path.cwd()))

    def conflict(self, dest: Path) -> str | None:
        """Why ``dest`` (a folder or file about to be written or replaced) must not be, or None."""
        real = _real(dest)
        for given in self.inputs:
            if real == given:
                return f"it is the session's input {given}"
            if given in real.parents and given.is_dir():
                return f"it is inside the input folder {given}"
            if real in given.parents:
                return f"it holds the session's input {given}"
        for what, folder in (("the rootdir", self.rootdir), ("the working directory", self.cwd)):
            if folder is not None and _within(folder, real):
                return f"it is or holds {what} {folder}"
        return None


def owned_folder(folder: Path) -> bool:
    """Did the plugin write this folder?  Its marker file, or (a bundle written before the marker) a manifest of
    the bundle format that lists every other file in the folder."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    marker = folder / MARKER
    if marker.is_file() and not marker.is_symlink():
        return True
    manifest = folder / "manifest.json"
    if not manifest.is_file() or manifest.is_symlink():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        listed = set(data["files"]) | {"manifest.json", "manifest.sha256"}
        present = {p.name for p in folder.iterdir()}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(data.get("format"), (int, str)) and present <= listed


def owned_report(path: Path) -> bool:
    """Is this file a report the plugin wrote (or empty)?"""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD).decode("utf-8", "replace")
    except OSError:
        return False
    return not head or any(m in head for m in REPORT_MARKERS)


def _refuse(dest: Path, option: str, why: str, fix: str) -> CvdnnError:
    return CvdnnError(f"{option}: will not write {dest}: {why}", fix=fix)


def _check_common(dest: Path, option: str, protected: Protected, fix: str) -> None:
    """What no destination may be: an input, a folder holding one, the rootdir or cwd's folder, a link."""
    why = protected.conflict(dest)
    if why:
        raise _refuse(dest, option, why, fix)
    if dest.is_symlink():
        raise _refuse(dest, option, "it is a symbolic link (the plugin never writes through or replaces links)", fix)


def check_report_path(path: Path, option: str, protected: Protected) -> None:
    """A report file may be written at ``path``: not an input, a folder, a link, or a file the plugin did not
    write (a usage error naming the option otherwise)."""
    path = Path(path)
    example = "reports/cvdnn.html" if "html" in option else "reports/cvdnn.json"
    fix = f"pass another {option} file, e.g. {option}={example}"
    _check_common(path, option, protected, fix)
    if path.exists() and not path.is_file():
        raise _refuse(path, option, "it is a folder or a special file, not a report", fix)
    if path.exists() and not owned_report(path):
        raise _refuse(path, option, "the file exists and is not a report pytest-cvdnn wrote",
                      f"move that file away, or {fix[0].lower()}{fix[1:]}")


def check_folder_destination(dest: Path, option: str, protected: Protected) -> None:
    """``dest`` may be (re)written as a plugin folder (a CvdnnError naming the option and the fix otherwise)."""
    dest = Path(dest)
    fix = f"pass another {option} folder (a new one, e.g. {option}=cvdnn-out)"
    _check_common(dest, option, protected, fix)
    if dest.exists() and not owned_folder(dest):
        raise _refuse(dest, option, "it exists and was not written by pytest-cvdnn (it has no "
                      f"{MARKER} marker)", f"{fix}, or move that folder away yourself")


def publish_folder(dest: Path, fill: Callable[[Path], None], option: str, protected: Protected) -> Path:
    """Fill a fresh folder beside ``dest`` with ``fill(staging)``, mark it, and move it into place (replacing
    ``dest`` only if the plugin wrote it).  Readers never see half a folder; a failure leaves ``dest`` as it was."""
    dest = Path(dest)
    check_folder_destination(dest, option, protected)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".cvdnn-tmp-{dest.name[:40]}.", dir=dest.parent))
    old: Path | None = None
    try:
        fill(staging)
        (staging / MARKER).write_text("written by pytest-cvdnn; the plugin may replace this folder\n")
        staging.chmod(0o755)  # mkdtemp makes it private; these folders are meant to be shared
        if dest.exists():
            check_folder_destination(dest, option, protected)  # (again: it may have changed meanwhile)
            old = Path(tempfile.mkdtemp(prefix=f".cvdnn-tmp-old-{dest.name[:40]}.", dir=dest.parent))
            os.replace(dest, old / "x")
        os.rename(staging, dest)
    except BaseException:
        if old is not None and (old / "x").exists() and not dest.exists():
            os.replace(old / "x", dest)  # put the previous folder back
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return dest
