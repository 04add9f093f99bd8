"""The fault corpus: planted deployment faults are caught by the right item with the right explanation,
and correct deployments (small custom models and keras.applications with weights=None) raise no alarm.

Every case records ``corpus_kind`` (fault / correct), ``corpus_case``, ``corpus_item`` and
``corpus_detected`` with ``record_property``; ``python benchmarks/fault_corpus.py`` runs this module
(and the planted preprocessing mistakes of test_preprocessing.py) and prints the detection and
false-alarm rates kept in the README.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import ROOT, Run, build_small_cnn, convert, resize_ceil_onnx, save_application

pytestmark = pytest.mark.zoo

Recorder = Callable[[str, object], None]


# -- faults planted in the shipped artifact ------------------------------------------------------------
def _arch(bn_eps: float = 1e-3, act1: str = "relu", drop_relu2: bool = False, relu_before_bn1: bool = False) -> Any:
    """The small CNN of conftest.build_small_cnn with one architectural change (weights copied by name)."""
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    first = [layers.BatchNormalization(name="bn1"), layers.Activation(act1, name="relu1")]
    for layer in reversed(first) if relu_before_bn1 else first:
        x = layer(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(epsilon=bn_eps, name="bn2")(x)
    if not drop_relu2:
        x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(10, name="fc")(x)
    return keras.Model(inputs, layers.Softmax(name="probs")(x), name="small_cnn")


def _faulty_model(fault: str) -> Any:
    base = build_small_cnn(seed=0)
    kwargs = {"bn_epsilon": {"bn_eps": 0.5}, "layer_dropped": {"drop_relu2": True},
              "layers_swapped": {"relu_before_bn1": True}, "activation_replaced": {"act1": "elu"}}.get(fault, {})
    model = _arch(**kwargs)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(base.get_layer(layer.name).get_weights())
    if fault == "weights_perturbed":
        kernel, bias = model.get_layer("conv2").get_weights()
        noise = np.random.default_rng(1).normal(0, 0.05, kernel.shape).astype(kernel.dtype)
        model.get_layer("conv2").set_weights([kernel + noise, bias])
    if fault == "bn_statistics":
        gamma, beta, mean, var = model.get_layer("bn1").get_weights()
        model.get_layer("bn1").set_weights([gamma, beta, mean + 0.5, var * 4])
    return model


@dataclass(frozen=True)
class ModelFault:
    name: str
    description: str
    layers: tuple[str, ...]  # Keras layers the first divergent node may belong to


MODEL_FAULTS = [
    # tf2onnx fuses Conv + BatchNorm into one node named after neither: its weights name the conv layer
    ModelFault("weights_perturbed", "weights of one convolution perturbed (σ=0.05)", ("conv2",)),
    # (fixed before the run: tf2onnx fuses Conv + BatchNorm, so a BatchNorm fault shows in the fused Conv,
    # which the plugin names after its conv layer)
    ModelFault("bn_statistics", "BatchNorm moving mean/variance changed", ("conv1",)),
    ModelFault("bn_epsilon", "BatchNorm epsilon 1e-3 → 0.5", ("conv2",)),
    ModelFault("layer_dropped", "a ReLU layer dropped", ("gap",)),  # the first node fed differently
    ModelFault("layers_swapped", "BatchNorm and ReLU swapped", ("conv1",)),  # (the fused BN moved after the ReLU)
    ModelFault("activation_replaced", "ReLU replaced by ELU", ("relu1",)),
]


@pytest.mark.parametrize("fault", MODEL_FAULTS, ids=[f.name for f in MODEL_FAULTS])
def test_model_fault_is_caught_and_localised(fault: ModelFault, run_cvdnn: Callable[..., Run],
                                            models: dict[str, Path], copy_model: Callable[..., Path],
                                            pytester: pytest.Pytester, record_property: Recorder) -> None:
    copy_model(models["cnn"])
    convert(_faulty_model(fault.name), pytester.path / "shipped.onnx")
    run = run_cvdnn("--cvdnn-model=small_cnn.keras", "--cvdnn-onnx=shipped.onnx", "-k", "parity")
    checks = run.checks()
    parity = checks["parity[keras-cv2dnn]"]
    record_property("corpus_kind", "fault")
    record_property("corpus_case", fault.description)
    record_property("corpus_item", "parity[keras-cv2dnn], parity[keras-onnxruntime]")
    record_property("corpus_detected", parity["outcome"] == "failed")
    assert parity["outcome"] == "failed", parity["message"]
    assert checks["parity[keras-onnxruntime]"]["outcome"] == "failed"
    assert checks["parity[onnxruntime-cv2dnn]"]["outcome"] == "passed"  # OpenCV runs the wrong graph faithfully
    assert parity["message"].startswith("the provided ONNX does not reproduce Keras")
    first = parity["data"]["first_divergent"]
    # where the graphs part: the first divergent node, or the node upstream of it that has no counterpart
    origin = first.get("origin") or {}
    layer, op = (origin["keras_layer"], origin["op_type"]) if origin.get("keras_layer") else \
        (first["keras_layer"], first["op_type"])
    assert layer in fault.layers, first
    record_property("corpus_explanation", f"localised to Keras layer {layer!r} (ONNX {op} node)")


def _elementwise_ratio(model: Any, base: Any) -> float:
    """How far a model's logits are from the base model's, in units of the element-wise tolerance
    (max over elements of |Δ| / max(atol, rtol·|ref|)), on the inputs the checks use."""
    import keras

    from pytest_cvdnn.inputs import random_inputs
    from pytest_cvdnn.spec import InputSpec

    x = random_inputs([[1, 32, 32, 3]], InputSpec(size=(32, 32)), 4, 0)[0]
    ref, out = (keras.Model(m.inputs, m.get_layer("fc").output).predict(x, verbose=0) for m in (base, model))
    return float((np.abs(out - ref) / np.maximum(1e-4, 1e-3 * np.abs(ref))).max())


@pytest.mark.parametrize("sigma, near", [(7e-5, True), (1.5e-5, False)], ids=["near", "below"])
def test_fault_near_the_tolerance(sigma: float, near: bool, run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                  copy_model: Callable[..., Path], pytester: pytest.Pytester,
                                  record_property: Recorder) -> None:
    """A fault 1-3x the tolerance is caught and localised; one at 0.4x is not flagged (the tolerance is where
    it says it is, not far below it)."""
    base = build_small_cnn(seed=0)
    model = _arch()
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(base.get_layer(layer.name).get_weights())
    kernel, bias = model.get_layer("conv2").get_weights()
    noise = np.random.default_rng(1).normal(0, sigma, kernel.shape).astype(kernel.dtype)
    model.get_layer("conv2").set_weights([kernel + noise, bias])
    ratio = _elementwise_ratio(model, base)
    copy_model(models["cnn"])
    convert(model, pytester.path / "shipped.onnx")
    run = run_cvdnn("--cvdnn-model=small_cnn.keras", "--cvdnn-onnx=shipped.onnx", "-k", "parity[keras")
    parity = run.checks()["parity[keras-cv2dnn]"]
    if not near:
        assert ratio < 0.5, ratio
        assert parity["outcome"] == "passed", parity["message"]
        return
    assert 1.0 <= ratio <= 3.0, ratio
    record_property("corpus_kind", "fault")
    record_property("corpus_case", f"weights of one convolution perturbed near the tolerance (σ={sigma:g}: "
                    f"{ratio:.1f}x the element-wise tolerance)")
    record_property("corpus_item", "parity[keras-cv2dnn], parity[keras-onnxruntime]")
    assert parity["outcome"] == "failed", parity["message"]
    first = parity["data"].get("first_divergent") or {}
    assert first.get("keras_layer") == "conv2", parity["message"]
    record_property("corpus_explanation", f"localised to Keras layer 'conv2' ({first['op_type']})")


def _tiny_model() -> Any:
    """A model whose every activation and output is ~1e-9 (the scale of random-weight logits, FIELD.md):
    an absolute tolerance of 1e-4 can never see an error in it."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(11)
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Rescaling(1e-11, name="tiny_scale")(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(10, name="fc")(x), name="tiny_signal")


