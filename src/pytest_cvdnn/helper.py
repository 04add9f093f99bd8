"""The TensorFlow helper: a server process that does a cold deployment's TensorFlow work.

On a cold cache the Keras side of a deployment (load, metadata, tf2onnx conversion, Keras
reference outputs and preprocessing tensors) runs in a helper process, which writes it into
the cache; the pytest process then reads it like a warm run.  So the pytest process does not
import TensorFlow at all: it stays small, it does not pay TensorFlow's teardown at exit, and it
runs the onnxruntime and cv2.dnn checks while the helper still computes the Keras references.

The helper is a server: it imports TensorFlow once and forks one job process per connection.
A session without xdist starts it when the first model needs it and is its only client.
Under ``pytest -n N`` the controller starts it at configure time, when a configured model's
conversion is not cached, and every worker connects to it: TensorFlow is imported once for the
session instead of once per worker, and while the workers start up (four processes each
importing TensorFlow would contend for the same cores).

The helper is an accelerator, not a second implementation: a job process runs the deployment's
own stages (:meth:`Deployment.prepare`), and whatever it did not finish — an error, a crash — is
simply done again in the pytest process, which reports it exactly as without the helper.
It is used when TensorFlow is not imported yet in the pytest process (a project whose conftest
imports Keras keeps everything in-process) and can be turned off with ``--cvdnn-tf-in-process``.
POSIX only (it forks, and passes a listening socket to the server).
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .scratch import prefix
from .errors import CvdnnError

if TYPE_CHECKING:
    from .convert import Conversion
    from .core import Deployment

__all__ = ["helper_wanted", "start_server", "use_server", "server_address", "submit", "wait", "error", "crashed_loading",
           "close", "pending", "queue", "queued", "made_elsewhere", "by_helper"]

# The server: imports TensorFlow (what every job needs) once, then forks a job process per connection.
# It ends when its owner closes its stdin (or dies), and takes its job processes (its process group) with it.
_SERVER = r"""
import gc, os, selectors, signal, socket, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
listener = socket.socket(fileno=int(sys.argv[1]))
import dataclasses, json, pickle
sys.modules.setdefault("IPython", None)  # Keras imports it (0.3 s) if installed, for notebooks: none here
import tensorflow, keras, tf2onnx.convert  # noqa: F401 - imported once, shared by the job processes
from pytest_cvdnn.cache import Cache
from pytest_cvdnn.deployment import build_deployment
from pytest_cvdnn.errors import CvdnnError


def serve(conn):
    out = conn.makefile("w")
    import faulthandler
    faulthandler.enable(file=conn.fileno())  # a crash (SIGSEGV, SIGABRT, …) says so on the events stream

    def tell(job, event):
        out.write(f"{job} {event}\n")
        out.flush()

    for line in conn.makefile("r"):
        job, payload = line.split(" ", 1)
        reached = []

        def notify(phase):
            reached.append(phase)
            tell(job, phase)

        tell(job, "started")  # (the job dies before "loaded": the model's own code crashed the process)
        keras.backend.clear_session()  # a fresh naming scope per job: a factory's layers keep their own names
        try:
            settings, root, rootdir, path = pickle.loads(bytes.fromhex(payload))
            sys.path.extend(p for p in path if p not in sys.path)  # the client's (factories' modules)
            settings = dataclasses.replace(settings, tf_helper=False)
            build_deployment(settings, Cache(root), rootdir).precompute(notify)
        except BaseException as exc:
            error = {}
            # the model loaded but its conversion failed: the client would fail the same way, so it gets
            # the error instead of converting again; anything else it does again itself and reports
            if reached == ["loaded"] and type(exc) is CvdnnError:
                error = {"message": exc.message, "fix": exc.fix, "details": exc.details, "node": exc.node}
            tell(job, f"failed {json.dumps(error)}")
        tell(job, "done")


gc.collect()
gc.freeze()  # TensorFlow's objects stay out of the job processes' collections (and their pages shared)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the job processes
watch = selectors.DefaultSelector()
watch.register(listener, selectors.EVENT_READ)
watch.register(sys.stdin, selectors.EVENT_READ)  # readable only at EOF: the owner is gone
while True:
    for key, _ in watch.select():
        if key.fileobj is sys.stdin:  # the owner is gone (ended or killed): so are its jobs and their folder
            import shutil
            shutil.rmtree(os.path.dirname(listener.getsockname()), ignore_errors=True)
            os.killpg(0, signal.SIGKILL)  # (its own session: the job processes it forked, and itself)
        conn, _ = listener.accept()
        if os.fork() == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            listener.close()
            try:
                serve(conn)
            finally:
                os._exit(0)  # skip TensorFlow's teardown: everything is in the cache
        conn.close()
