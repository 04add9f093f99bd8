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


# -- the plugin, as users ran it ---------------------------------------------------------------------------------