def _scale_conv(src: Path, dst: Path, layer: str, factor: float) -> str:
    """Copy an ONNX with the kernel of the Conv made from Keras layer ``layer`` multiplied by ``factor``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and f"/{layer}" in n.name)
    weight = inits[conv.input[1]]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(factor), weight.name))
    onnx.save(model, str(dst))
    return conv.name


@pytest.fixture(scope="session")
def tiny_signal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    model = _tiny_model()
    model.save(folder / "tiny_signal.keras")
    convert(model, folder / "tiny_signal.onnx")
    _scale_conv(folder / "tiny_signal.onnx", folder / "tiny_faulty.onnx", "conv2", 1.5)
    return {"keras": folder / "tiny_signal.keras", "faulty": folder / "tiny_faulty.onnx"}


def test_tiny_magnitude_fault_is_caught_and_localised(tiny_signal: dict[str, Path], run_cvdnn: Callable[..., Run],
                                                       copy_model: Callable[..., Path], record_property: Recorder) -> None:
    """Outputs of ~1e-9 with a 50 % error planted in one layer: caught by the rule relative to the signal,
    localised to that layer; with that rule switched off (srtol huge) the element-wise rule passes it."""
    copy_model(tiny_signal["keras"])
    copy_model(tiny_signal["faulty"], "shipped.onnx")
    run = run_cvdnn("--cvdnn-model=tiny_signal.keras", "--cvdnn-onnx=shipped.onnx", "-k", "parity")
    checks = run.checks()
    parity = checks["parity[keras-cv2dnn]"]
    out = parity["data"]["outputs"][0]
    record_property("corpus_kind", "fault")
    record_property("corpus_case", "tiny magnitude: outputs ~1e-9, one convolution's kernel x1.5")
    record_property("corpus_item", "parity[keras-cv2dnn], parity[keras-onnxruntime]")
    record_property("corpus_detected", parity["outcome"] == "failed")
    assert out["scale"] < 1e-7 and out["elementwise_blind"], out  # the signal really is below atol
    assert parity["outcome"] == "failed", parity["message"]
    assert checks["parity[keras-onnxruntime]"]["outcome"] == "failed"
    assert checks["parity[onnxruntime-cv2dnn]"]["outcome"] == "passed"
    assert out["signal_rel"] > 0.1 and not out["signal_ok"] and out["mismatches"] == 0
    first = parity["data"]["first_divergent"]
    assert first["keras_layer"] == "conv2" and first["op_type"] == "Conv", first
    assert "Keras layer 'conv2'" in parity["message"]
    record_property("corpus_explanation", f"localised to Keras layer {first['keras_layer']!r} ({first['op_type']})")
    # the same run with the rule relative to the signal at its loosest (just below 1): the element-wise rule is blind
    blind = run_cvdnn("--cvdnn-model=tiny_signal.keras", "--cvdnn-onnx=shipped.onnx", "--cvdnn-srtol=0.999",
                      "-k", "parity")
    assert blind.checks()["parity[keras-cv2dnn]"]["outcome"] == "passed"


def test_tiny_magnitude_correct_deployment_passes_and_says_what_it_can_detect(
        tiny_signal: dict[str, Path], run_cvdnn: Callable[..., Run], copy_model: Callable[..., Path],
        record_property: Recorder) -> None:
    copy_model(tiny_signal["keras"])
    run = run_cvdnn("--cvdnn-model=tiny_signal.keras")
    checks = run.checks()
    failed = {n: c["message"][:300] for n, c in checks.items() if c["outcome"] == "failed"}
    record_property("corpus_kind", "correct")
    record_property("corpus_case", "tiny magnitude: outputs ~1e-9 (Rescaling 1e-11)")
    record_property("corpus_item", f"all {len(checks)} items")
    record_property("corpus_detected", bool(failed))
    assert not failed, failed
    parity = checks["parity[keras-cv2dnn]"]
    out = parity["data"]["outputs"][0]
    assert out["elementwise_blind"] and out["detectable_rel"] == pytest.approx(1e-3)
    assert "below atol=0.0001, so judged by max|Δ|/max|ref| <= 0.001" in parity["message"]
    assert "judged by max|Δ|/max|ref| <= 0.001" in run.text  # in the terminal summary too


def test_opencv_side_fault_is_blamed_on_opencv(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester,
                                               record_property: Recorder) -> None:
    """A node cv2.dnn computes differently from onnxruntime (Resize nearest_mode=ceil, half_pixel): the
    artifact is right, OpenCV is not; the item blames OpenCV and names the node."""
    resize_ceil_onnx(pytester.path / "upsample.onnx")
    run = run_cvdnn("--cvdnn-model=upsample.onnx", "-k", "parity")
    check = run.checks()["parity[onnxruntime-cv2dnn]"]
    record_property("corpus_kind", "fault")
    record_property("corpus_case", "OpenCV side: a Resize (nearest, ceil) cv2.dnn computes differently")
    record_property("corpus_item", "parity[onnxruntime-cv2dnn]")
    assert check["outcome"] == "failed", check["message"]
    assert check["message"].startswith("OpenCV's importer/runtime computes the ONNX graph differently")
    first = check["data"]["first_divergent"]
    assert first["node"] == "block2/upsample" and first["op_type"] == "Resize", first
    record_property("corpus_explanation", "blamed on OpenCV, localised to node 'block2/upsample' (Resize)")


def test_missing_transpose_is_caught_by_input_spec(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                  copy_model: Callable[..., Path],
                                                  record_property: Recorder) -> None:
    """The shipped ONNX takes NHWC, the deployment builds blobFromImage's NCHW blob."""
    copy_model(models["cnn"])
    copy_model(models["onnx_nhwc"], "shipped.onnx")
    run = run_cvdnn("--cvdnn-model=small_cnn.keras", "--cvdnn-onnx=shipped.onnx", "--cvdnn-preprocess=none,layout=nchw",
                    "-k", "input_spec")
    check = run.checks()["input_spec"]
    record_property("corpus_kind", "fault")
    record_property("corpus_case", "layout: NHWC artifact fed blobFromImage's NCHW blob (transpose missing)")
    record_property("corpus_item", "input_spec")
    record_property("corpus_detected", check["outcome"] == "failed")
    assert check["outcome"] == "failed"
    assert "expects (?, 32, 32, 3) NHWC but the spec's blob is (1, 3, 32, 32) NCHW" in check["message"]
    assert "datalayout=DNN_LAYOUT_NHWC" in check["message"]


