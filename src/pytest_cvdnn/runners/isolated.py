"""cv2.dnn in a child process: another OpenCV version (a target), or protection from crashes.

The child gets files in and writes files out: the ONNX path, ``.npy`` inputs and a JSON
request naming the inputs of each forward; it answers with ``.npy`` outputs, a marker per
finished forward and a JSON file.  A crash (signal) of OpenCV in the child fails one check
with a clear message instead of killing the pytest session, and the forwards finished before
the crash still count.  :class:`ChildRun` starts the child and collects it later, so the
session goes on meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..scratch import prefix
from ..errors import CvdnnError

__all__ = ["Target", "LOCAL", "ChildRun", "ReplayedRun", "forward_isolated", "child_call", "RemoteCv2Runner", "ChildError"]

_CHILD = r"""
import json, os, sys, threading, time, traceback
folder = sys.argv[1]
owner = os.getppid()


def _orphaned():  # the session that started this child was killed: stop (its folder is swept by the next one)
    while os.getppid() == owner:
        time.sleep(0.5)
    os._exit(3)


threading.Thread(target=_orphaned, daemon=True).start()
req = json.load(open(folder + "/request.json"))
resp = {"ok": False}
try:
    import numpy as np, cv2
    resp["opencv"] = cv2.__version__
    open(folder + "/opencv", "w").write(cv2.__version__)  # (said even if the import below crashes the process)
    resp["numpy"] = np.__version__
    from pytest_cvdnn.runners.cv2dnn import Cv2DnnRunner
    runner = Cv2DnnRunner(req["onnx"], req["input_names"], req["output_names"], req["engine"], req["device"])
    resp["stage"] = "forward"
    open(folder + "/loaded", "w").close()  # (a crash after this is the forward's, before it the import's)
    for r, names in enumerate(req["runs"]):
        feeds = [np.load(f"{folder}/{name}") for name in names]
        outs = runner.forward(feeds, partial=True) if req.get("partial") else runner.infer(feeds)
        for k, out in enumerate(outs):  # (a tensor cv2.dnn gives no value for: an empty array, listed as missing)
            np.save(f"{folder}/out{r}-{k}.npy", np.zeros(0, np.float32) if out is None else np.asarray(out))
            if out is None:
                resp.setdefault("missing", []).append(k)
        open(f"{folder}/done{r}", "w").write(str(len(outs)))
    resp["ok"] = True
except BaseException as exc:
    resp["error"] = str(exc)
    resp["type"] = type(exc).__name__
    resp.setdefault("stage", "load")
json.dump(resp, open(folder + "/response.json", "w"))
"""


@dataclass(frozen=True)
class Target:
    """Where cv2.dnn runs: this process (``local``), or a Python + path with another OpenCV."""

    name: str = "local"
    python: str = sys.executable
    env: dict[str, str] | None = field(default=None, compare=False, hash=False)

    @property
    def is_local(self) -> bool:
        return self.name == "local"


LOCAL = Target()


#: a line of OpenCV's own log ("[DEBUG:0@0.028] global onnx_importer.cpp:1001 handleNode DNN/ONNX: …")
_LOG_LINE = re.compile(r"\[\s*(DEBUG|INFO|VERBOSE|WARN|ERROR|FATAL)\s*:\d+@[\d.]+\]")
_NODE_LOGGED = re.compile(r"DNN/ONNX: processing node with .*?: \[([^\]]+)\]:\(([^)]*)\)")


def last_node_logged(log: str) -> tuple[str, str] | None:
    """(node, op type) of the last node OpenCV's ONNX importer logged it was processing (4.x logs each at DEBUG;
    5.x's importer does not), None where it logged none."""
    found = _NODE_LOGGED.findall(log)
    if not found:
        return None
    op, name = found[-1]
    return name.removeprefix("onnx_node!"), op


class ChildError(CvdnnError):
    """cv2.dnn failed in the child process; ``stage`` is "load" or "forward"."""

    def __init__(self, message: str, *, stage: str, opencv: str | None, raw: str, node: str | None = None) -> None:
        super().__init__(message, node=node)
        self.stage = stage
        self.opencv = opencv
        self.raw = raw


