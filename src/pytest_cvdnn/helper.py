"""The TensorFlow helper: a child process that does a cold deployment's TensorFlow work.

On a cold cache the Keras side of a deployment (load, metadata, tf2onnx conversion, Keras
reference outputs and preprocessing tensors) runs in one child process per session, which
writes it into the cache; the pytest process then reads it like a warm run.  So the pytest
process does not import TensorFlow at all: it stays small, it does not pay TensorFlow's
teardown at exit (the helper ends with ``os._exit``), and it runs the onnxruntime and cv2.dnn
checks while the helper still computes the Keras references (two cores at work).

The helper is an accelerator, not a second implementation: it runs the deployment's own
stages (:meth:`Deployment.prepare`), and whatever it did not finish — an error, a crash — is
simply done again in the pytest process, which reports it exactly as without the helper.
It is used when TensorFlow is not imported yet in the pytest process (a project whose
conftest imports Keras keeps everything in-process) and can be turned off with
``--cvdnn-tf-in-process``.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from .errors import CvdnnError

__all__ = ["helper_wanted", "submit", "wait", "error", "close"]

_CHILD = r"""
import dataclasses, json, os, pickle, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
events = os.fdopen(int(sys.argv[1]), "w", buffering=1)
from pytest_cvdnn.cache import Cache
from pytest_cvdnn.deployment import build_deployment
from pytest_cvdnn.errors import CvdnnError
for line in sys.stdin:
    job, payload = line.split(" ", 1)
    reached = []

    def notify(phase):
        reached.append(phase)
        events.write(f"{job} {phase}\n")

    try:
        settings, root, rootdir, path = pickle.loads(bytes.fromhex(payload))
        sys.path.extend(p for p in path if p not in sys.path)  # the pytest process's (factories' modules)
        settings = dataclasses.replace(settings, tf_helper=False)
        build_deployment(settings, Cache(root), rootdir).prepare(notify)
    except BaseException as exc:
        error = {}
        # the model loaded but its conversion failed: the pytest process would fail the same way, so it gets
        # the error instead of converting again; anything else it does again itself and reports
        if reached == ["loaded"] and type(exc) is CvdnnError:
            error = {"message": exc.message, "fix": exc.fix, "details": exc.details, "node": exc.node}
        events.write(f"{job} failed {json.dumps(error)}\n")
    events.write(f"{job} done\n")
events.flush()
os._exit(0)  # skip TensorFlow's teardown: everything is in the cache
"""


class _Helper:
    def __init__(self) -> None:
        read_end, write_end = os.pipe()
        self.log = tempfile.TemporaryFile()  # the helper's stderr (TensorFlow's chatter), read by nobody
        try:
            code = f"import sys; sys.path.append({str(Path(__file__).resolve().parents[1])!r})\n" + _CHILD
            self.proc = subprocess.Popen([sys.executable, "-c", code, str(write_end)], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=self.log, pass_fds=(write_end,), text=True)
        finally:
            os.close(write_end)
        self.events = os.fdopen(read_end, "r")
        self.seen: dict[str, set[str]] = {}
        self.errors: dict[str, dict[str, Any]] = {}

    def submit(self, settings: Any, root: Path, rootdir: Path | None) -> str:
        job = f"j{next(_JOBS)}"  # unique in the process: a job of a helper that died is not confused with a new one
        payload = pickle.dumps((settings, root, rootdir, list(sys.path))).hex()
        self.seen[job] = set()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{job} {payload}\n")
        self.proc.stdin.flush()
        return job

    def wait(self, job: str, phase: str) -> bool:
        """Block until ``job`` reached ``phase`` (True) or ended without reaching it, or the helper is gone."""
        seen = self.seen[job]
        while phase not in seen and "done" not in seen:
            line = self.events.readline()
            if not line:  # the helper died: nothing more will come
                for other in self.seen.values():
                    other.add("done")
                break
            name, event, *rest = line.rstrip("\n").split(" ", 2)
            self.seen.setdefault(name, set()).add(event)
            if event == "failed" and rest and rest[0] not in ("", "{}"):
                self.errors[name] = json.loads(rest[0])
        return phase in seen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # idle, or working for nobody: the cache's writes are atomic
        # reaped in the background: the kernel takes a while to free a TensorFlow-sized process
        threading.Thread(target=self.proc.wait, daemon=True).start()
        for stream in (self.proc.stdin, self.events, self.log):
            try:
                stream.close()
            except (OSError, AttributeError):  # a pipe to a killed process
                pass


_HELPER: _Helper | None = None
_JOBS = itertools.count(1)
_DIED = False  # a helper died in this process: the rest of the session works in-process


def helper_wanted(settings: Any) -> bool:
    """Use the helper for this deployment?  Not when TensorFlow is imported here already (nor on Windows,
    where the event pipe cannot be handed to the child)."""
    return bool(settings.tf_helper) and "tensorflow" not in sys.modules and not _DIED and os.name == "posix"


def submit(settings: Any, root: Path, rootdir: Path | None) -> str | None:
    """Queue the TensorFlow work of a deployment; None if the helper cannot start (or died before)."""
    global _HELPER, _DIED
    if _HELPER is not None and _HELPER.proc.poll() is not None:
        close()
        _DIED = True
    if _DIED:
        return None
    try:
        if _HELPER is None:
            _HELPER = _Helper()
        return _HELPER.submit(settings, root, rootdir)
    except (OSError, ValueError, pickle.PicklingError, AttributeError, TypeError):  # e.g. an unpicklable setting
        return None


def wait(job: str | None, phase: str) -> bool:
    if job is None or _HELPER is None or job not in _HELPER.seen:
        return False
    try:
        return _HELPER.wait(job, phase)
    except (OSError, ValueError):
        return False


def error(job: str | None) -> CvdnnError | None:
    """The conversion error ``job`` ended with, as the pytest process would have raised it (or None)."""
    found = _HELPER.errors.get(job) if _HELPER is not None and job is not None else None
    if not found:
        return None
    return CvdnnError(found["message"], fix=found.get("fix"), details=found.get("details"), node=found.get("node"))


def close() -> None:
    """End the helper (the session is over: the next one may start a helper again)."""
    global _HELPER, _DIED
    if _HELPER is not None:
        _HELPER.close()
        _HELPER = None
    _DIED = False
