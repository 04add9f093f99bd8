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
import stat
import tempfile
import time
import zipfile
import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .scratch import cache_prefix

__all__ = ["Cache", "regular_file", "sha256_file", "sha256_path", "sha256_bytes", "default_user_cache", "slug"]

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


def regular_file(path: Path) -> bool:
    """Is ``path`` a regular file (not a link, FIFO, device or folder)?  Only those are read as cache entries:
    a FIFO would block the read for ever, a link could lead anywhere (/dev/zero, a loop)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _discard(path: Path) -> None:
    """Remove a damaged entry of the cache (a link itself, never what it points to)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=cache_prefix(path.name), suffix=".tmp", dir=path.parent)
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
        self.repairs: list[str] = []  # damaged entries this process discarded (each is rebuilt)

    def _repaired(self, path: Path, why: str) -> None:
        """Discard a damaged entry, once, with a note (the caller rebuilds it)."""
        _discard(path)
        note = f"{path.relative_to(self.root) if path.is_relative_to(self.root) else path}: {why}"
        self.repairs.append(note)
        with contextlib.suppress(OSError):
            self.log_event({"event": "cache-entry-discarded", "entry": note, "time": time.time(), "pid": os.getpid()})

    def check_writable(self) -> None:
        """The cache root can hold entries (a read-only or full disk: an error naming it and the fix)."""
        from .errors import CvdnnError

        existing = self.root  # (nothing is created here: a session that checks nothing leaves no cache folder)
        while not os.path.lexists(existing) and existing.parent != existing:
            existing = existing.parent
        why = ("it is not a folder" if not existing.is_dir() else
               "it is on a read-only file system or not writable by this user" if not os.access(existing, os.W_OK | os.X_OK)
               else None)
        if why:
            where = self.root if existing == self.root else f"{self.root} (at {existing})"
            raise CvdnnError(f"the cache folder {where} cannot be written: {why}",
                             fix="pass --cvdnn-cache-dir=DIR on a writable disk with free space")

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
        if not os.path.lexists(entry):
            return None
        if entry.is_symlink() or not entry.is_dir():
            self._repaired(entry, "not a folder")
            return None
        if not (os.path.lexists(meta_path) and os.path.lexists(model_path)):
            return None  # (absent, or another artifact of the same entry: a .tflite beside no .onnx)
        try:
            if not (regular_file(meta_path) and regular_file(model_path)):
                raise ValueError("an entry file is missing or not a regular file")
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict) or meta.get("sha256") != sha256_file(model_path):
                raise ValueError("checksum mismatch")
        except (ValueError, OSError) as exc:  # corrupted or truncated: rebuilt
            self._repaired(entry, f"damaged ({exc})")
            return None
        return model_path, meta

    def put_onnx(self, key: str, produced: Path, meta: dict[str, Any],
                 filename: str = "model.onnx") -> tuple[Path, dict[str, Any]]:
        """Copy a freshly produced artifact into the cache atomically; returns its path and metadata."""
        from .errors import CvdnnError

        entry = self.onnx_dir(key)
        staging: Path | None = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=cache_prefix(key), dir=entry.parent))
            shutil.copyfile(produced, staging / filename)
            meta = dict(meta, sha256=sha256_file(staging / filename))
            (staging / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            _discard(entry)
            os.replace(staging, entry)
        except OSError as exc:
            raise CvdnnError(f"the converted model cannot be stored in the cache {self.root} "
                             f"({exc.strerror or exc})",
                             fix="free some space there, or pass --cvdnn-cache-dir=DIR on a writable disk") from None
        finally:
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
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
        if not regular_file(path):
            return []
        events = []
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line) if line.strip() else None
                if isinstance(event, dict):
                    events.append(event)
        return events

    # -- small JSON documents ------------------------------------------------------------
    # Each entry carries a SHA-256 over its name and its content: a damaged entry, one emptied to ``{}``, or one
    # copied from another name reads as missing (and is rebuilt), never as a wrong document.
    def get_json(self, *parts: str) -> dict[str, Any] | None:
        path = self.root.joinpath(*parts)
        if not os.path.lexists(path):
            return None
        try:
            if not regular_file(path):
                raise ValueError("not a regular file")
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            self._repaired(path, f"unreadable ({exc})")
            return None
        data = stored.get("data") if isinstance(stored, dict) and set(stored) == {"data", "sha256"} else None
        if not isinstance(data, dict) or stored["sha256"] != _entry_check(parts, _canonical(data)):
            self._repaired(path, "its checksum does not match")
            return None
        return data

    def _put(self, data: bytes, parts: tuple[str, ...]) -> None:
        """Write an entry; a disk that cannot take it (full, read-only) leaves it uncached, with a note: the cache
        is an accelerator, the check goes on."""
        try:
            _atomic_write_bytes(self.root.joinpath(*parts), data)
        except OSError as exc:
            self.repairs.append(f"{'/'.join(parts)}: not cached ({exc.strerror or exc})")

    def put_json(self, data: dict[str, Any], *parts: str) -> None:
        stored = {"data": data, "sha256": _entry_check(parts, _canonical(data))}
        self._put(json.dumps(stored, indent=2, sort_keys=True).encode(), parts)

    # -- arrays ---------------------------------------------------------------------------
    def get_arrays(self, *parts: str) -> list[np.ndarray] | None:
        path = self.root.joinpath(*parts)
        if not os.path.lexists(path):
            return None
        try:  # (the file is opened here: np.load leaks its handle when the archive is damaged)
            if not regular_file(path):
                raise ValueError("not a regular file")
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
                count = data["__count__"]
                if count.shape != () or not 0 <= int(count) <= len(data.files):
                    raise ValueError(f"a count of shape {count.shape}")
                arrays = [data[f"a{i}"] for i in range(int(count))]
                if str(data["__check__"]) != _arrays_check(parts, arrays):
                    raise ValueError("checksum mismatch")  # damaged, or another entry's arrays
                return arrays
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:  # corrupt: rebuilt
            self._repaired(path, f"damaged ({type(exc).__name__}: {str(exc)[:80]})")
            return None

    def put_arrays(self, arrays: list[np.ndarray], *parts: str) -> None:
        import io

        buf = io.BytesIO()
        # (Any: mypy matches a ** mapping against savez's allow_pickle: bool as well as its arrays)
        named: dict[str, Any] = {f"a{i}": a for i, a in enumerate(arrays)}
        np.savez(buf, __count__=np.array(len(arrays)), __check__=np.array(_arrays_check(parts, arrays)), **named)
        self._put(buf.getvalue(), parts)