"""


class _Server:
    """The helper server process, started by this process (which ends it)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=prefix("tf")))
        if len(str(self.folder)) > 80:  # a socket path has ~100 bytes (a long TMPDIR)
            shutil.rmtree(self.folder)
            self.folder = Path(tempfile.mkdtemp(prefix=prefix("tf"), dir="/tmp"))
        self.address = str(self.folder / "tf.sock")
        self.log = tempfile.TemporaryFile()  # the server's stderr (TensorFlow's chatter), read by nobody
        if sys.platform == "darwin":  # forking after Apple frameworks are loaded aborts the child without this
            env = {**(env if env is not None else os.environ), "OBJC_DISABLE_INITIALIZE_FORK_SAFETY": "YES"}
        # bound here, so that clients can connect (and queue their jobs) while the server imports TensorFlow
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.address)
            listener.listen(64)
            code = f"import sys; sys.path.append({str(Path(__file__).resolve().parents[1])!r})\n" + _SERVER
            self.proc = subprocess.Popen([sys.executable, "-c", code, str(listener.fileno())], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=self.log, pass_fds=(listener.fileno(),),
                                         env=env, start_new_session=True)  # its own process group: the job processes too
        except BaseException:
            self.log.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        finally:
            listener.close()

    def close(self) -> None:
        try:  # the server and its job processes: idle, or working for nobody (the cache's writes are atomic)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        # reaped in the background: the kernel takes a while to free a TensorFlow-sized process
        threading.Thread(target=self.proc.wait, daemon=True).start()
        for stream in (self.proc.stdin, self.log):
            try:
                if stream is not None:
                    stream.close()
            except (OSError, AttributeError):  # a pipe to a killed process
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


class _Connection:
    """This process's job process in the server: jobs go in, events (job phase) come back."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address)
        self.jobs = self.sock.makefile("w")
        self.events = self.sock.makefile("r")
        self.seen: dict[str, set[str]] = {}
        self.errors: dict[str, dict[str, Any]] = {}
        self.crash: list[str] = []  # Python's fault handler's report of a crash of the job process
        self.dead = False

    def submit(self, settings: Any, root: Path, rootdir: Path | None) -> str:
        job = f"j{next(_JOBS)}"  # unique in the process: a job of a helper that died is not confused with a new one
        payload = pickle.dumps((settings, root, rootdir, list(sys.path))).hex()
        self.seen[job] = set()
        self.jobs.write(f"{job} {payload}\n")
        self.jobs.flush()
        return job

    def wait(self, job: str, phase: str) -> bool:
        """Block until ``job`` reached ``phase`` (True) or ended without reaching it, or the helper is gone."""
        seen = self.seen[job]
        while phase not in seen and "done" not in seen:
            line = self.events.readline()
            if not line:  # the job process (or the server, before it forked it) died: nothing more will come
                self.dead = True
                for other in self.seen.values():
                    other.add("done")
                break
            name, event, *rest = (*line.rstrip("\n").split(" ", 2), "", "")[:3]
            if not re.fullmatch(r"j\d+", name):  # what the job process's fault handler wrote as it crashed
                self.crash.append(line.strip())
                continue
            self.seen.setdefault(name, set()).add(event)
            if event == "failed" and rest and rest[0] not in ("", "{}"):
                self.errors[name] = json.loads(rest[0])
        return phase in seen

    def close(self) -> None:
        for stream in (self.jobs, self.events, self.sock):
            try:
                stream.close()
            except OSError:  # a connection to a killed process
                pass


_SERVER_PROC: _Server | None = None  # a server this process started (and ends at close)
_ADDRESS: str | None = None  # a server the xdist controller started for this worker
_CONN: _Connection | None = None
_JOBS = itertools.count(1)
_DIED = False  # the helper died in this session: the rest of the session works in-process


def helper_wanted(settings: Any) -> bool:
    """Use the helper for this deployment?  Not when TensorFlow is imported here already (nor on Windows)."""
    return bool(settings.tf_helper) and "tensorflow" not in sys.modules and not _DIED and os.name == "posix"


def start_server(env: dict[str, str] | None = None) -> str:
    """Start this session's helper server (once), with the environment ``env`` (default: this one); its address."""
    global _SERVER_PROC
    if _SERVER_PROC is None:
        _SERVER_PROC = _Server(env)
    return _SERVER_PROC.address


def use_server(address: str | None) -> None:
    """Send this process's jobs to the server at ``address`` (the xdist controller's) instead of starting one."""
    global _ADDRESS
    _ADDRESS = address


def server_address() -> str | None:
    """The address of the server this process started, if it did."""
    return _SERVER_PROC.address if _SERVER_PROC is not None else None


def submit(settings: Any, root: Path, rootdir: Path | None) -> str | None:
    """Queue the TensorFlow work of a deployment; None if the helper cannot start (or died before)."""
    global _CONN, _DIED
    if _CONN is not None and _CONN.dead:
        _DIED = True
    if _DIED:
        return None
    try:
        if _CONN is None:
            _CONN = _Connection(_ADDRESS or start_server())
        return _CONN.submit(settings, root, rootdir)
    except OSError:  # no server to connect to, or the job process is gone
        _DIED = True
        return None
    except (ValueError, pickle.PicklingError, AttributeError, TypeError):  # e.g. an unpicklable setting
        return None


