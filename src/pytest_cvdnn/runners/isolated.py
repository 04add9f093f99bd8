"""cv2.dnn in a child process: another OpenCV version (a target), or protection from crashes.

The child gets files in and writes files out: the ONNX path, ``.npy`` inputs and a JSON
request; it answers with a JSON file and ``.npy`` outputs.  A crash (signal) of OpenCV in
the child fails one check with a clear message instead of killing the pytest session.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CvdnnError

__all__ = ["Target", "LOCAL", "forward_isolated", "child_call", "RemoteCv2Runner", "ChildError"]

_CHILD = r"""
import json, sys, traceback
folder = sys.argv[1]
req = json.load(open(folder + "/request.json"))
resp = {"ok": False}
try:
    import numpy as np, cv2
    resp["opencv"] = cv2.__version__
    resp["numpy"] = np.__version__
    from pytest_cvdnn.runners.cv2dnn import Cv2DnnRunner
    runner = Cv2DnnRunner(req["onnx"], req["input_names"], req["output_names"], req["engine"])
    resp["stage"] = "forward"
    for r in range(req["repeat"]):
        feeds = [np.load(f"{folder}/in{i}.npy") for i in range(req["n_inputs"])]
        if not feeds:
            break
        outs = runner.infer(feeds)
        resp["n_outputs"] = len(outs)
        for k, out in enumerate(outs):
            np.save(f"{folder}/out{r}-{k}.npy", out)
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


class ChildError(CvdnnError):
    """cv2.dnn failed in the child process; ``stage`` is "load" or "forward"."""

    def __init__(self, message: str, *, stage: str, opencv: str | None, raw: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.opencv = opencv
        self.raw = raw


def child_call(target: Target, onnx_path: Path, engine: str, input_names: Sequence[str],
               output_names: Sequence[str], feeds: Sequence[np.ndarray] = (), repeat: int = 1,
               timeout: float = 600.0) -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """Load (and forward ``feeds`` ``repeat`` times) in a child; returns (response, outputs per repeat)."""
    package_root = str(Path(__file__).resolve().parents[2])
    with tempfile.TemporaryDirectory(prefix="cvdnn-child-") as tmp:
        for i, x in enumerate(feeds):
            np.save(f"{tmp}/in{i}.npy", np.ascontiguousarray(x))
        request = {"onnx": str(onnx_path), "engine": engine, "input_names": list(input_names),
                   "output_names": list(output_names), "n_inputs": len(feeds), "repeat": repeat}
        Path(tmp, "request.json").write_text(json.dumps(request))
        env = dict(target.env) if target.env is not None else None
        code = f"import sys; sys.path.append({package_root!r})\n" + _CHILD
        try:
            proc = subprocess.run([target.python, "-c", code, tmp], capture_output=True, text=True,
                                  timeout=timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            raise CvdnnError(f"cv2.dnn ({target.name}) did not finish within {timeout:.0f} s") from exc
        except OSError as exc:
            raise CvdnnError(f"cannot start the Python of target {target.name}: {target.python} ({exc})",
                             fix="check the interpreter path given with --cvdnn-target") from exc
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            raise ChildError(f"cv2.dnn crashed the process ({name})", stage="forward", opencv=None,
                             raw=proc.stderr[-2000:])
        resp_path = Path(tmp, "response.json")
        if not resp_path.is_file():
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise CvdnnError(f"the cv2.dnn child process of target {target.name} failed: {last}",
                             fix="check that the target's Python has cv2 and numpy")
        resp = json.loads(resp_path.read_text())
        outs = []
        if resp.get("ok") and feeds:
            for r in range(repeat):
                outs.append([np.load(f"{tmp}/out{r}-{k}.npy") for k in range(resp.get("n_outputs", len(output_names)))])
        return resp, outs


def _raise_for(resp: dict[str, Any]) -> None:
    if resp.get("ok"):
        return
    from .cv2dnn import opencv_error_line

    raw = resp.get("error", "")
    raise ChildError(opencv_error_line(Exception(raw)), stage=resp.get("stage", "load"),
                     opencv=resp.get("opencv"), raw=raw)


def forward_isolated(onnx_path: Path, engine: str, input_names: Sequence[str], output_names: Sequence[str],
                     feeds: Sequence[np.ndarray], target: Target = LOCAL) -> list[np.ndarray]:
    resp, outs = child_call(target, onnx_path, engine, input_names, output_names, feeds)
    _raise_for(resp)
    return outs[0]


class RemoteCv2Runner:
    """The cv2.dnn runner of a target: every call is a fresh child process (load + forward)."""

    name = "cv2dnn"

    def __init__(self, onnx_path: Path, input_names: Sequence[str], output_names: Sequence[str],
                 engine: str, target: Target) -> None:
        self.onnx_path = Path(onnx_path)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.engine = engine
        self.target = target
        resp, _ = child_call(target, self.onnx_path, engine, self.input_names, self.output_names)
        self.opencv = resp.get("opencv", "?")
        _raise_for(resp)

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return forward_isolated(self.onnx_path, self.engine, self.input_names, self.output_names, inputs,
                                self.target)

    def infer_repeat(self, inputs: Sequence[np.ndarray], repeat: int) -> list[list[np.ndarray]]:
        resp, outs = child_call(self.target, self.onnx_path, self.engine, self.input_names, self.output_names,
                                inputs, repeat=repeat)
        _raise_for(resp)
        return outs
