"""The TFLite interpreter as the reference of a ``.tflite`` source (LiteRT's ``ai_edge_litert`` when installed,
else ``tf.lite.Interpreter``).  Imports TensorFlow/LiteRT on first use only.

Every runner of the plugin takes and returns float tensors.  A quantized model (int8/uint8 inputs and outputs)
is fed the float inputs quantized with the model's own parameters, ``q = clip(round(x / scale) + zero_point)``,
and its outputs are dequantized, ``(q - zero_point) * scale``, before they are compared.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import CvdnnError
from . import RunnerSpec
from .cached import stacked

if TYPE_CHECKING:
    from ..core import Deployment

__all__ = ["TFLiteRunner", "tflite_metadata", "quantize", "dequantize", "interpreter_name", "SPEC"]


def _interpreter_class() -> tuple[Any, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "LiteRT (ai_edge_litert)"
    except ImportError:
        pass
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise CvdnnError(
            "a .tflite model needs the TFLite interpreter as its reference, and neither ai-edge-litert nor "
            "tensorflow is installed",
            fix="pip install ai-edge-litert (or tensorflow)") from exc
    return tf.lite.Interpreter, f"tf.lite.Interpreter (TensorFlow {tf.__version__})"


def interpreter_name() -> str:
    return _interpreter_class()[1]


def _open(path: Path) -> Any:
    cls, _ = _interpreter_class()
    try:
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice is not the user's business
            warnings.simplefilter("ignore")
            interp = cls(model_path=str(path))
        interp.allocate_tensors()
    except Exception as exc:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError for bad files
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CvdnnError(f"the TFLite interpreter cannot load {path}: {first}; the file is truncated, corrupt or "
                         "not a TFLite model",
                         fix="re-export it with tf.lite.TFLiteConverter, or pass the right file") from exc
    return interp


def _details(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for d in items:
        scale, zero = d.get("quantization", (0.0, 0))
        out.append({"name": str(d["name"]), "index": int(d["index"]), "shape": [int(v) for v in d["shape"]],
                    "dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero)})
    return out


def tflite_metadata(path: Path) -> dict[str, Any]:
    """Inputs and outputs of a TFLite model (name, shape, dtype, quantization), as JSON (cached per file hash)."""
    interp = _open(path)
    return {"inputs": _details(interp.get_input_details()), "outputs": _details(interp.get_output_details()),
            "interpreter": interpreter_name()}


def quantize(x: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """A float tensor as the model's input dtype: quantized with its scale and zero point (int8/uint8)."""
    dtype = np.dtype(info["dtype"])
    if dtype.kind == "f":
        return np.asarray(x, dtype=dtype)
    if not info["scale"]:
        return np.asarray(np.rint(x), dtype=dtype)
    limits = np.iinfo(dtype)
    q = np.rint(np.asarray(x, dtype=np.float64) / info["scale"]) + info["zero_point"]
    return np.asarray(np.clip(q, limits.min, limits.max), dtype=dtype)


def dequantize(q: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """A model output as float32: dequantized with its scale and zero point when it is an integer tensor."""
    if np.asarray(q).dtype.kind == "f":
        return np.asarray(q, dtype=np.float32)
    if not info["scale"]:
        return np.asarray(q, dtype=np.float32)
    return np.asarray((np.asarray(q, dtype=np.float64) - info["zero_point"]) * info["scale"], dtype=np.float32)


class TFLiteRunner:
    """Runs a ``.tflite`` file one sample at a time (TFLite models are exported with batch 1)."""

    name = "tflite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.interp = _open(self.path)
        self.meta = {"inputs": _details(self.interp.get_input_details()),
                     "outputs": _details(self.interp.get_output_details())}

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Float inputs (NHWC, any batch) → float outputs, one invoke per sample."""
        rows = []
        for i in range(len(inputs[0])):
            for info, x in zip(self.meta["inputs"], inputs, strict=True):
                self.interp.set_tensor(info["index"], quantize(x[i : i + 1], info).reshape(info["shape"]))
            self.interp.invoke()
            rows.append([dequantize(self.interp.get_tensor(o["index"]), o) for o in self.meta["outputs"]])
        return stacked(rows)


def _for_deployment(dep: Deployment, logits: bool) -> TFLiteRunner:
    path = dep.source.path
    assert path is not None
    return dep.stage("tflite_runner", lambda: TFLiteRunner(path))


def _version(dep: Deployment) -> str:
    """Which interpreter runs the file, from the installed packages (importing it would import TensorFlow)."""
    from importlib import metadata
    from importlib.util import find_spec

    from ..convert import tool_versions

    if find_spec("ai_edge_litert") is not None:
        return f"LiteRT {metadata.version('ai-edge-litert')}"
    return f"tf.lite.Interpreter (TensorFlow {tool_versions()['tensorflow']})"


SPEC = RunnerSpec(
    "tflite", factory=_for_deployment,
    unavailable=lambda dep: "" if dep.kind == "tflite" else f"{dep.label} is not a TFLite model: the TFLite "
    "interpreter is the reference of .tflite sources only",
    key=lambda dep, logits: dep.model_hash, version=_version,
    kinds=frozenset({"tflite"}), needs=("tflite_meta",), logits="none", layout="model", helper_phase="done",
    nearness=2, compared_with={"cv2dnn": "OpenCV's TFLite importer computes the model differently from the TFLite interpreter"},
)