class ChildRun:
    """cv2.dnn of ``target`` in a child process, started now: it loads the ONNX, then runs one forward
    per entry of ``runs`` (none: load only).  :meth:`result` waits for it; :meth:`outputs` gives one
    forward's outputs or raises why there are none (a crash, an OpenCV error, a timeout)."""

    def __init__(self, target: Target, onnx_path: Path, engine: str, input_names: Sequence[str],
                 output_names: Sequence[str], runs: Sequence[Sequence[np.ndarray]] = (),
                 timeout: float = 600.0, store: Callable[[list[list[np.ndarray]]], None] | None = None,
                 partial: bool = False, device: str = "cpu") -> None:
        self.target, self.timeout, self.n_runs, self.store = target, timeout, len(runs), store
        self.folder = Path(tempfile.mkdtemp(prefix=prefix("child")))
        self._result: tuple[dict[str, Any], list[list[np.ndarray] | None]] | CvdnnError | None = None
        saved: dict[int, list[str]] = {}  # a feed list given twice (repeated forwards) is written once
        for r, feeds in enumerate(runs):
            if id(feeds) not in saved:
                saved[id(feeds)] = [f"in{r}-{i}.npy" for i in range(len(feeds))]
                for name, x in zip(saved[id(feeds)], feeds, strict=True):
                    np.save(self.folder / name, np.ascontiguousarray(x))
        request = {"onnx": str(onnx_path), "engine": engine, "device": device, "input_names": list(input_names),
                   "output_names": list(output_names), "runs": [saved[id(feeds)] for feeds in runs],
                   "partial": partial}
        (self.folder / "request.json").write_text(json.dumps(request))
        package_root = str(Path(__file__).resolve().parents[2])
        code = f"import sys; sys.path.append({package_root!r})\n" + _CHILD
        env = dict(target.env) if target.env is not None else dict(os.environ)
        # OpenCV 4.x's ONNX importer logs each node it processes at DEBUG (to stdout): after a crash, the last one
        # is where the importer died
        env["OPENCV_LOG_LEVEL"] = "DEBUG"
        try:  # output to files: a pipe nobody reads until the end could fill up and block the child
            with open(self.folder / "stderr.txt", "wb") as err, open(self.folder / "stdout.txt", "wb") as out:
                self.proc = subprocess.Popen([target.python, "-c", code, str(self.folder)], stdout=out,
                                             stderr=err, env=env)
        except OSError as exc:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise CvdnnError(f"cannot start the Python of target {target.name}: {target.python} ({exc})",
                             fix="check the interpreter path given with --cvdnn-target") from exc

    def result(self) -> tuple[dict[str, Any], list[list[np.ndarray] | None]]:
        """(the child's response, the outputs of each forward or None where it did not finish)."""
        if self._result is None:
            try:
                self._result = self._collect()
                resp, outs = self._result
                finished = [o for o in outs if o is not None]
                if self.store is not None and resp.get("ok") and len(finished) == len(outs):  # (every forward)
                    self.store(finished)
            except CvdnnError as exc:
                self._result = exc
            finally:
                self.close()
        if isinstance(self._result, CvdnnError):
            raise self._result
        return self._result

    def _collect(self) -> tuple[dict[str, Any], list[list[np.ndarray] | None]]:
        try:
            code = self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise CvdnnError(f"cv2.dnn ({self.target.name}) did not finish within {self.timeout:.0f} s") from exc
        stderr = (self.folder / "stderr.txt").read_text(errors="replace")
        outs: list[list[np.ndarray] | None] = []
        for r in range(self.n_runs):
            done = self.folder / f"done{r}"
            outs.append([np.load(self.folder / f"out{r}-{k}.npy") for k in range(int(done.read_text()))]
                        if done.is_file() else None)
        resp_path = self.folder / "response.json"
        if code < 0:
            stage = "forward" if (self.folder / "loaded").is_file() else "load"
            version = self.folder / "opencv"
            resp = {"ok": False, "stage": stage, "signal": signal.Signals(-code).name,
                    "opencv": version.read_text().strip() if version.is_file() else None,
                    "stderr": "\n".join(ln for ln in stderr.splitlines() if not _LOG_LINE.match(ln))[-2000:]}
            node = last_node_logged((self.folder / "stdout.txt").read_text(errors="replace") + stderr)
            if node:
                resp["last_node"] = node
        elif resp_path.is_file():
            resp = json.loads(resp_path.read_text())
        else:
            last = (stderr.strip().splitlines() or ["(no output)"])[-1]
            raise CvdnnError(f"the cv2.dnn child process of target {self.target.name} failed: {last}",
                             fix="check that the target's Python has cv2 and numpy")
        return resp, outs

    def outputs(self, run: int) -> list[np.ndarray]:
        resp, outs = self.result()
        out = outs[run] if run < len(outs) else None
        if out is not None:
            return out
        _raise_for(resp)
        raise CvdnnError("the cv2.dnn child process returned no outputs")

    def close(self) -> None:
        """Stop the child if it still runs and remove its folder (the session ends without collecting it)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


class ReplayedRun:
    """The outputs of an earlier :class:`ChildRun` of the same graph, inputs and OpenCV build (from the cache)."""

    def __init__(self, outs: list[list[np.ndarray]]) -> None:
        self._outs = outs

    def outputs(self, run: int) -> list[np.ndarray]:
        return self._outs[run]

    def close(self) -> None:
        pass


def child_call(target: Target, onnx_path: Path, engine: str, input_names: Sequence[str],
               output_names: Sequence[str], feeds: Sequence[np.ndarray] = (), repeat: int = 1,
               timeout: float = 600.0, partial: bool = False,
               device: str = "cpu") -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """Load (and forward ``feeds`` ``repeat`` times) in a child; returns (response, outputs per repeat).
    ``partial``: a tensor cv2.dnn gives no value for is an empty array listed in the response's "missing"
    (otherwise it fails the forward, naming the tensor)."""
    resp, outs = ChildRun(target, onnx_path, engine, input_names, output_names, [feeds] * repeat if feeds else [],
                          timeout, partial=partial, device=device).result()
    if resp.get("signal"):
        _raise_for(resp)
    return resp, [o for o in outs if o is not None] if resp.get("ok") else []


def _raise_for(resp: dict[str, Any]) -> None:
    """The ChildError of a response that is not ok: a crash (signal) or OpenCV's error."""
    if resp.get("ok"):
        return
    if resp.get("signal"):
        node = resp.get("last_node")
        raise ChildError(f"cv2.dnn crashed the process ({resp['signal']})"
                         + (f" at node {node[0]!r} (op {node[1]}), the last its importer reached" if node else ""),
                         stage=resp.get("stage", "forward"), opencv=resp.get("opencv"), raw=resp.get("stderr", ""),
                         node=node[0] if node else None)
    from .cv2dnn import opencv_error_line

    raw = resp.get("error", "")
    raise ChildError(opencv_error_line(Exception(raw)), stage=resp.get("stage", "load"),
                     opencv=resp.get("opencv"), raw=raw)


