"""Other artifacts cv2.dnn reads: TFLite (``readNetFromTFLite``) and frozen TensorFlow graphs
(``readNetFromTensorflow``), exported from the Keras model and checked like the ONNX.

``--cvdnn-format=onnx,tflite,tf`` adds items such as ``tflite:load`` and
``tf:parity[keras-cv2dnn@opencv-4.5.5]`` so a user sees which format works on which OpenCV.
Exports are cached by content hash like the ONNX (a warm run imports no TensorFlow).

Two things measured here shape the export:

* ``convert_variables_to_constants_v2`` writes small constants (a ``Rescaling`` layer's scalars)
  in ``float_val`` form; OpenCV's TensorFlow importer (4.5.5 and 5.0) only reads
  ``tensor_content`` and fails with ``!field.empty() in function 'getTensorContentRef_'``.
  :func:`constants_as_tensor_content` rewrites them, after which the graph loads and matches.
* both importers take an NCHW blob (what ``blobFromImage`` gives) for an NHWC model, and
  return 4-D outputs in NCHW; outputs are lined up with Keras' by shape (see ``align_outputs``).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .compare import nchw_shape
from .convert import Conversion
from .core import Deployment
from .helper import by_helper
from .errors import CvdnnError, StageSkipped
from .graph import GraphInfo, TensorInfo
from .runners import Runner
from .runners.cv2dnn import READERS

__all__ = ["FILENAMES", "export_keras", "constants_as_tensor_content", "ArtifactDeployment",
           "format_label"]

FILENAMES = {"tflite": "model.tflite", "tf": "frozen_graph.pb"}
_NAMES = {"onnx": "ONNX", "tflite": "TFLite", "tf": "TensorFlow frozen graph"}


def format_label(fmt: str) -> str:
    return _NAMES.get(fmt, fmt)


def constants_as_tensor_content(graph_def: Any) -> int:
    """Rewrite numeric Const tensors stored as ``float_val``/``int_val`` into ``tensor_content``
    (the only form OpenCV's TensorFlow importer reads); returns how many were rewritten."""
    import tensorflow as tf

    rewritten = 0
    for node in graph_def.node:
        if node.op != "Const":
            continue
        tensor = node.attr["value"].tensor
        if tensor.tensor_content or tensor.dtype in (tf.string.as_datatype_enum, tf.resource.as_datatype_enum):
            continue
        array = tf.make_ndarray(tensor)
        for name in ("float_val", "double_val", "int_val", "int64_val", "half_val", "bool_val"):
            tensor.ClearField(name)
        tensor.tensor_content = np.ascontiguousarray(array).tobytes()
        rewritten += 1
    return rewritten


#: joins the names an output of a frozen graph may have in cv2.dnn (see producer_chain)
ALTERNATIVES = "|"


def producer_chain(graph_def: Any, name: str, depth: int = 8) -> list[str]:
    """``name`` and the nodes behind it along their single non-constant input (Identity → BiasAdd → MatMul),
    up to a node with several data inputs, a constant or ``depth`` nodes."""
    nodes = {n.name: n for n in graph_def.node}

    def inputs(node: str) -> list[str]:
        return [i.split(":")[0] for i in nodes[node].input if not i.startswith("^") and i.split(":")[0] in nodes]

    def constant(node: str, seen: int = 0) -> bool:  # a Const, or reads only constants (Identity of a Const)
        op = nodes[node].op
        return op == "Const" or (op != "Placeholder" and seen < depth and bool(inputs(node))
                                 and all(constant(i, seen + 1) for i in inputs(node)))

    chain = [name]
    while len(chain) < depth and chain[-1] in nodes:
        data = [i for i in inputs(chain[-1]) if nodes[i].op != "Placeholder" and not constant(i)]
        if len(data) != 1 or data[0] in chain:
            break
        chain.append(data[0])
    return chain


def export_keras(model: Any, keras_meta: dict[str, Any], fmt: str, size: tuple[int, int] | None,
                 out_path: Path) -> dict[str, Any]:
    """Export the Keras model as a TFLite flatbuffer or a frozen graph (batch 1); returns metadata."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from .convert import signature_specs, tool_versions
    from .inputs import fill_spatial

    shapes = [[1, *fill_spatial(i["shape"], size, i["name"])[1:]] for i in keras_meta["inputs"]]
    names, signature = signature_specs(keras_meta, shapes)

    def serve(*args: Any) -> Any:
        return model(list(args) if len(args) > 1 else args[0], training=False)

    traced = tf.function(serve, input_signature=signature)  # (a call, not @: tf.function is untyped)

    rewritten = 0
    try:
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        # frozen first: a TFLite made from the live function keeps VAR_HANDLE/READ_VARIABLE ops,
        # which cv2.dnn (5.0) rejects as PLACEHOLDER_FOR_GREATER_OP_CODES
        frozen = convert_variables_to_constants_v2(traced.get_concrete_function())
        with contextlib.redirect_stdout(io.StringIO()):
            if fmt == "tflite":
                out_path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert())
            else:
                graph_def = frozen.graph.as_graph_def()
                rewritten = constants_as_tensor_content(graph_def)
                out_path.write_bytes(graph_def.SerializeToString())
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise CvdnnError(
            f"TensorFlow could not export the Keras model as a {format_label(fmt)}: {type(exc).__name__}: {first}",
            fix="drop this format from --cvdnn-format, or replace the layer TensorFlow cannot export",
        ) from exc
    output_names = keras_meta.get("output_names") or [o["name"] for o in keras_meta["outputs"]]
    # the artifact's own name of each output ("Identity_1"): what cv2.dnn's importers call it, so that its
    # outputs are asked for and paired by name (the function's outputs are the Keras outputs, in their order)
    tensors = [t.name.split(":")[0] for t in frozen.outputs]
    if fmt == "tf":  # OpenCV's TensorFlow importer drops Identity nodes and names a layer after the first node
        # it fuses (MatMul+BiasAdd: "…/MatMul"): each output's names back along its one data input, any of which
        # may be the layer cv2.dnn lists ("Identity|…/BiasAdd|…/MatMul")
        tensors = [ALTERNATIVES.join(producer_chain(graph_def, t)) for t in tensors]
    if len(tensors) != len(output_names):
        tensors = [""] * len(output_names)
    outputs = [{"name": n, "shape": [1, *o["shape"][1:]], "tensor": t}
               for n, o, t in zip(output_names, keras_meta["outputs"], tensors, strict=True)]
    return {"format": fmt, "inputs": [{"name": n, "shape": s} for n, s in zip(names, shapes, strict=True)],
            "outputs": outputs,
            "constants_rewritten": rewritten, "versions": tool_versions()}


class ArtifactDeployment(Deployment):
    """The Keras model exported as TFLite or a frozen graph, run by cv2.dnn and compared with Keras."""

    reorder_outputs = True  # cv2.dnn's TFLite/TensorFlow importers list outputs in their own order

    @property
    def kind(self) -> str:
        return "export"

    @property
    def fmt(self) -> str:
        return self.settings.format

    @property
    def format_name(self) -> str:
        return format_label(self.fmt)

    @property
    def conversion(self) -> Any:
        return self.stage("convert", lambda: self._export(logits=False))

    def _export(self, logits: bool) -> Conversion:
        """The artifact (cached by content hash); ``logits=True``: its twin without the final Softmax."""
        from .convert import ConversionOptions, cached_artifact, conversion_key

        if not self.has_keras:
            raise StageSkipped(f"{self.label} is an ONNX model: a {format_label(self.fmt)} is exported from a "
                               "Keras model")
        opts = ConversionOptions(0, "nhwc", self.spec.size)
        meta = self.keras_meta
        if logits:
            soft = meta.get("softmax_outputs") or []
            meta = {**meta, "outputs": [o for o, s in zip(meta["outputs"], soft, strict=True) if s],
                    # (no names: none)
                    "output_names": [n for n, s in zip(meta.get("output_names") or [], soft, strict=False) if s]}

        def load() -> tuple[Any, dict[str, Any]]:
            if not logits:
                return self.keras_model, meta
            from .runners.keras import keras_logits_model

            model = self.keras_model
            return self.stage("keras_logits", lambda: keras_logits_model(model)), meta

        artifact = f"{self.fmt}-logits" if logits else self.fmt
        key = conversion_key(self.model_hash, opts, artifact=artifact)
        elsewhere = self._tf_elsewhere("converted", self._artifact_entry(artifact).is_file)
        conv = by_helper(cached_artifact(
            self.cache, self.model_hash, key,
            FILENAMES[self.fmt], load, lambda m, km, out: export_keras(m, km, self.fmt, opts.size, out),
            {**opts.as_dict(), "format": artifact},
        ), elsewhere)
        if not logits:
            self.events.append("cache-hit" if conv.cached else "converted")
        return conv

    def _artifact_entry(self, artifact: str) -> Path:
        from .convert import ConversionOptions, conversion_key

        key = conversion_key(self.model_hash, ConversionOptions(0, "nhwc", self.spec.size), artifact=artifact)
        return self.cache.onnx_dir(key) / FILENAMES[self.fmt]

    def converted_entry(self) -> Path:
        return self._artifact_entry(self.fmt)

    @property
    def graph(self) -> GraphInfo:
        def read() -> GraphInfo:
            meta = self.conversion.meta
            dtypes = [i["dtype"] for i in self.keras_meta["inputs"]]
            inputs = tuple(TensorInfo(i["name"], nchw_shape(i["shape"]) or tuple(i["shape"]), d)
                           for i, d in zip(meta["inputs"], dtypes, strict=True))
            outputs = tuple(TensorInfo(o["name"], tuple(o["shape"]), "float32") for o in meta["outputs"])
            soft = list(self.keras_meta.get("softmax_outputs") or [])
            return GraphInfo(inputs, outputs, tuple(bool(x) for x in (soft + [False] * len(outputs))[: len(outputs)]),
                             0, ())

        return self.stage("graph", read)

    @property
    def onnx_layouts(self) -> list[str]:
        """cv2.dnn's TFLite and TensorFlow importers take 4-D inputs as NCHW blobs."""
        return ["nchw" if len(i.shape) == 4 else "nhwc" for i in self.graph.inputs]

    @property
    def softmax_logits(self) -> list[tuple[int, str]]:
        """Final Softmax outputs: their logits come from a twin artifact exported without the Softmax."""
        return [(k, f"{name} (logits)") for k, (name, s) in enumerate(zip(self.output_names, self.softmax_outputs, strict=True))
                if s]

    @property
    def probe_path(self) -> Path:
        return self.stage("probe", lambda: self._export(logits=True).onnx_path)

    @property
    def cv2net(self) -> Any:
        """The load stage; an OpenCV without this format's importer skips it (and what needs it) with the reason."""
        try:
            return super().cv2net
        except CvdnnError as exc:
            if "has no cv2.dnn.read" not in str(exc):
                raise
            raw = str(exc.details or exc.message)
            reason = raw[raw.index("OpenCV"):] if "OpenCV" in raw else raw
            other = ("check the frozen graph on a 4.x target (--cvdnn-target=opencv==4.12.0), or ship the ONNX or "
                     "TFLite (their items run here)" if self.fmt == "tf"
                     else "check it on OpenCV >= 4.8 (--cvdnn-target=opencv==4.12.0), or ship the ONNX")
            raise StageSkipped(f"{reason.rstrip('. ')}; {other}") from None

    @property
    def artifact_output_names(self) -> list[str]:
        """The artifact's own names of its outputs, in the model's order (empty when one is not known)."""
        outputs = self.conversion.meta.get("outputs") or []
        tensors = [str(o.get("tensor") or "") for o in outputs]
        return tensors if tensors and all(tensors) else []

    def cv2_runner(self, path: Path, output_names: Sequence[str]) -> Runner:
        """Always a child process: OpenCV's TensorFlow importer segfaulted here (5.0, a segmentation
        model's frozen graph) and must not take the pytest session down.  The outputs by the artifact's own
        names where OpenCV lists them all; else every output, in OpenCV's order (lined up with the
        reference's by shape when compared; see Cv2DnnRunner.forward)."""
        from .runners.isolated import RemoteCv2Runner

        names = [i.name for i in self.graph.inputs]
        own = self.artifact_output_names if Path(path) == self.conversion.onnx_path else []  # (not the logits twin)
        return RemoteCv2Runner(path, names, own, self.settings.engine, self.target)

    @property
    def outputs_fix(self) -> str:
        version = self.target_opencv_version()
        return (f"OpenCV {version}'s {self.format_name} importer does not give this model's outputs as the model "
                f"has them: ship the ONNX instead (see the items without the {self.fmt}: prefix), or check "
                "another OpenCV with --cvdnn-target=opencv==X.Y.Z")

    @property
    def load_fix(self) -> str:
        return (f"ship the ONNX instead (see the load item without the {self.fmt}: prefix), or use an OpenCV "
                f"whose cv2.dnn.{READERS[Path(FILENAMES[self.fmt]).suffix][0]} reads this model")


class TFLiteSourceDeployment(ArtifactDeployment):
    """A ``.tflite`` file given as the model: read by cv2.dnn (``readNetFromTFLite``) and compared with the
    TFLite interpreter on the same float inputs (a quantized model's are quantized with its own parameters,
    its outputs dequantized; see runners/tflite.py).  Nothing is converted."""

    @property
    def kind(self) -> str:
        return "tflite"

    @property
    def fmt(self) -> str:
        return "tflite"

    @property
    def tflite_meta(self) -> dict[str, Any]:
        """The interpreter's view of the file (cached per content hash: a warm run imports no TensorFlow)."""

        def meta() -> dict[str, Any]:
            from .runners.tflite import tflite_metadata

            path = self.source.path
            assert path is not None
            return self._model_json("tflite", lambda: tflite_metadata(path))

        return self.stage("tflite_meta", meta)

    @property
    def conversion(self) -> Any:
        from .convert import Conversion

        def read() -> Any:
            assert self.source.path is not None
            return Conversion(self.source.path, self.tflite_meta, True, 0.0)

        return self.stage("convert", read)

    @property
    def graph(self) -> GraphInfo:
        def read() -> GraphInfo:
            meta = self.tflite_meta
            # every runner takes float tensors (a quantized input is quantized by the interpreter runner);
            # cv2.dnn's TFLite importer takes a 4-D input as an NCHW blob
            inputs = tuple(TensorInfo(i["name"], nchw_shape(i["shape"]) or tuple(i["shape"]), "float32")
                           for i in meta["inputs"])
            outputs = tuple(TensorInfo(o["name"], tuple(o["shape"]), "float32") for o in meta["outputs"])
            return GraphInfo(inputs, outputs, tuple(False for _ in outputs), 0, ())

        return self.stage("graph", read)

    @property
    def quantized(self) -> list[str]:
        """The quantized inputs/outputs, described (empty for a float model)."""
        meta = self.tflite_meta
        return [f"{kind} {t['name']!r} {t['dtype']} (scale {t['scale']:.6g}, zero point {t['zero_point']})"
                for kind, items in (("input", meta["inputs"]), ("output", meta["outputs"])) for t in items
                if np.dtype(t["dtype"]).kind in "iu"]

    @property
    def artifact_output_names(self) -> list[str]:
        """The interpreter's names of the outputs: the tensor names cv2.dnn's TFLite importer uses too."""
        return [str(o["name"]) for o in self.tflite_meta["outputs"]]

    @property
    def softmax_logits(self) -> list[tuple[int, str]]:
        return []

    @property
    def probe_path(self) -> Path:
        raise StageSkipped("a TFLite source has no probe graph")

    @property
    def load_fix(self) -> str:
        return ("replace the operator the importer rejects (see OpenCV's TFLite importer for the ones it supports), "
                "or check the Keras source and ship its ONNX (--cvdnn-model=model.keras)")
