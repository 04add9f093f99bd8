"""Reduced-precision artifacts the user ships (an INT8 QDQ ONNX from onnxruntime's static quantization, FP16
weights): judged at task level (the classes and the error relative to the signal), never element by element; a
wrong quantized model still fails; what each OpenCV does with them is said as it is.  Compared with a hand
script (onnxruntime and Keras on the same inputs) (default tier)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import ROOT, Run, convert

sys.path.insert(0, str(ROOT))
from examples.build_tiny_cnn import make_images  # noqa: E402

TINY = ROOT / "examples" / "tiny_cnn.keras"


def _quantized(folder: Path, negate_classifier: bool = False) -> Path:
    """The example model converted by hand (tf2onnx), then quantized INT8 QDQ by onnxruntime (per channel,
    calibrated on pictures of its classes); ``negate_classifier``: its last layer's weights negated first (a
    quantized model of another model)."""
    import keras
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    f32 = convert(keras.saving.load_model(TINY), folder / "f32.onnx", size=64)
    if negate_classifier:
        model = onnx.load(str(f32))
        gemm = next(n for n in model.graph.node if n.op_type in ("Gemm", "MatMul"))
        init = next(i for i in model.graph.initializer if i.name == gemm.input[1])
        init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
        onnx.save(model, str(f32))
    images = make_images(32, seed=9)[0].transpose(0, 3, 1, 2).astype(np.float32)
    name = ort.InferenceSession(str(f32), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter([{name: images[i:i + 1]} for i in range(len(images))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.rows, None)

    quant_pre_process(str(f32), str(folder / "pre.onnx"))
    out = folder / ("other_int8.onnx" if negate_classifier else "int8.onnx")
    quantize_static(str(folder / "pre.onnx"), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def _inputs(folder: Path) -> Path:
    """Pictures of the model's classes as .npy samples (NHWC), so that the plugin and the hand script feed the same."""
    (folder / "samples").mkdir()
    for k, image in enumerate(make_images(6, seed=4)[0]):
        np.save(folder / "samples" / f"{k}.npy", image.astype(np.float32))
    return folder / "samples"


def _by_hand(onnx_path: Path, samples: Path) -> dict[str, Any]:
    """onnxruntime on the artifact and Keras on the float model, on the same samples: top-1 agreement and
    max|Δ|/max|ref| of the probabilities."""
    import keras
    import onnxruntime as ort

    x = np.stack([np.load(p) for p in sorted(samples.glob("*.npy"))])
    want = np.asarray(keras.saving.load_model(TINY)(x))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    return {"agree": int((want.argmax(1) == got.argmax(1)).sum()), "count": len(x),
            "signal_rel": float(np.abs(got - want).max() / np.abs(want).max())}


def test_an_int8_artifact_is_judged_by_its_classes_and_signal_and_what_opencv_does_is_said(
        run_cvdnn: Callable[..., Run], copy_model: Callable[..., Path], pytester: pytest.Pytester) -> None:
    copy_model(TINY, "m.keras")
    int8 = _quantized(pytester.path)
    samples = _inputs(pytester.path)
    hand = _by_hand(int8, samples)
    assert hand["agree"] == hand["count"] and 1e-4 < hand["signal_rel"] < 0.05, hand  # (close, not bit-equal)
    run = run_cvdnn("--cvdnn-model=m.keras", f"--cvdnn-onnx={int8.name}", f"--cvdnn-inputs={samples.name}")
    checks = run.checks()
    parity = checks["parity[keras-onnxruntime]"]
    assert parity["outcome"] == "passed", parity["message"]
    assert ("a reduced-precision (int8) artifact: judged at task level — the top-k classes (near-ties within 0.05 "
            "of the signal not judged) and max|Δ|/max|ref| ≤ 0.05 — not element by element") in parity["message"]
    probs = next(o for o in parity["data"]["outputs"] if o["name"] == "probs")
    assert probs["signal_rel"] == pytest.approx(hand["signal_rel"], rel=1e-3, abs=1e-6)
    assert probs["elementwise"] is False and probs["topk"][0]["disagree"] == 0
    # OpenCV 5.1 cannot run this QDQ graph (by hand too): said as it is, not blamed on the quantization's accuracy
    import cv2

    try:
        net = cv2.dnn.readNetFromONNX(str(int8))
        net.setInput(np.zeros((1, 3, 64, 64), np.float32))
        net.forward()
        loads = True
    except cv2.error:
        loads = False
    assert (checks["load"]["outcome"] == "passed") == loads, checks["load"]["message"]