def forward_isolated(onnx_path: Path, engine: str, input_names: Sequence[str], output_names: Sequence[str],
                     feeds: Sequence[np.ndarray], target: Target = LOCAL, device: str = "cpu") -> list[np.ndarray]:
    resp, outs = child_call(target, onnx_path, engine, input_names, output_names, feeds, device=device)
    _raise_for(resp)
    return outs[0]


class RemoteCv2Runner:
    """The cv2.dnn runner of a target: every call is a fresh child process (load + forward)."""

    name = "cv2dnn"

    def __init__(self, onnx_path: Path, input_names: Sequence[str], output_names: Sequence[str],
                 engine: str, target: Target, device: str = "cpu") -> None:
        self.onnx_path = Path(onnx_path)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.engine, self.device = engine, device
        self.target = target
        resp, _ = child_call(target, self.onnx_path, engine, self.input_names, self.output_names, device=device)
        self.opencv = resp.get("opencv", "?")
        _raise_for(resp)

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return forward_isolated(self.onnx_path, self.engine, self.input_names, self.output_names, inputs,
                                self.target, self.device)

    def infer_repeat(self, inputs: Sequence[np.ndarray], repeat: int) -> list[list[np.ndarray]]:
        resp, outs = child_call(self.target, self.onnx_path, self.engine, self.input_names, self.output_names,
                                inputs, repeat=repeat, device=self.device)
        _raise_for(resp)
        return outs
