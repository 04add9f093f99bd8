"""Reduced-precision deployments the plugin makes on request (``--cvdnn-quantize=fp16,int8``): the model's float
ONNX with its weights stored as float16 (cast back to float32 where they are read: the file halves, the arithmetic
stays float32), or quantized INT8 by onnxruntime's static quantization (QDQ, per-channel int8 weights, uint8
activations) calibrated on the samples the checks feed.  Each is cached by content hash like a conversion and checked
by the ONNX items of its own (``int8:load``, ``int8:parity[keras-cv2dnn@opencv-4.12.0]`` …), which judge a
reduced-precision graph at task level (parity.judged_tolerance).  Needs onnx and onnxruntime, never TensorFlow.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .cache import sha256_bytes
from .core import Deployment
from .errors import CvdnnError
from .scratch import prefix

__all__ = ["PRECISIONS", "to_fp16_weights", "to_int8_qdq", "QuantizedDeployment", "describe"]

#: what --cvdnn-quantize makes
PRECISIONS = ("fp16", "int8")

#: the ops whose float32 weights (inputs after the first) are stored as float16
_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def to_fp16_weights(source: Path, out: Path) -> dict[str, Any]:
    """``source`` with the float32 weights of its Conv/ConvTranspose/Gemm/MatMul nodes stored as float16, each
    read through a Cast back to float32 (the inputs, outputs and arithmetic stay float32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {n for node in graph.node if node.op_type in _WEIGHTED for n in node.input[1:] if n}
    casts, kept, converted, saved = [], [], 0, 0
    for init in graph.initializer:
        if init.name in weights and init.data_type == TensorProto.FLOAT:
            array = numpy_helper.to_array(init)
            kept.append(numpy_helper.from_array(array.astype(np.float16), f"{init.name}_fp16"))
            casts.append(helper.make_node("Cast", [f"{init.name}_fp16"], [init.name], to=TensorProto.FLOAT,
                                          name=f"{init.name}_cast"))
            converted += 1
            saved += array.nbytes // 2
        else:
            kept.append(init)
    if not converted:
        raise CvdnnError(f"{source.name} has no float32 Conv/Gemm/MatMul weights to store as float16",
                         fix="drop fp16 from --cvdnn-quantize for this model")
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return {"precision": "fp16", "weights_fp16": converted, "bytes_saved": saved}


def to_int8_qdq(source: Path, out: Path, samples: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """``source`` quantized by onnxruntime's ``quantize_static``: QDQ format, per-channel int8 weights, uint8
    activations, calibrated (MinMax) on ``samples`` (one feed dict per sample); the graph is first prepared with
    ``quant_pre_process`` (shape inference and optimisation), as onnxruntime recommends."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.rows = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.rows, None)

    with tempfile.TemporaryDirectory(prefix=prefix("quantize")) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared))
            quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's quantizer raises many types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise CvdnnError(f"onnxruntime could not quantize {source.name} to INT8: {type(exc).__name__}: {first}",
                             fix="drop int8 from --cvdnn-quantize, or quantize the model yourself and pass it "
                             "with --cvdnn-onnx") from exc
    return {"precision": "int8", "format": "QDQ", "per_channel": True, "activations": "uint8", "weights": "int8",
            "calibration_samples": len(samples)}


def describe(meta: dict[str, Any]) -> str:
    """What was made, in a phrase: "INT8 (onnxruntime QDQ, per-channel int8 weights, uint8 activations,
    calibrated on 4 samples)"."""
    if meta.get("precision") == "int8":
        return (f"INT8 (onnxruntime QDQ, per-channel int8 weights, uint8 activations, calibrated on "
                f"{meta.get('calibration_samples', '?')} samples of the checks' inputs)")
    return (f"FP16 weights ({meta.get('weights_fp16', '?')} tensors stored as float16, cast back to float32 where "
            f"they are read; {int(meta.get('bytes_saved', 0)) / 1024:.0f} KiB saved)")


class QuantizedDeployment(Deployment):
    """The model's float ONNX made FP16 or INT8 (``settings.precision``), checked like an ONNX deployment."""

    @property
    def float_deployment(self) -> Deployment:
        return self.variant(replace(self.settings, precision=None))

    @property
    def conversion(self) -> Any:
        return self.stage("convert", self._quantized)

    def _quantized(self) -> Any:
        from .convert import ConversionOptions, cached_artifact, conversion_key

        precision = str(self.settings.precision)
        base = self.float_deployment
        source = base.onnx_path
        feeds: list[dict[str, np.ndarray]] = []
        if precision == "int8":
            names = [i.name for i in base.graph.inputs]
            batch = base.to_onnx_inputs(base.inputs)
            feeds = [{n: x[i:i + 1] for n, x in zip(names, batch, strict=True)} for i in range(len(batch[0]))]
        digest = sha256_bytes("|".join([base.onnx_digest, precision, *(
            sha256_bytes(np.ascontiguousarray(x).tobytes()) for f in feeds for x in f.values())]).encode())
        key = conversion_key(digest, ConversionOptions(0, "nchw", None), artifact=f"onnx-{precision}")

        def produce(path: Path, _meta: dict[str, Any], out: Path) -> dict[str, Any]:
            return to_int8_qdq(path, out, feeds) if precision == "int8" else to_fp16_weights(path, out)

        conv = cached_artifact(self.cache, self.model_hash, key, f"model.{precision}.onnx", lambda: (source, {}),
                               produce, {"precision": precision})
        self.events.append("cache-hit" if conv.cached else "converted")
        return conv

    @property
    def load_fix(self) -> str:
        return (f"ship the float ONNX (the items without the {self.settings.precision}: prefix), or an OpenCV that "
                f"runs this precision (--cvdnn-target=opencv==X.Y.Z checks another)")