def test_a_quantized_model_of_another_model_fails_at_task_level(run_cvdnn: Callable[..., Run],
                                                                copy_model: Callable[..., Path],
                                                                pytester: pytest.Pytester) -> None:
    """The classifier's weights negated before quantization: the classes change, so the task-level judge fails
    the pair (the element-wise rule is not what fails it)."""
    copy_model(TINY, "m.keras")
    other = _quantized(pytester.path, negate_classifier=True)
    samples = _inputs(pytester.path)
    hand = _by_hand(other, samples)
    assert hand["agree"] < hand["count"]
    parity = run_cvdnn("--cvdnn-model=m.keras", f"--cvdnn-onnx={other.name}", f"--cvdnn-inputs={samples.name}",
                       "-k", "keras-onnxruntime").checks()["parity[keras-onnxruntime]"]
    assert parity["outcome"] == "failed", parity["message"]
    assert "beyond task level: the top-k classes" in parity["message"], parity["message"]
    probs = next(o for o in parity["data"]["outputs"] if o["name"] == "probs")
    assert probs["topk"][0]["disagree"] >= hand["count"] - hand["agree"] - probs["topk"][0]["ambiguous"]


_HAND_CV2 = r"""
import json, sys
import cv2, numpy as np
x = np.load(sys.argv[2])
try:
    net = cv2.dnn.readNetFromONNX(sys.argv[1])
    net.setInput(x)
    out = net.forward()
    print(json.dumps({"opencv": cv2.__version__, "top1": out.reshape(len(x), -1).argmax(1).tolist()}))
except cv2.error as exc:
    print(json.dumps({"opencv": cv2.__version__, "error": str(exc).strip().splitlines()[-1]}))
"""