def _crossed_outputs(model_path: Path, out: Path) -> None:
    """Convert a two-output model, then wire each graph output to the other's tensor (names kept)."""
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx
    from onnx import helper

    model = keras.models.load_model(model_path)

    sig = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="image"), tf.TensorSpec((None, 8), tf.float32, name="meta"))
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=sig, opset=13, inputs_as_nchw=["image"])
    graph = proto.graph
    a, b = graph.output[0].name, graph.output[1].name
    for node in graph.node:
        node.output[:] = [{a: f"{a}_raw", b: f"{b}_raw"}.get(o, o) for o in node.output]
    graph.node.extend([helper.make_node("Identity", [f"{b}_raw"], [a], name="crossed_a"),
                       helper.make_node("Identity", [f"{a}_raw"], [b], name="crossed_b")])
    crossed = []
    for name, other in ((a, graph.output[1]), (b, graph.output[0])):
        info = onnx.ValueInfoProto()
        info.CopyFrom(other)  # the tensor it now carries
        info.name = name
        crossed.append(info)
    graph.ClearField("output")
    graph.output.extend(crossed)
    onnx.save(proto, str(out))


def test_swapped_outputs_are_caught_by_output_spec(run_cvdnn: Callable[..., Run], two_in_two_out: Path,
                                                  copy_model: Callable[..., Path], pytester: pytest.Pytester,
                                                  record_property: Recorder) -> None:
    copy_model(two_in_two_out)
    _crossed_outputs(two_in_two_out, pytester.path / "shipped.onnx")
    run = run_cvdnn("--cvdnn-model=two_in_two_out.keras", "--cvdnn-onnx=shipped.onnx", "-k",
                    "output_spec or parity")
    checks = run.checks()
    spec = checks["output_spec"]
    record_property("corpus_kind", "fault")
    record_property("corpus_case", "outputs of a two-output model swapped in the artifact")
    record_property("corpus_item", "output_spec, parity[keras-cv2dnn]")
    record_property("corpus_detected", spec["outcome"] == "failed")
    assert spec["outcome"] == "failed"
    assert "the runners disagree on the outputs" in spec["message"] and "reordered" in spec["message"]
    assert checks["parity[keras-cv2dnn]"]["outcome"] == "failed"