def wait(job: str | None, phase: str) -> bool:
    if job is None or _CONN is None or job not in _CONN.seen:
        return False
    try:
        return _CONN.wait(job, phase)
    except (OSError, ValueError):
        _CONN.dead = True
        return False


def crashed_loading(job: str | None) -> str | None:
    """How the helper crashed while ``job`` was loading its model (started, never loaded), as Python's fault
    handler said it ("Fatal Python error: Segmentation fault"); None if it did not.  For a factory that is the
    user's code crashing the process; a helper killed from outside (SIGKILL, no report) is not a crash."""
    if job is None or _CONN is None or not _CONN.dead or job not in _CONN.seen:
        return None
    seen = _CONN.seen[job]
    fatal = next((line for line in _CONN.crash if line.startswith("Fatal Python error")), None)
    return fatal if fatal and "started" in seen and "loaded" not in seen and "failed" not in seen else None


def error(job: str | None) -> CvdnnError | None:
    """The conversion error ``job`` ended with, as the pytest process would have raised it (or None)."""
    found = _CONN.errors.get(job) if _CONN is not None and job is not None else None
    if not found:
        return None
    return CvdnnError(found["message"], fix=found.get("fix"), details=found.get("details"), node=found.get("node"))


def close() -> None:
    """End this process's use of the helper (the session is over: the next one may start one again)."""
    global _CONN, _SERVER_PROC, _DIED
    if _CONN is not None:
        _CONN.close()
        _CONN = None
    if _SERVER_PROC is not None:
        _SERVER_PROC.close()
        _SERVER_PROC = None
    _DIED = False


# -- a deployment's queue: what Deployment.prepare() starts and its stages wait for -------------------------------
def _job_key(dep: Deployment) -> tuple[str, Any]:
    """Where ``dep.memo`` keeps the deployment's helper job (None: the helper could not take it)."""
    return ("tf-helper", dep.settings.key())


def pending(dep: Deployment) -> bool:
    """Would a run need TensorFlow for this deployment (its conversion is not cached)?  Reads the cache only: no
    model is loaded and no helper started (the xdist controller asks before its workers start)."""
    try:
        if dep.settings.bundle is not None or dep.settings.onnx or not dep.has_keras:
            return False
        if dep.cache.get_json("failed", f"{dep.meta_failure_key}.json") is not None:
            return False  # a remembered failure: nothing to convert
        if dep.cache.get_json("keras", f"{dep.model_hash[:40]}.json") is None:
            return True
        return not dep.converted_entry().is_file()
    except Exception:  # noqa: BLE001 - only a hint (an unreadable model: its checks will say so)
        return False


def queued(dep: Deployment) -> bool:
    """Has the helper this deployment's job (queued in this session)?"""
    return dep.memo.get(_job_key(dep)) is not None


def queue(dep: Deployment) -> bool:
    """Have the helper process do this deployment's TensorFlow work (queued once; the plugin queues a session's
    cold models in the order their checks run, so the helper converts the next model while the pytest process
    checks this one).  False if the helper is not used for it."""
    key = _job_key(dep)
    if key not in dep.memo:  # (once queued, it is waited for, even if TensorFlow got imported here since)
        if not dep.has_keras or not helper_wanted(dep.settings):
            return False
        dep.memo[key] = submit(dep.settings, dep.cache.root, dep.rootdir)
        if dep.memo[key] is not None:
            _import_runners()  # while the helper works: what the checks will need next
    return dep.memo[key] is not None


def made_elsewhere(dep: Deployment, phase: str, present: Callable[[], bool]) -> bool:
    """Wait until the helper's job of ``dep`` (if one was queued: this starts none) reached ``phase``; True if
    it made what ``present`` looks for.  Its conversion error is raised here (it would fail here the same way),
    and a factory that crashed the helper is not called again in the pytest process."""
    key = _job_key(dep)
    if present():
        return key in dep.memo  # made by the helper if it was asked to in this session
    job = dep.memo.get(key)
    if job is None:
        return False
    wait(job, phase)
    if present():
        return True
    failure = error(job)
    if failure is not None:
        raise failure
    crash = crashed_loading(job) if dep.source.kind == "factory" else None
    if crash:
        module, name = dep.settings.model.split(":")[0], dep.settings.model.split(":")[-1]
        raise CvdnnError(
            f"the model factory {dep.settings.model!r} crashed the TensorFlow helper process that called it "
            f"({crash.removeprefix('Fatal Python error: ')}, in native code); it is not run again in the pytest "
            "process",
            fix=f"call the factory alone to see the crash (python -c \"import {module} as m; m.{name}()\")")
    return False


def by_helper(conv: Conversion, elsewhere: bool) -> Conversion:
    """A conversion the helper made in this session is reported as converted, not as a cache hit."""
    if not elsewhere:
        return conv
    return replace(conv, cached=False, seconds=float(conv.meta.get("convert_seconds", 0.0)),
                   where="in the TensorFlow helper process")


def _import_runners() -> None:
    """Import cv2, onnxruntime and onnx (once; they are imported lazily, so a plugin load stays light)."""
    for name in ("cv2", "onnxruntime", "onnx"):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - a missing or broken one is reported by the check that needs it
            pass