def _fp16_by_hand(source: Path, out: Path) -> Path:
    """FP16 weights made without the plugin: every float32 weight of a Conv/Gemm/MatMul as float16, cast back."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    weights = {n for node in model.graph.node if node.op_type in ("Conv", "Gemm", "MatMul") for n in node.input[1:]}
    casts = []
    for init in model.graph.initializer:
        if init.name in weights:
            half = numpy_helper.to_array(init).astype(np.float16)
            casts.append(helper.make_node("Cast", [init.name + "_h"], [init.name], to=TensorProto.FLOAT))
            init.CopyFrom(numpy_helper.from_array(half, init.name + "_h"))
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(out))
    return out


@pytest.mark.zoo  # (two precisions on two OpenCVs, the agreement items and a hand quantization: ~60 s)
def test_quantize_makes_fp16_and_int8_deployments_and_says_where_each_loads_runs_and_agrees(
        run_cvdnn: Callable[..., Run], copy_model: Callable[..., Path], pytester: pytest.Pytester) -> None:
    """--cvdnn-quantize=fp16,int8 on the example: each variant is made once (cached), gated by its own items on the
    local OpenCV and a target, judged at task level, and summed up per OpenCV as loads / runs / agrees.  A hand
    script makes the same FP16 file and onnxruntime's QDQ model and asks each OpenCV directly."""
    import subprocess

    import keras

    from conftest import side_by_side

    import cv2

    from examples.build_tiny_cnn import CLASSES

    old = side_by_side("4.12.0")
    copy_model(TINY, "m.keras")
    samples = _inputs(pytester.path)
    images, labels = make_images(12, seed=5)  # (labelled photos of its classes: the agreement item per precision)
    for k, (image, label) in enumerate(zip(images, labels)):
        (pytester.path / "val" / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(pytester.path / "val" / CLASSES[label] / f"{k:02d}.png"), image[..., ::-1])
    run = run_cvdnn("--cvdnn-model=m.keras", f"--cvdnn-inputs={samples.name}", "--cvdnn-quantize=fp16,int8",
                    "--cvdnn-target=opencv==4.12.0", "--cvdnn-images=val")
    checks = run.checks()
    # agreement on the user's own images, per precision: the FP16 deployment agrees; the INT8 one does not load
    assert checks["fp16:agreement"]["outcome"] == "passed", checks["fp16:agreement"]["message"]
    assert checks["agreement"]["data"]["images"] == checks["fp16:agreement"]["data"]["images"] == 12
    assert checks["int8:agreement"]["outcome"] == "skipped" and "load failed" in checks["int8:agreement"]["message"]
    assert checks["fp16:convert"]["message"].startswith("made in ")
    # calibrated on the user's images through the deployed pipeline (cv2.imread and the blob), not the samples
    assert "INT8 (onnxruntime QDQ, per-channel int8 weights, uint8 activations, calibrated on 12 images of " \
           "--cvdnn-images (the deployed pipeline's blobs))" in checks["int8:convert"]["message"]
    # the hand script: the same work without the plugin, on the same samples
    x = np.stack([np.load(p) for p in sorted(samples.glob("*.npy"))])
    want = np.asarray(keras.saving.load_model(TINY)(x)).argmax(1).tolist()
    f32 = convert(keras.saving.load_model(TINY), pytester.path / "f32.onnx", size=64)
    fp16 = _fp16_by_hand(f32, pytester.path / "fp16.onnx")
    int8 = _quantized(pytester.path)
    np.save(pytester.path / "x.npy", np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def opencv(model: Path, folder: Path | None) -> dict[str, Any]:
        env = {"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"} if folder else None
        out = subprocess.run([sys.executable, "-c", _HAND_CV2, str(model), str(pytester.path / "x.npy")],
                             capture_output=True, text=True, check=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows = {(r["precision"], r["target"]): r for r in run.report["models"][0]["precision"]}
    for precision, model in (("fp16", fp16), ("int8", int8)):
        for target, folder in (("local", None), ("opencv-4.12.0", old)):
            hand, row = opencv(model, folder), rows[(precision, target)]
            if "error" in hand:  # cv2.dnn cannot read or run it (INT8 QDQ: every OpenCV we have)
                assert row["load"] == "failed" and row["agrees"] in (None, "skipped"), (precision, target, row, hand)
            else:
                assert row["load"] == row["run"] == "passed", (precision, target, row)
                assert (row["agrees"] == "passed") == (hand["top1"] == want), (precision, target, row, hand)
    # what the hand script found on this machine: FP16 weights load and agree everywhere, INT8 QDQ loads nowhere
    assert rows[("fp16", "local")]["agrees"] == "passed" and rows[("int8", "local")]["load"] == "failed"
    assert "  fp16  opencv-4.12.0   loads, runs, agrees (top1 6/6)" in run.text, run.text[-3000:]
    assert "  int8  local           does not load: " in run.text
    assert "no variant loads" not in checks["int8:load"]["message"]  # (no opset/layout search of the float model)
    # the quantization itself, in onnxruntime: judged at task level against Keras
    assert checks["int8:parity[keras-onnxruntime]"]["outcome"] == "passed"
    assert "a reduced-precision (int8) artifact: judged at task level" in \
        checks["int8:parity[keras-onnxruntime]"]["message"]
    warm = run_cvdnn("--cvdnn-model=m.keras", f"--cvdnn-inputs={samples.name}", "--cvdnn-quantize=fp16,int8",
                     "--cvdnn-images=val", "-k", "convert")
    assert all(warm.checks()[f"{p}:convert"]["message"].startswith("cache hit") for p in ("fp16", "int8"))


def test_an_unknown_precision_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--cvdnn-model=m.keras", "--cvdnn-quantize=fp16,int4")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--cvdnn-quantize: 'fp16,int4': unknown precision int4; use a comma list of fp16*"])


