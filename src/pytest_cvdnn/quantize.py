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

__all__ = ["to_fp16_weights", "to_int8_qdq", "QuantizedDeployment", "describe"]

#: what INT8 is calibrated on without --cvdnn-images (and what an entry cached before the key existed was)
CHECK_SAMPLES = "samples of the checks' inputs"

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


def to_int8_qdq(source: Path, out: Path, samples: Sequence[dict[str, np.ndarray]],
                exclude: Sequence[str] = (), calibration: str = CHECK_SAMPLES) -> dict[str, Any]:
    """``source`` quantized by onnxruntime's ``quantize_static``: QDQ format, per-channel int8 weights, uint8
    activations, calibrated (MinMax) on ``samples`` (one feed dict per sample); the graph is first prepared with
    ``quant_pre_process`` (shape inference and optimisation), as onnxruntime recommends; the nodes named in
    ``exclude`` stay float."""
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
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=list(exclude))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's quantizer raises many types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise CvdnnError(f"onnxruntime could not quantize {source.name} to INT8: {type(exc).__name__}: {first}",
                             fix="drop int8 from --cvdnn-quantize, or quantize the model yourself and pass it "
                             "with --cvdnn-onnx") from exc
    return {"precision": "int8", "format": "QDQ", "per_channel": True, "activations": "uint8", "weights": "int8",
            "calibration_samples": len(samples), "calibration": calibration, "excluded": list(exclude)}


def _samples(x: np.ndarray, axis: int | None, start: int, stop: int) -> np.ndarray:
    """Samples ``start:stop`` of an input batched on ``axis`` (None: a value every sample shares, as it is)."""
    if axis is None:
        return x
    return np.ascontiguousarray(np.take(x, range(start, min(stop, x.shape[axis])), axis=axis))


def describe(meta: dict[str, Any]) -> str:
    """What was made, in a phrase: "INT8 (onnxruntime QDQ, per-channel int8 weights, uint8 activations,
    calibrated on 4 samples)"."""
    if meta.get("precision") == "int8":
        return (f"INT8 (onnxruntime QDQ, per-channel int8 weights, uint8 activations, calibrated on "
                f"{meta.get('calibration_samples', '?')} {meta.get('calibration', CHECK_SAMPLES)})")
    return (f"FP16 weights ({meta.get('weights_fp16', '?')} tensors stored as float16, cast back to float32 where "
            f"they are read; {int(meta.get('bytes_saved', 0)) / 1024:.0f} KiB saved)")


#: at most this many of the user's images calibrate INT8 (onnxruntime's MinMax calibration holds every activation)
CALIBRATION_IMAGES = 64


class QuantizedDeployment(Deployment):
    """The model's float ONNX made FP16 or INT8 (``settings.precision``), checked like an ONNX deployment."""

    @property
    def float_deployment(self) -> Deployment:
        return self.variant(replace(self.settings, precision=None))

    @property
    def conversion(self) -> Any:
        return self.stage("convert", self._quantized)

    def _quantized(self) -> Any:
        from .convert import ConversionOptions, cached_artifact, conversion_key, tool_versions

        precision = str(self.settings.precision)
        base = self.float_deployment
        source = base.onnx_path
        feeds, calibration = self.calibration_feeds() if precision == "int8" else ([], "")
        # (what decides the file: the float graph, the precision, the quantizer's version, the calibration data)
        digest = sha256_bytes("|".join([base.onnx_digest, precision, str(tool_versions().get("onnxruntime")), *(
            sha256_bytes(np.ascontiguousarray(x).tobytes()) for f in feeds for x in f.values())]).encode())
        key = conversion_key(digest, ConversionOptions(0, "nchw", None), artifact=f"onnx-{precision}")

        def produce(path: Path, _meta: dict[str, Any], out: Path) -> dict[str, Any]:
            return to_int8_qdq(path, out, feeds, calibration=calibration) if precision == "int8" \
                else to_fp16_weights(path, out)

        conv = cached_artifact(self.cache, self.model_hash, key, f"model.{precision}.onnx", lambda: (source, {}),
                               produce, {"precision": precision})
        self.events.append("cache-hit" if conv.cached else "converted")
        return conv

    def calibration_feeds(self) -> tuple[list[dict[str, np.ndarray]], str]:
        """The INT8 calibration data, one feed dict per sample (by the float graph's input names), and what it is:
        the user's images (--cvdnn-images, at most CALIBRATION_IMAGES, through the deployed pipeline: cv2.imread
        and the blob) for a model of one image input, else the checks' samples."""
        base = self.float_deployment
        names = [i.name for i in base.graph.inputs]
        images = self._calibration_images(base)
        batch = base.to_onnx_inputs([images] if images is not None else base.inputs)
        axes = base.batch_axes
        count = next((x.shape[a] for x, a in zip(batch, axes, strict=True) if a is not None), 1)
        feeds = [{n: _samples(x, a, i, i + 1) for n, x, a in zip(names, batch, axes, strict=True)}
                 for i in range(count)]
        return feeds, ("images of --cvdnn-images (the deployed pipeline's blobs)" if images is not None
                       else CHECK_SAMPLES)

    def _calibration_images(self, base: Deployment) -> np.ndarray | None:
        """The deployed pipeline's tensors (NHWC, the Keras layout) of the user's images, None where there are none
        or the model does not take one sized image."""
        from .imageset import read_image_set
        from .pipelines import deployed_pipeline, tensors

        if self.settings.images is None or len(base.graph.inputs) != 1 or not base.image_inputs:
            return None
        spec = base.spec_for(base.image_inputs[0])
        if spec.size is None:
            return None
        files = read_image_set(Path(str(self.settings.images))).files[:CALIBRATION_IMAGES]
        return tensors(files, deployed_pipeline(spec), spec.size) if files else None

    @property
    def load_fix(self) -> str:
        return (f"ship the float ONNX (the items without the {self.settings.precision}: prefix), or an OpenCV that "
                f"runs this precision (--cvdnn-target=opencv==X.Y.Z checks another)")


