"""Content-addressed, atomic, multi-process-safe cache of conversions and reference outputs.

Layout under the cache root::

    onnx/<key>/model.onnx + meta.json      converted models (meta holds the checksum)
    keras/<model-hash>.json                what the Keras model looks like (shapes, names)
    outputs/<runner>-<identity>-<inputs>.npz   a runner's outputs (and logits) on given inputs
                                           (runners/cached.py: Keras, onnxruntime, TFLite, the cv2 logits probe)
    ref/prep-<key>.npz                     Keras' preprocessing of the photos
    cv2/<key>.npz                          the fresh-net/batch child process's outputs on the cv2 here
    graph/, probe/, failed/, ...           graph summaries, logits probe graphs, remembered failures
    locks/<key>.lock                       one lock per entry (filelock)

Every entry is written to a temporary name in the same directory and renamed into
place, so readers never see a half-written file, and a process killed mid-way leaves
only a temporary file behind.  Entries carry a SHA-256 that is checked on read; a
corrupted entry is discarded and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["Cache", "sha256_file", "sha256_path", "sha256_bytes", "default_user_cache", "slug"]

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: digests of the files this process hashed, by (path, inode, size, mtime_ns, ctime_ns): the cached ONNX is
#: verified, then summarised, and a model file is hashed by every deployment of it (formats, targets, variants)
_FILE_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def sha256_file(path: Path) -> str:
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    found = _FILE_DIGESTS.get(key)
    if found is not None:
        return found
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    _FILE_DIGESTS[key] = digest = h.hexdigest()
    return digest


def sha256_path(path: Path) -> str:
    """Hash a file, or a directory (relative names + contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for sub in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(sub.relative_to(path).as_posix()).encode() + b"\0")
        h.update(sha256_file(sub).encode())
    return h.hexdigest()


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True)


def _entry_check(parts: tuple[str, ...], body: str) -> str:
    """What a JSON entry's checksum covers: its name in the cache and its content."""
    return sha256_bytes(("/".join(parts) + "\0" + body).encode())


def _arrays_check(parts: tuple[str, ...], arrays: list[np.ndarray]) -> str:
    """What an array entry's checksum covers: its name, and each array's dtype, shape and bytes."""
    h = hashlib.sha256("/".join(parts).encode())
    for a in arrays:
        h.update(f"\0{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def slug(text: str) -> str:
    """A file-name-safe form of a label (model names, targets)."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


def default_user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-cvdnn"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Cache:
    """The plugin's cache rooted at ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- locking ----------------------------------------------------------------------
    @contextmanager
    def lock(self, key: str, timeout: float = 1800.0) -> Iterator[None]:
        from filelock import FileLock

        path = self.root / "locks" / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path), timeout=timeout):
            yield

    # -- converted models -----------------------------------------------------------------
    def onnx_dir(self, key: str) -> Path:
        return self.root / "onnx" / key

    def get_onnx(self, key: str, filename: str = "model.onnx") -> tuple[Path, dict[str, Any]] | None:
        """The cached artifact (ONNX, TFLite, frozen graph) and its metadata, or None if absent or corrupt
        (then removed)."""
        entry = self.onnx_dir(key)
        meta_path, model_path = entry / "meta.json", entry / filename
        if not (meta_path.is_file() and model_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("sha256") != sha256_file(model_path):
                raise ValueError("checksum mismatch")
        except (ValueError, OSError):
            shutil.rmtree(entry, ignore_errors=True)  # corrupted or truncated: rebuild
            return None
        return model_path, meta

    def put_onnx(self, key: str, produced: Path, meta: dict[str, Any],
                 filename: str = "model.onnx") -> tuple[Path, dict[str, Any]]:
        """Copy a freshly produced artifact into the cache atomically; returns its path and metadata."""
        entry = self.onnx_dir(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
        try:
            shutil.copyfile(produced, staging / filename)
            meta = dict(meta, sha256=sha256_file(staging / filename))
            (staging / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            shutil.rmtree(entry, ignore_errors=True)
            os.replace(staging, entry)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return entry / filename, meta

    # -- event log (one JSON line per conversion; O_APPEND keeps lines whole across processes) --
    def log_event(self, event: dict[str, Any]) -> None:
        path = self.root / "events.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(event, sort_keys=True) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        path = self.root / "events.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- small JSON documents ------------------------------------------------------------
    # Each entry carries a SHA-256 over its name and its content: a damaged entry, one emptied to ``{}``, or one
    # copied from another name reads as missing (and is rebuilt), never as a wrong document.
    def get_json(self, *parts: str) -> dict[str, Any] | None:
        path = self.root.joinpath(*parts)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        data = stored.get("data") if isinstance(stored, dict) and set(stored) == {"data", "sha256"} else None
        if not isinstance(data, dict) or stored["sha256"] != _entry_check(parts, _canonical(data)):
            path.unlink(missing_ok=True)
            return None
        return data

    def put_json(self, data: dict[str, Any], *parts: str) -> None:
        stored = {"data": data, "sha256": _entry_check(parts, _canonical(data))}
        _atomic_write_bytes(self.root.joinpath(*parts), json.dumps(stored, indent=2, sort_keys=True).encode())

    # -- arrays ---------------------------------------------------------------------------
    def get_arrays(self, *parts: str) -> list[np.ndarray] | None:
        path = self.root.joinpath(*parts)
        if not path.is_file():
            return None
        try:  # (the file is opened here: np.load leaks its handle when the archive is damaged)
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
                arrays = [data[f"a{i}"] for i in range(int(data["__count__"]))]
                if str(data["__check__"]) != _arrays_check(parts, arrays):
                    raise ValueError("checksum mismatch")  # damaged, or another entry's arrays
                return arrays
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # corrupt: rebuilt
            path.unlink(missing_ok=True)
            return None

    def put_arrays(self, arrays: list[np.ndarray], *parts: str) -> None:
        import io

        buf = io.BytesIO()
        # (Any: mypy matches a ** mapping against savez's allow_pickle: bool as well as its arrays)
        named: dict[str, Any] = {f"a{i}": a for i, a in enumerate(arrays)}
        np.savez(buf, __count__=np.array(len(arrays)), __check__=np.array(_arrays_check(parts, arrays)), **named)
        _atomic_write_bytes(self.root.joinpath(*parts), buf.getvalue())