def _sensitive(path: Path) -> Path:
    """An MLP with one hidden unit whose range is 300x the others' (the next layer ignores it): quantizing that
    activation per tensor to uint8 crushes every other unit — a sensitive layer."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((16,), name="x")
    hidden = keras.layers.Dense(32, activation="relu", name="wide")(x)
    model = keras.Model(x, keras.layers.Dense(4, activation="softmax", name="probs")(hidden), name="sens")
    w, b = model.get_layer("wide").get_weights()
    w[:, 0] *= 300.0
    model.get_layer("wide").set_weights([w, b])
    w, b = model.get_layer("probs").get_weights()
    w[0, :] = 0.0
    model.get_layer("probs").set_weights([w, b])
    model.save(path)
    return path


def test_an_int8_that_loses_a_sensitive_layer_names_it_and_verifies_leaving_it_float(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """The plugin's INT8 of a model with a sensitive layer disagrees with Keras: the item names the node where the
    SQNR falls below 20 dB (its input still above) and the nodes whose leaving float it verified by quantizing
    again.  The hand script quantizes with onnxruntime directly (same data, same settings), with and without
    those nodes, and measures the same SQNR."""
    import keras
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from pytest_cvdnn.quantize import sqnr_db

    model_path = _sensitive(pytester.path / "sens.keras")
    x = np.random.default_rng(3).uniform(-1, 1, (6, 16)).astype(np.float32)
    np.savez(pytester.path / "inputs.npz", x=x)
    run = run_cvdnn("--cvdnn-model=sens.keras", "--cvdnn-inputs=inputs.npz", "--cvdnn-quantize=int8",
                    "-k", "int8 and keras-onnxruntime")
    item = run.checks()["int8:parity[keras-onnxruntime]"]
    assert item["outcome"] == "failed", item["message"]
    assert item["message"].startswith("the INT8 quantization changes what the model computes beyond task level")
    assert ("the error jumps at node 'sens_1/probs_1/MatMul' (op MatMul, Keras layer 'probs'): SQNR"
            in item["message"]), item["message"]
    nodes = item["data"]["verified_fix"]["nodes_to_exclude"]
    assert nodes[0] == "sens_1/probs_1/MatMul" and "verified here" in item["message"]

    # by hand: the float graph and onnxruntime's quantization, with and without the nodes the item names
    import tensorflow as tf
    import tf2onnx

    f32 = pytester.path / "f32.onnx"
    tf2onnx.convert.from_keras(keras.saving.load_model(model_path), opset=13, output_path=str(f32),
                               input_signature=(tf.TensorSpec((None, 16), tf.float32, name="x"),))
    quant_pre_process(str(f32), str(pytester.path / "pre.onnx"))
    want = np.asarray(keras.saving.load_model(model_path)(x))

    def quantized(exclude: list[str]) -> np.ndarray:
        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.rows = iter([{"x": x[i:i + 1]} for i in range(len(x))])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.rows, None)

        out = pytester.path / "q.onnx"
        quantize_static(str(pytester.path / "pre.onnx"), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=exclude)
        return ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    def judged(got: np.ndarray) -> tuple[int, float]:
        return int((got.argmax(1) == want.argmax(1)).sum()), float(np.abs(got - want).max() / np.abs(want).max())

    agree, rel = judged(quantized([]))
    assert agree < len(x) or rel > 0.05, (agree, rel)  # (what the item failed)
    agree, rel = judged(quantized(nodes))
    assert agree == len(x) and rel <= 0.05, (agree, rel)  # (what it verified)
    # the SQNR the item quotes: the hidden activation as the MatMul reads it keeps its signal, the MatMul's output not
    rows = {r["node"]: r for r in item["data"]["sqnr"]}
    assert rows["sens_1/probs_1/MatMul"]["sqnr"] < 20.0 <= rows["sens_1/probs_1/MatMul"]["input_sqnr"]
    assert sqnr_db(want, want) == float("inf") and sqnr_db(np.ones(4), np.zeros(4)) == pytest.approx(0.0)


def test_quantizing_a_tflite_file_is_refused_with_the_fix(pytester: pytest.Pytester) -> None:
    """A .tflite model holds no float ONNX to quantize: --cvdnn-quantize is a usage error naming the file, not
    items missing unseen (the check is made before the file is read)."""
    (pytester.path / "m.tflite").write_bytes(b"TFL3")
    result = pytester.runpytest_subprocess("--cvdnn-model=m.tflite", "--cvdnn-quantize=int8", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cvdnn-quantize=int8: *m.tflite is a TFLite file, so there is no float ONNX to "
                                 "quantize*Fix: quantize from the Keras or ONNX model*"])