# -- where the precision is lost -----------------------------------------------------------------
def sqnr_db(reference: np.ndarray, quantized: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB, 10·log10(Σref² / Σ(ref − q)²) (inf where they are equal)."""
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(quantized, np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-300) / noise))


def layer_sqnr(float_path: Path, reduced_path: Path, feeds: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per compute node of the float graph whose output the reduced graph has (as the next layer reads it: after
    the Q/DQ pair a QDQ graph puts behind it, else under its own name), in graph order: the SQNR of its output and
    the lowest of its inputs' (a graph input: inf), in onnxruntime on ``feeds``."""
    import onnx

    from .diagnose import _ort_tensors

    model = onnx.load(str(float_path))
    inits = {i.name for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Constant")]
    reduced = {o for n in onnx.load(str(reduced_path)).graph.node for o in n.output}
    # each float tensor as the next layer reads it in the reduced graph: after its Q/DQ pair (the quantization
    # of the activation, and a Relu folded into it), else under its own name
    seen = {t: (t + "_DequantizeLinear_Output" if t + "_DequantizeLinear_Output" in reduced else t)
            for t in dict.fromkeys(o for n in nodes for o in n.output if o)}
    seen = {t: q for t, q in seen.items() if q in reduced}
    with tempfile.TemporaryDirectory(prefix=prefix("sqnr")) as tmp:
        ref = _ort_tensors(float_path, list(seen), feeds, Path(tmp))
        got = _ort_tensors(reduced_path, list(dict.fromkeys(seen.values())), feeds, Path(tmp))
    sqnr = {t: sqnr_db(ref[t], got[q]) for t, q in seen.items()
            if t in ref and q in got and ref[t].shape == got[q].shape}
    rows = []
    for node in nodes:
        out = next((o for o in node.output if o in sqnr), None)
        if out is None:
            continue
        ins = [sqnr[i] for i in node.input if i in sqnr and i not in inits]
        rows.append({"node": node.name, "op_type": node.op_type, "sqnr": sqnr[out],
                     "input_sqnr": min(ins) if ins else float("inf")})
    return rows


#: an activation whose SQNR is below this has lost the signal (20 dB: the noise 10 % of the signal's amplitude;
#: a healthy INT8 layer measures 30-45 dB)
LOST_DB = 20.0


def worst_layer(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Where the error jumps: the first node (in graph order) whose output's SQNR is below LOST_DB while its inputs'
    was not; None when every output keeps its signal."""
    return next((row for row in rows if row["sqnr"] < LOST_DB <= row["input_sqnr"]), None)


#: the samples the per-node SQNR is measured on (the checks' first ones)
SQNR_SAMPLES = 8


def precision_failure(dep: Deployment, expected: str, obtained: str, result: Any, data: dict[str, Any]) -> Any:
    """For an INT8 graph the plugin made whose onnxruntime run disagrees with Keras at task level: the quantization
    itself loses the predictions.  Names the node where the SQNR against the float graph falls below LOST_DB and
    verifies the fix of leaving it (then its neighbours) float (quantized again, compared at task level).  None
    where this does not apply (the caller explains the failure)."""
    from .compare import top1_text
    from .graph import keras_layer_for
    from .parity import judged_tolerance
    from .verdicts import CheckFailed

    tolerance, precision = judged_tolerance(dep)
    # (only an INT8 the plugin made from this model's float graph: one given with --cvdnn-onnx may be another
    # model's, which the ordinary blame says, "the provided ONNX does not reproduce Keras")
    if precision != "int8" or (expected, obtained) != ("keras", "onnxruntime") or not dep.has_keras \
            or not isinstance(dep, QuantizedDeployment):
        return None
    own = dep.float_deployment
    names = [i.name for i in own.graph.inputs]
    # (at most SQNR_SAMPLES samples: every activation of both graphs is held at once)
    batch = own.to_onnx_inputs(own.inputs)
    feeds = {n: _samples(x, axis, 0, SQNR_SAMPLES) for n, x, axis in zip(names, batch, own.batch_axes, strict=True)}
    try:
        rows = layer_sqnr(own.onnx_path, dep.onnx_path, feeds)
    except Exception as exc:  # noqa: BLE001 - a localisation is a bonus: the verdict stands without it
        rows, data["sqnr_error"] = [], f"{type(exc).__name__}: {exc}"[:300]
    worst = worst_layer(rows)
    top1 = top1_text([o.as_dict() for o in result.outputs if o.topk][:1])
    message = (f"the INT8 quantization changes what the model computes beyond task level (onnxruntime against Keras: "
               f"top-1 {top1 or '?'}, max|Δ|/max|ref| {result.max_signal_rel:.3g} where {tolerance.srtol:g} is allowed)")
    fix = ("leave the most sensitive layers float (nodes_to_exclude in onnxruntime's quantize_static), calibrate on "
           "data like the deployment's (--cvdnn-inputs), keep per-channel weights")
    data["sqnr"] = rows[:64]
    if worst is not None:
        layer = keras_layer_for(worst["node"], dep.keras_layer_names)
        message += (f"; the error jumps at node {worst['node']!r} (op {worst['op_type']}"
                    + (f", Keras layer {layer!r}" if layer else "") + f"): SQNR {worst['input_sqnr']:.1f} dB at its "
                    f"inputs, {worst['sqnr']:.1f} dB at its output")
        data["node"], data["op_type"], data["worst_layer"] = worst["node"], worst["op_type"], worst
        found = _verify_exclusion(dep, worst["node"], tolerance)
        if found:
            nodes, verified = found
            fix = (f"leave {'node' if len(nodes) == 1 else 'nodes'} {', '.join(map(repr, nodes))} float: "
                   f"quantize_static(..., nodes_to_exclude={nodes!r}) — verified here: quantized again without "
                   f"{'it' if len(nodes) == 1 else 'them'}, onnxruntime agrees at task level ({verified})")
            data["verified_fix"] = {"nodes_to_exclude": nodes, "result": verified}
        else:
            fix = (f"leave node {worst['node']!r} float (nodes_to_exclude=[{worst['node']!r}] in quantize_static; "
                   "not verified here), or " + fix)
    return CheckFailed(message, fix=fix, details=result.format_failure(), data=data)


def _exclusions(model: Any, node: str, rounds: int = 3) -> list[list[str]]:
    """The node sets to leave float, smallest first: ``node``, then with its neighbours (the nodes that make its
    inputs and those that read its outputs: an activation is quantized where it is made and where it is read),
    then with theirs."""
    producer = {o: n.name for n in model.graph.node for o in n.output}
    readers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.name)
    by_name = {n.name: n for n in model.graph.node}
    chosen, sets = [node], []
    for _ in range(rounds):
        sets.append(list(chosen))
        grown = [producer[i] for n in chosen for i in by_name[n].input if i in producer]
        grown += [r for n in chosen for o in by_name[n].output for r in readers.get(o, [])]
        grown = [g for g in dict.fromkeys(grown) if g not in chosen]
        if not grown:
            break
        chosen += grown
    return sets


def _verify_exclusion(dep: "QuantizedDeployment", node: str, tolerance: Any) -> tuple[list[str], str] | None:
    """Quantize the float graph again with ``node`` left float (then with its neighbours too, see _exclusions) and
    compare onnxruntime's run with Keras at task level: (the nodes, "top-1 6/6, max|Δ|/max|ref| 0.004") of the
    first that agrees, None when none does (or none can be made)."""
    import onnx

    from .compare import compare, top1_text
    from .runners.onnxruntime import OrtRunner

    base = dep.float_deployment
    want = dep.run("keras")
    flags = [e.ndim == 2 and e.shape[-1] > 1 for e in want]
    (calibration, _), inputs = dep.calibration_feeds(), dep.to_onnx_inputs(dep.inputs)
    for nodes in _exclusions(onnx.load(str(base.onnx_path)), node):
        with tempfile.TemporaryDirectory(prefix=prefix("requantize")) as tmp:
            path = Path(tmp) / "int8.onnx"
            try:
                to_int8_qdq(base.onnx_path, path, calibration, exclude=nodes)
                runner = OrtRunner(path, outputs=dep.output_names)
                got = dep.from_onnx_outputs(runner.infer(inputs))
            except Exception:  # noqa: BLE001 - this set is then not verified; the next is tried
                continue
        result = compare(want, got, tolerance, expected_name="keras", obtained_name="onnxruntime",
                         output_names=list(dep.output_names), softmax=flags)
        if result:
            top1 = top1_text([o.as_dict() for o in result.outputs if o.topk][:1])
            return nodes, f"top-1 {top1}, max|Δ|/max|ref| {result.max_signal_rel:.3g}"
    return None
