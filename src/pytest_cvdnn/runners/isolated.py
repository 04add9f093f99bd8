"""Run a cv2.dnn forward in a child process, so that a crash in OpenCV fails one check, not the session.

Some OpenCV builds abort or segfault on inputs they do not support (e.g. a batch
larger than 1 on OpenCV 5's classic engine for some graphs).  The child reads the
ONNX and ``.npy`` inputs from a temporary folder and writes ``.npy`` outputs back.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import CvdnnError

__all__ = ["forward_isolated"]

_CHILD = r"""
import sys, json, numpy as np
sys.path[:0] = json.loads(sys.argv[3])
from pytest_cvdnn.runners.cv2dnn import Cv2DnnRunner
folder = sys.argv[1]
spec = json.load(open(folder + "/spec.json"))
feeds = [np.load(f"{folder}/in{i}.npy") for i in range(spec["n_inputs"])]
runner = Cv2DnnRunner(sys.argv[2], spec["input_names"], spec["output_names"], spec["engine"])
for i, out in enumerate(runner.infer(feeds)):
    np.save(f"{folder}/out{i}.npy", out)
"""


def forward_isolated(onnx_path: Path, engine: str, input_names: Sequence[str], output_names: Sequence[str],
                     feeds: Sequence[np.ndarray], timeout: float = 600.0) -> list[np.ndarray]:
    import json

    from .cv2dnn import opencv_error_line

    with tempfile.TemporaryDirectory(prefix="cvdnn-fwd-") as tmp:
        for i, x in enumerate(feeds):
            np.save(f"{tmp}/in{i}.npy", x)
        spec = {"n_inputs": len(feeds), "input_names": list(input_names), "output_names": list(output_names),
                "engine": engine}
        Path(tmp, "spec.json").write_text(json.dumps(spec))
        package_root = str(Path(__file__).resolve().parents[2])
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, tmp, str(onnx_path), json.dumps([package_root])],
                capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise CvdnnError(f"cv2.dnn forward did not finish within {timeout:.0f} s") from exc
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            raise CvdnnError(f"cv2.dnn crashed the process ({name}) during forward")
        if proc.returncode != 0:
            raise CvdnnError(f"cv2.dnn forward failed: {opencv_error_line(Exception(proc.stderr))}")
        return [np.load(f"{tmp}/out{i}.npy") for i in range(len(output_names))]