# -- correct deployments: no false alarms --------------------------------------------------------------------
APPLICATIONS = [("MobileNetV2", 96), ("ResNet50", 64), ("EfficientNetB0", 64), ("MobileNetV3Small", 64)]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path], two_in_two_out: Path,
        segmenter: Path, densenet_small: Path) -> dict[str, Path]:
    found = {"small CNN (Conv/BN/ReLU/Dropout/Softmax)": models["cnn"],
             "the shipped example tiny_cnn.keras (Rescaling, trained)": ROOT / "examples" / "tiny_cnn.keras",
             "two inputs, two outputs": two_in_two_out,
             "segmentation map (NHWC softmax)": segmenter,
             "DenseNet121 weights=None 64x64": densenet_small}
    for n, (name, size) in enumerate(APPLICATIONS):
        found[f"{name} weights=None {size}x{size}"] = save_application(tmp_path_factory, name, 10 + n, size,
                                                                      f"{name.lower()}.keras")
    return found


ZOO_CASES = ["small CNN (Conv/BN/ReLU/Dropout/Softmax)", "the shipped example tiny_cnn.keras (Rescaling, trained)",
             "two inputs, two outputs", "segmentation map (NHWC softmax)", "DenseNet121 weights=None 64x64",
             *[f"{name} weights=None {size}x{size}" for name, size in APPLICATIONS]]


