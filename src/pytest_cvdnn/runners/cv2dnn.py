"""The cv2.dnn runner: ``readNetFromONNX``, ``readNetFromTFLite`` or ``readNetFromTensorflow`` by file type
(engine selectable on OpenCV 5)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CvdnnError

__all__ = ["Cv2DnnRunner", "read_net", "opencv_version", "engine_flag", "opencv_error_line", "opencv_node"]

ENGINES = ("auto", "classic", "new")


def opencv_version() -> str:
    import cv2

    return str(cv2.__version__)


def opencv_build() -> str:
    """What decides cv2.dnn's numbers here: version, build information and thread count (a digest)."""
    import hashlib

    import cv2

    from . import thread_share

    info = f"{cv2.__version__}|{thread_share() or cv2.getNumThreads()}|{cv2.getBuildInformation()}"
    return hashlib.sha256(info.encode()).hexdigest()


def engine_flag(engine: str) -> int | None:
    """The ``cv2.dnn.ENGINE_*`` constant for ``engine``, or None where OpenCV has no engines (4.x)."""
    import cv2

    const = getattr(cv2.dnn, f"ENGINE_{engine.upper()}", None)
    if const is None and engine != "auto":
        raise CvdnnError(
            f"--cvdnn-engine={engine} needs OpenCV 5 (DNN engines); the installed OpenCV is {opencv_version()}",
            fix="drop --cvdnn-engine or use --cvdnn-engine=auto",
        )
    return None if const is None else int(const)


_NODE = re.compile(r"Node \[([\w.]+)@[^\]]*\]:\((?:onnx_node!)?([^)]*)\)\s*parse error:?(.*)", re.S)
_PREFIX = re.compile(r"OpenCV\([^)]*\)\s*\S+:\d+: error: \([^)]*\)\s*(in function '[^']*')?\s*")


def _clean(text: str) -> str:
    return " ".join(_PREFIX.sub("", text).replace(">", " ").split())[:300]


def opencv_node(exc: BaseException) -> tuple[str, str] | None:
    """(node name, op type) named in an OpenCV import error, if any."""
    m = _NODE.search(str(exc))
    return (m.group(2), m.group(1)) if m else None


def opencv_error_line(exc: BaseException) -> str:
    """The part of OpenCV's multi-line error text that matters (node, op type, reason)."""
    text = str(exc).strip()
    m = _NODE.search(text)
    if m:
        op, node, rest = m.group(1), m.group(2), _clean(m.group(3))
        return f"node {node!r} (op {op}) cannot be imported: {rest or 'parse error'}"
    cleaned = _clean(text)
    return cleaned or repr(exc)


#: cv2.dnn reader of each artifact type, and the OpenCV release that brought it
READERS = {".onnx": ("readNetFromONNX", "3.4"), ".tflite": ("readNetFromTFLite", "4.8"),
           ".pb": ("readNetFromTensorflow", "3.3")}


def read_net(path: Path, engine: str = "auto") -> Any:
    """A cv2.dnn.Net for an ONNX, TFLite or frozen TensorFlow graph (chosen by the file's suffix)."""
    import cv2

    from . import thread_share

    threads = thread_share()
    if threads:
        cv2.setNumThreads(threads)
    reader, since = READERS.get(Path(path).suffix.lower(), READERS[".onnx"])
    read = getattr(cv2.dnn, reader, None)
    if read is None:
        raise cv2.error(f"OpenCV {opencv_version()} has no cv2.dnn.{reader} (it arrived in OpenCV {since}): "
                        f"this OpenCV cannot read {Path(path).name}")
    flag = engine_flag(engine)
    if flag is None:
        net = read(str(path))
    elif reader == "readNetFromTensorflow":
        net = read(str(path), "", flag)
    else:
        net = read(str(path), flag)
    if net.empty():
        raise cv2.error(f"{reader} returned an empty network")
    return net


class Cv2DnnRunner:
    name = "cv2dnn"

    def __init__(self, onnx_path: Path, input_names: Sequence[str], output_names: Sequence[str], engine: str = "auto") -> None:
        self.onnx_path = Path(onnx_path)
        self.engine = engine
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.net = read_net(self.onnx_path, engine)

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        net = self.net
        if len(inputs) == 1:
            net.setInput(np.ascontiguousarray(inputs[0]))
        else:
            for name, x in zip(self.input_names, inputs):
                net.setInput(np.ascontiguousarray(x), name)
        # OpenCV 5's new engine wants all outputs requested at once; pick ours by name after.
        known = list(net.getUnconnectedOutLayersNames())
        if not self.output_names:  # TFLite / frozen graphs: every output, in OpenCV's order
            return [np.array(o, copy=True) for o in net.forward(known)]
        if set(self.output_names) <= set(known):
            by_name = dict(zip(known, net.forward(known)))
            outs = [by_name[n] for n in self.output_names]
        else:  # classic engine: outputs are named after layers, ask for the graph's names
            outs = list(net.forward(self.output_names))
        return [np.array(o, copy=True) for o in outs]
