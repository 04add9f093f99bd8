"""A damaged cache entry is discarded and rebuilt, once, with a note; nothing in the cache is ever read that is not
a regular file (a FIFO would hang the session, a link could lead anywhere).  Quick tier: no TensorFlow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from pytest_cvdnn.cache import Cache
from pytest_cvdnn.errors import CvdnnError


@pytest.fixture(autouse=True)
def _never_hang() -> Iterator[None]:
    """A read that blocks (a FIFO opened as a cache entry) fails the test instead of hanging the suite."""
    def timeout(*_: Any) -> None:  # (not an OSError, which the cache's reads catch: pytest's failure)
        pytest.fail("a cache read blocked (a special file was opened as an entry)", pytrace=False)

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(15)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _onnx_entry(cache: Cache, tmp_path: Path) -> Path:
    produced = tmp_path / "produced.onnx"
    produced.write_bytes(b"onnx bytes")
    cache.put_onnx("k1", produced, {"opset": 13})
    assert cache.get_onnx("k1") is not None
    return cache.onnx_dir("k1")


@pytest.mark.parametrize("meta", ["[]", "null", "7", '"text"', "{", ""])
def test_a_converted_models_meta_that_is_not_an_object_is_rebuilt(meta: str, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    entry = _onnx_entry(cache, tmp_path)
    (entry / "meta.json").write_text(meta)
    assert cache.get_onnx("k1") is None  # (was: AttributeError on every later run)
    assert not entry.exists() and len(cache.repairs) == 1 and "onnx/k1" in cache.repairs[0]
    assert cache.get_onnx("k1") is None and len(cache.repairs) == 1  # discarded once: now simply missing


@pytest.mark.parametrize("damage", ["fifo", "dev-zero-link", "symlink-loop", "folder", "file-for-folder"])
def test_special_files_in_the_cache_are_never_opened(damage: str, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    cache.put_json({"a": 1}, "graph", "x.json")
    cache.put_arrays([np.ones(3)], "outputs", "y.npz")
    entry = _onnx_entry(cache, tmp_path)
    targets = [cache.root / "graph" / "x.json", cache.root / "outputs" / "y.npz", entry / "meta.json"]
    for path in targets:
        path.unlink()
        if damage == "fifo":
            os.mkfifo(path)
        elif damage == "dev-zero-link":
            path.symlink_to("/dev/zero")
        elif damage == "symlink-loop":
            path.symlink_to(path)
        elif damage in ("folder", "file-for-folder"):
            path.mkdir()
    if damage == "file-for-folder":  # the entry folder itself is a file
        import shutil

        shutil.rmtree(entry)
        entry.write_text("x")
    assert cache.get_json("graph", "x.json") is None
    assert cache.get_arrays("outputs", "y.npz") is None
    assert cache.get_onnx("k1") is None
    assert len(cache.repairs) == 3, cache.repairs
    assert not any(os.path.lexists(p) for p in targets[:2]) and not os.path.lexists(entry)
    assert Path("/dev/zero").exists()  # (a link's target is never touched)
    cache.put_json({"a": 2}, "graph", "x.json")  # rebuilt
    assert cache.get_json("graph", "x.json") == {"a": 2}


def test_a_non_scalar_array_count_is_a_damaged_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    path = cache.root / "outputs" / "z.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, __count__=np.array([1, 2]), __check__=np.array("x"), a0=np.ones(2))
    assert cache.get_arrays("outputs", "z.npz") is None and not path.exists() and cache.repairs


def test_an_unwritable_cache_is_named_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(CvdnnError, match=r"the cache folder .*blocker/cache .*cannot be written: it is not a folder.*Fix: pass "
                       "--cvdnn-cache-dir=DIR on a writable disk"):
        Cache(blocker / "cache").check_writable()
    produced = tmp_path / "m.onnx"
    produced.write_bytes(b"x")
    with pytest.raises(CvdnnError, match="the converted model cannot be stored in the cache"):
        Cache(blocker / "cache").put_onnx("k", produced, {})
    cache = Cache(blocker / "cache")
    cache.put_json({"a": 1}, "graph", "x.json")  # an accelerator: not cached, noted, no error
    assert cache.repairs and "not cached" in cache.repairs[0]


def test_what_a_killed_session_left_is_swept_and_a_live_ones_is_not(tmp_path: Path) -> None:
    from pytest_cvdnn.scratch import cache_prefix, prefix, sweep

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    temp, cache = tmp_path / "tmp", tmp_path / "cache"
    (cache / "outputs").mkdir(parents=True)
    (cache / "onnx").mkdir()
    stale = [temp / f"cvdnn-child-{dead}-abc", temp / f"cvdnn-tf-{dead}-x1", temp / f"cvdnn-fix-tensors-{dead}-q",
             cache / "outputs" / f".r.npz.{dead}.k2j3.tmp", cache / f".p.onnx.{dead}.tmp",
             cache / "onnx" / f".key1.{dead}.zz9"]
    live = [temp / (prefix("child") + "abc"), cache / "outputs" / (cache_prefix("r.npz") + "k2j3.tmp"),
            temp / "cvdnn-child-abc", temp / "someone-else-123-x", cache / "outputs" / "r.npz"]
    for path in stale + live:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in (".tmp", ".npz"):
            path.write_text("x")
        else:
            path.mkdir()
    removed = sweep(cache, temp)
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)


def test_each_discarded_entry_is_noted_with_why_and_logged(tmp_path: Path) -> None:
    """The repair note names the entry (relative to the cache) and what was wrong; the event log says the same."""
    import json as _json
    import os
    import time

    import numpy as np

    from pytest_cvdnn.cache import Cache

    cache = Cache(tmp_path)
    cache.put_arrays([np.arange(3.0)], "ref", "a.npz")
    other = tmp_path / "ref" / "b.npz"
    other.write_bytes((tmp_path / "ref" / "a.npz").read_bytes())  # another entry's arrays
    assert cache.get_arrays("ref", "b.npz") is None and not other.exists()
    assert cache.repairs[-1] == "ref/b.npz: damaged (ValueError: checksum mismatch)"
    os.mkfifo(tmp_path / "ref" / "c.npz")
    assert cache.get_arrays("ref", "c.npz") is None
    assert cache.repairs[-1] == "ref/c.npz: damaged (ValueError: not a regular file)"
    (tmp_path / "ref" / "d.npz").write_bytes(b"PK\x03\x04 truncated")
    assert cache.get_arrays("ref", "d.npz") is None and cache.repairs[-1].startswith("ref/d.npz: damaged (")
    events = [e for e in cache.events() if e.get("event") == "cache-entry-discarded"]
    assert [e["entry"] for e in events] == cache.repairs
    assert all(e["pid"] == os.getpid() and abs(e["time"] - time.time()) < 60 for e in events)
    assert _json.dumps(events)  # (plain JSON)
    np.savez(tmp_path / "ref" / "e.npz", __count__=np.array(5), a0=np.zeros(1), __check__=np.array("x"))
    assert cache.get_arrays("ref", "e.npz") is None
    assert cache.repairs[-1] == "ref/e.npz: damaged (ValueError: a count of shape ())"
    np.savez(tmp_path / "ref" / "f.npz", __count__=np.array([1]), a0=np.zeros(1), __check__=np.array("x"))
    assert cache.get_arrays("ref", "f.npz") is None
    assert cache.repairs[-1] == "ref/f.npz: damaged (ValueError: a count of shape (1,))"
    cache.put_arrays([], "ref", "g.npz")  # no arrays at all: a count of 0 is a valid entry
    assert cache.get_arrays("ref", "g.npz") == []


def test_a_cache_that_cannot_be_written_names_the_folder_it_stopped_at(tmp_path: Path) -> None:
    from pytest_cvdnn.cache import Cache
    from pytest_cvdnn.errors import CvdnnError

    Cache(tmp_path / "new" / "deeper").check_writable()  # (parents that do not exist yet: the existing one judged)
    assert not (tmp_path / "new").exists()  # nothing created
    (tmp_path / "file").write_text("x")
    with pytest.raises(CvdnnError) as info:
        Cache(tmp_path / "file").check_writable()
    assert str(info.value) == (f"the cache folder {tmp_path / 'file'} cannot be written: it is not a folder. Fix: "
                               "pass --cvdnn-cache-dir=DIR on a writable disk with free space.")
    with pytest.raises(CvdnnError) as info:
        Cache(tmp_path / "file" / "sub").check_writable()
    assert str(info.value).startswith(f"the cache folder {tmp_path / 'file' / 'sub'} (at {tmp_path / 'file'}) cannot "
                                      "be written: it is not a folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not os.access(ro, os.W_OK):  # (root ignores the mode bits: it can write there)
            with pytest.raises(CvdnnError, match="it is on a read-only file system or not writable by this user"):
                Cache(ro / "c").check_writable()
        else:
            Cache(ro / "c").check_writable()
    finally:
        ro.chmod(0o755)