@pytest.mark.parametrize("case", ZOO_CASES)
def test_correct_deployment_raises_no_alarm(case: str, zoo: dict[str, Path], run_cvdnn: Callable[..., Run],
                                            copy_model: Callable[..., Path], record_property: Recorder) -> None:
    model = copy_model(zoo[case])
    # CVDNN_CORPUS_TARGETS=4.12.0,5.0.0 (benchmarks/fault_corpus.py --targets): the same zoo on other OpenCVs too
    targets = [f"--cvdnn-target=opencv=={v}" for v in os.environ.get("CVDNN_CORPUS_TARGETS", "").split(",") if v]
    run = run_cvdnn(f"--cvdnn-model={model.name}", *targets)
    checks = run.checks()
    failed = {n: c["message"][:300] for n, c in checks.items() if c["outcome"] == "failed"}
    skipped = {n: c["message"][:120] for n, c in checks.items() if c["outcome"] == "skipped"}
    record_property("corpus_kind", "correct")
    record_property("corpus_case", case + (f" (+ {len(targets)} OpenCV targets)" if targets else ""))
    record_property("corpus_item", f"all {len(checks)} items")
    record_property("corpus_detected", bool(failed))  # for a correct deployment, a detection is a false alarm
    record_property("corpus_skipped", "; ".join(f"{n}: {m}" for n, m in sorted(skipped.items())))
    assert not failed, failed
    assert checks["parity[keras-cv2dnn]"]["outcome"] == "passed"
    for name, check in checks.items():  # no parity item passes while unable to fail
        if name.startswith("parity[") and check["outcome"] == "passed":
            assert all(o["detectable_rel"] <= 1e-3 for o in check["data"]["outputs"]), (name, check["data"])
