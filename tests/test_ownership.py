"""Nothing the user owns is removed or overwritten: bundles, repro/fix folders and reports are written only where
the plugin owns the path (quick tier: the rules themselves; whole plugin sessions, each hashing the user's folder
before and after, are in test_hostile_sessions.py).  ``_project``, ``_run`` and ``_tree`` serve both."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onnx_mutants import base_model
from pytest_cvdnn.errors import CvdnnError
from pytest_cvdnn.ownership import (MARKER, Protected, check_folder_destination, check_report_path, owned_folder,
                                    owned_report, publish_folder)


def _tree(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with its content digest (the user's data, as it is)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if ".pytest_cache" in rel.split(os.sep) or rel.startswith("cache"):
            continue
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _project(tmp_path: Path) -> Path:
    """A user's project: an ONNX model, a (fake) SavedModel export/ with variables/, another model's bundle."""
    import onnx

    project = tmp_path / "project"
    (project / "export" / "variables").mkdir(parents=True)
    (project / "export" / "saved_model.pb").write_bytes(b"\x08\x01user graph")
    (project / "export" / "variables" / "variables.index").write_bytes(b"user weights")
    onnx.save(base_model(), str(project / "small.onnx"))
    (project / "notes.txt").write_text("the user's notes\n")
    (project / "pytest.ini").write_text("[pytest]\n")
    return project


def _run(cwd: Path, *args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
                           f"--cvdnn-cache-dir={cache}", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


# -- path relations (unit) ------------------------------------------------------------------------------------
def test_every_path_relation_to_an_input_is_judged(tmp_path: Path) -> None:
    model = tmp_path / "project" / "export"
    (model / "variables").mkdir(parents=True)
    (tmp_path / "project" / "sibling").mkdir()
    (tmp_path / "link").symlink_to(model, target_is_directory=True)
    cwd = tmp_path / "project" / "work"
    cwd.mkdir()
    p = Protected.of([model], rootdir=tmp_path / "project" / "root", cwd=cwd)
    assert "is the session's input" in str(p.conflict(model))  # same
    assert "is the session's input" in str(p.conflict(tmp_path / "link"))  # a link to it
    assert "holds the session's input" in str(p.conflict(tmp_path / "project"))  # an ancestor
    assert "inside the input folder" in str(p.conflict(model / "variables"))  # inside a model folder
    assert p.conflict(tmp_path / "project" / "sibling") is None  # a sibling
    assert p.conflict(tmp_path / "project" / "sibling" / "bundles") is None
    assert "working directory" in str(p.conflict(cwd))
    assert p.conflict(tmp_path) is not None  # (holds the model and the working directory)
    assert "rootdir" in str(p.conflict(tmp_path / "project" / "root"))
    assert p.conflict(cwd / "bundles") is None  # a new folder in the working directory is fine


def test_a_folder_is_replaced_only_when_the_plugin_wrote_it(tmp_path: Path) -> None:
    protected = Protected.of([], cwd=tmp_path / "elsewhere")
    user = tmp_path / "user"
    user.mkdir()
    (user / "data.txt").write_text("mine")
    with pytest.raises(CvdnnError, match=r"--opt: will not write .*user: it exists and was not written by pytest-cvdnn"):
        publish_folder(user, lambda d: (d / "x").write_text("plugin"), "--opt", protected)
    assert (user / "data.txt").read_text() == "mine" and not (user / "x").exists()

    ours = publish_folder(tmp_path / "ours", lambda d: (d / "a").write_text("1"), "--opt", protected)
    assert (ours / MARKER).is_file() and owned_folder(ours)
    publish_folder(ours, lambda d: (d / "b").write_text("2"), "--opt", protected)  # regenerated: replaced whole
    assert sorted(p.name for p in ours.iterdir()) == sorted([MARKER, "b"])

    def broken(d: Path) -> None:
        (d / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        publish_folder(ours, broken, "--opt", protected)
    assert sorted(p.name for p in ours.iterdir()) == sorted([MARKER, "b"])  # a failure leaves it as it was
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cvdnn-tmp")] == []  # and no staging left

    link = tmp_path / "link"
    link.symlink_to(ours, target_is_directory=True)
    with pytest.raises(CvdnnError, match="symbolic link"):
        check_folder_destination(link, "--opt", protected)


def test_a_bundle_written_before_the_marker_is_still_ours_but_not_with_a_user_file_added(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "model.onnx").write_bytes(b"onnx")
    (legacy / "manifest.json").write_text(json.dumps({"format": 1, "files": {"model.onnx": "x"}}))
    assert owned_folder(legacy)
    (legacy / "my_notes.txt").write_text("user")
    assert not owned_folder(legacy)


def test_a_report_replaces_only_a_report(tmp_path: Path) -> None:
    protected = Protected.of([tmp_path / "model.onnx"], cwd=tmp_path / "elsewhere")
    (tmp_path / "model.onnx").write_bytes(b"model")
    with pytest.raises(CvdnnError, match=r"--cvdnn-report: will not write .*model.onnx: it is the session's input"):
        check_report_path(tmp_path / "model.onnx", "--cvdnn-report", protected)
    (tmp_path / "theirs.json").write_text('{"results": [1, 2]}')
    assert not owned_report(tmp_path / "theirs.json")
    with pytest.raises(CvdnnError, match="not a report pytest-cvdnn wrote"):
        check_report_path(tmp_path / "theirs.json", "--cvdnn-report", protected)
    (tmp_path / "ours.json").write_text('{"schema": 3, "tool": "pytest-cvdnn", "models": []}')
    check_report_path(tmp_path / "ours.json", "--cvdnn-report", protected)
    (tmp_path / "old.html").write_text('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
                                       "pytest-cvdnn: 1 model(s), 0 failed item(s)</title>")
    check_report_path(tmp_path / "old.html", "--cvdnn-html", protected)  # (a page from before the generator tag)
    (tmp_path / "empty.html").write_text("")
    check_report_path(tmp_path / "empty.html", "--cvdnn-html", protected)
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(CvdnnError, match="folder or a special file"):
        check_report_path(tmp_path / "a_folder", "--cvdnn-html", protected)


def test_each_refusal_names_the_option_the_path_why_and_the_fix(tmp_path: Path) -> None:
    """The whole message of each refusal: what a user reads to act on it."""
    protected = Protected.of([tmp_path / "model.onnx"], cwd=tmp_path / "elsewhere")
    (tmp_path / "model.onnx").write_bytes(b"model")
    (tmp_path / "theirs.json").write_text("{}")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "user").mkdir()
    cases = [
        (lambda: check_report_path(tmp_path / "model.onnx", "--cvdnn-report", protected),
         f"--cvdnn-report: will not write {tmp_path / 'model.onnx'}: it is the session's input "
         f"{tmp_path / 'model.onnx'}. Fix: pass another --cvdnn-report file, e.g. "
         "--cvdnn-report=reports/cvdnn.json."),
        (lambda: check_report_path(tmp_path / "theirs.json", "--cvdnn-html", protected),
         f"--cvdnn-html: will not write {tmp_path / 'theirs.json'}: the file exists and is not a report pytest-cvdnn "
         "wrote. Fix: move that file away, or pass another --cvdnn-html file, e.g. --cvdnn-html=reports/cvdnn.html."),
        (lambda: check_report_path(tmp_path / "a_folder", "--cvdnn-report", protected),
         f"--cvdnn-report: will not write {tmp_path / 'a_folder'}: it is a folder or a special file, not a report. "
         "Fix: pass another --cvdnn-report file, e.g. --cvdnn-report=reports/cvdnn.json."),
        (lambda: check_folder_destination(tmp_path / "user", "--cvdnn-repro", protected),
         f"--cvdnn-repro: will not write {tmp_path / 'user'}: it exists and was not written by pytest-cvdnn (it has "
         f"no {MARKER} marker). Fix: pass another --cvdnn-repro folder (a new one, e.g. --cvdnn-repro=cvdnn-out), or "
         "move that folder away yourself."),
    ]
    for call, said in cases:
        with pytest.raises(CvdnnError) as info:
            call()
        assert str(info.value) == said


def test_a_published_folder_is_shared_marked_and_made_where_its_parent_was_missing(tmp_path: Path) -> None:
    protected = Protected.of([], cwd=tmp_path / "elsewhere")
    dest = tmp_path / "deep" / "er" / "bundle"
    assert publish_folder(dest, lambda d: (d / "a").write_text("1"), "--opt", protected) == dest
    assert (dest / MARKER).read_text() == "written by pytest-cvdnn; the plugin may replace this folder\n"
    assert dest.stat().st_mode & 0o777 == 0o755 and (dest / "a").read_text() == "1"
    publish_folder(dest, lambda d: (d / "b").write_text("2"), "--opt", protected)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["bundle"]  # no staging or old copy left beside it
    (dest / MARKER).unlink()  # (no longer marked: someone else's now)
    with pytest.raises(CvdnnError, match="it exists and was not written by pytest-cvdnn"):
        publish_folder(dest, lambda d: None, "--opt", protected)
    assert sorted(p.name for p in dest.iterdir()) == ["b"]


# -- the plugin, as users ran it ---------------------------------------------------------------------------------


