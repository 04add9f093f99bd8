"""Diagnosis: where a deployment fails, why, and what fixes it — on real OpenCV 4.5.5 and 5.x."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import Run, perturb_first_conv, save_application


def test_perturbed_convolution_is_named_as_first_divergent_node(
        run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path],
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    model = copy_model(models["cnn"])
    bad = pytester.path / "perturbed.onnx"
    conv = perturb_first_conv(models["onnx"], bad)
    repro_dir = tmp_path / "repro"
    run = run_cvdnn(f"--cvdnn-model={model.name}", f"--cvdnn-onnx={bad.name}", f"--cvdnn-repro={repro_dir}",
                    "-k", "parity")
    assert run.ret == 1
    check = run.checks()["parity[keras-onnxruntime]"]
    first = check["data"]["first_divergent"]
    assert first["node"] == conv and first["op_type"] == "Conv"
    assert first["keras_layer"] == "conv1"
    assert f"first divergent node: {conv!r} (op Conv, Keras layer 'conv1')" in check["message"]
    assert "compared with a fresh conversion of the Keras model" in check["message"]
    # the JSON diagnosis object and the repro folder
    diagnosis = run.report["models"][0]["diagnosis"]
    assert diagnosis["failing_stage"].startswith("parity[keras")
    assert diagnosis["node"] == conv and diagnosis["keras_layer"] == "conv1"
    repro = Path(diagnosis["repro"])
    assert repro.parent.parent == repro_dir
    assert {p.name for p in repro.iterdir()} >= {"subgraph.onnx", "input0.npy", "expected0.npy", "repro.json", "repro.py"}
    info = json.loads((repro / "repro.json").read_text())
    assert info["op_type"] == "Conv" and info["versions"]["opencv"]
    proc = subprocess.run([sys.executable, "repro.py"], cwd=repro, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "max abs error vs a fresh conversion of the Keras model" in proc.stdout, \
        proc.stderr
    # it reproduces the fault: the error it prints is the one the item measured at that node (cv2.dnn on the
    # shipped node vs the fresh conversion), not the shipped graph compared with itself
    printed = float(proc.stdout.strip().splitlines()[-1].split(":")[-1])
    assert printed == pytest.approx(first["stats"]["max_abs"], rel=0.05), (printed, first["stats"]["max_abs"])


def test_ops_item_passes_when_everything_imports(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                 copy_model: Callable[..., Path]) -> None:
    copy_model(models["cnn"], "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", "-k", "ops")
    assert run.ret == 0, run.text
    data = run.checks()["ops"]["data"]
    assert {"Conv", "Relu", "MaxPool", "Softmax"} <= set(data["op_types"])
    assert data["unsupported"] == []


def test_ops_item_lists_unsupported_nodes(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                          copy_model: Callable[..., Path]) -> None:
    mvn = copy_model(models["mvn"])
    run = run_cvdnn(f"--cvdnn-model={mvn.name}", "-k", "ops or load")
    checks = run.checks()
    assert checks["ops"]["outcome"] == "failed"
    assert "1 of 1 op patterns do not import" in checks["ops"]["message"]
    assert "MeanVarianceNormalization (1 node(s), first 'norm/mvn')" in checks["ops"]["message"]
    assert checks["load"]["data"]["op_type"] == "MeanVarianceNormalization"
    assert run.report["models"][0]["diagnosis"]["failing_stage"] == "ops"


@pytest.mark.zoo
def test_opset13_on_opencv_4_5_5_names_squeeze_and_finds_opset11(
        run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path],
        opencv_4_5_5: Path) -> None:
    """FIELD.md: OpenCV 4.5.5 rejects opset-13 Squeeze; opset 11 loads. Same session checks OpenCV 5 too.  The
    remedy offered first is the ONNX rewrite (no re-conversion): its fixed.onnx, shipped with the Keras model
    as the artifact, passes Keras parity on 4.5.5; opset 11 (the Keras-level remedy, --cvdnn-fix) does too."""
    copy_model(models["cnn"], "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-target=opencv==4.5.5", "-v")
    checks = run.checks()
    assert checks["load"]["outcome"] == "passed"  # the installed OpenCV 5
    assert checks["parity[keras-cv2dnn]"]["outcome"] == "passed"
    load = checks["load[opencv-4.5.5]"]
    assert load["outcome"] == "failed"
    assert "(op Squeeze) cannot be imported" in load["message"] and "Keras layer 'gap'" in load["message"]
    assert "remedy: the ONNX rewrite 'squeeze-as-reshape'" in load["message"]
    assert "matches keras at batch 1 and 4" in load["message"] and load["data"]["remedies"] == []
    fixed = run_cvdnn("--cvdnn-model=m.keras", f"--cvdnn-onnx={load['data']['fixed_onnx']}",
                      "--cvdnn-target=opencv==4.5.5", "-k", "4.5.5")
    assert fixed.ret == 0, fixed.text
    assert fixed.checks()["parity[keras-cv2dnn@opencv-4.5.5]"]["data"]["max_abs"] < 1e-4
    assert checks["ops[opencv-4.5.5]"]["outcome"] == "failed"
    assert checks["parity[keras-cv2dnn@opencv-4.5.5]"]["outcome"] == "skipped"
    assert "targets  local: PARTIAL (10 passed, 1 skipped)" in run.text and "opencv-4.5.5: FAIL" in run.text
    # and the remedy, applied, passes on 4.5.5
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-target=opencv==4.5.5", "--cvdnn-opset=11", "-k", "4.5.5")
    assert run.ret == 0, run.text
    assert run.checks()["parity[keras-cv2dnn@opencv-4.5.5]"]["data"]["max_abs"] < 1e-4


@pytest.fixture(scope="session")
def mobilenet_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_application(tmp_path_factory, "MobileNetV2", 2, 96, "mobilenetv2.keras")


@pytest.mark.zoo
def test_mobilenetv2_opset11_on_4_5_5_names_clip_and_relu6(
        run_cvdnn: Callable[..., Run], mobilenet_v2: Path, copy_model: Callable[..., Path],
        opencv_4_5_5: Path) -> None:
    copy_model(mobilenet_v2, "mnv2.keras")
    run = run_cvdnn("--cvdnn-model=mnv2.keras", "--cvdnn-target=opencv==4.5.5", "--cvdnn-opset=11",
                    "-k", "4.5.5 and (load or ops)")
    load = run.checks()["load[opencv-4.5.5]"]
    assert load["outcome"] == "failed", run.text
    assert load["data"]["op_type"] == "Clip"
    assert "relu" in (load["data"]["keras_layer"] or "").lower()
    assert "(op Clip) cannot be imported" in load["message"]
    # the ONNX rewrite first (it was the Keras search's opset 10, FIELD.md: min/max as attributes, which an ONNX
    # source cannot have): ReLU6 as HardSigmoid, verified on 4.5.5; no re-conversion
    works = [r for r in load["data"]["onnx_remedies"] if r["outcome"] == "works"]
    assert works and "clip-as-hardsigmoid" in works[0]["candidate"], load["data"]["onnx_remedies"]
    assert f"remedy: the ONNX rewrite '{works[0]['candidate']}'" in load["message"]
    assert load["data"]["remedies"] == [] and Path(load["data"]["fixed_onnx"]).is_file()
    ops = run.checks()["ops[opencv-4.5.5]"]
    assert any(u["op_type"] == "Clip" for u in ops["data"]["unsupported"])


def test_target_that_is_not_a_python_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--cvdnn-target=/nonexistent/python")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is not a target; use opencv==X.Y.Z or the path of a Python*"])


def test_python_interpreter_target(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                   copy_model: Callable[..., Path]) -> None:
    copy_model(models["cnn"], "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", f"--cvdnn-target={sys.executable}", "-k", "parity or determinism")
    assert run.ret == 0, run.text
    assert run.checks()[f"parity[keras-cv2dnn@{sys.executable}]"]["outcome"] == "passed"
    assert run.checks()[f"determinism[{sys.executable}]"]["outcome"] == "passed"


@pytest.fixture(scope="session")
def convnext_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_application(tmp_path_factory, "ConvNeXtTiny", 3, 64, "convnext.keras")


@pytest.mark.zoo
def test_convnext_invalid_graph_names_the_node_and_layer(run_cvdnn: Callable[..., Run], convnext_tiny: Path,
                                                         copy_model: Callable[..., Path]) -> None:
    """FIELD.md: tf2onnx leaves StatefulPartitionedCall nodes in ConvNeXtTiny without raising."""
    copy_model(convnext_tiny)
    run = run_cvdnn("--cvdnn-model=convnext.keras", "-k", "convert or load")
    checks = run.checks()
    convert = checks["convert"]
    assert convert["outcome"] == "failed"
    assert "has op type 'StatefulPartitionedCall', which is not an ONNX operator" in convert["message"]
    assert "it comes from the Keras layer 'convnext_tiny_stage_0_block_0_depthwise_conv'" in convert["message"]
    assert convert["data"]["node"].endswith("/StatefulPartitionedCall")
    assert "also tried tf2onnx.convert.from_function" in run.text
    assert checks["load"]["outcome"] == "skipped" and checks["load"]["message"].startswith("convert failed:")
    assert run.report["models"][0]["diagnosis"]["failing_stage"] == "convert"


@pytest.mark.zoo
def test_densenet121_opset13_on_4_5_5_names_squeeze_and_an_onnx_rewrite_fixes_it(
        run_cvdnn: Callable[..., Run], densenet_small: Path, copy_model: Callable[..., Path],
        opencv_4_5_5: Path) -> None:
    copy_model(densenet_small)
    run = run_cvdnn("--cvdnn-model=densenet121.keras", "--cvdnn-target=opencv==4.5.5", "-k", "load")
    checks = run.checks()
    assert checks["load"]["outcome"] == "passed"  # OpenCV 5 loads it
    load = checks["load[opencv-4.5.5]"]
    assert load["outcome"] == "failed"
    assert load["data"]["op_type"] == "Squeeze" and "(op Squeeze) cannot be imported" in load["message"]
    assert load["data"]["keras_layer"] == "avg_pool"
    assert load["data"]["remedies"] == []  # the ONNX rewrite works: no Keras-level re-conversion
    assert (f"remedy: the ONNX rewrite 'squeeze-as-reshape' on node(s) '{load['data']['node']}' loads; matches keras "
            "at batch 1 and 4") in load["message"]


def test_opencv_side_divergence_is_localised_in_cv2(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """A real OpenCV/onnxruntime disagreement (Resize nearest_mode=ceil) is blamed on OpenCV and localised."""
    from conftest import resize_ceil_onnx

    resize_ceil_onnx(pytester.path / "upsample.onnx")
    run = run_cvdnn("--cvdnn-model=upsample.onnx", "-k", "parity")
    check = run.checks()["parity[onnxruntime-cv2dnn]"]
    assert check["outcome"] == "failed", run.text
    assert check["message"].startswith("OpenCV's importer/runtime computes the ONNX graph differently")
    first = check["data"]["first_divergent"]
    assert first["node"] == "block2/upsample" and first["op_type"] == "Resize"
    assert first["tensors_checked"] == 2  # block1/conv agreed, the Resize did not
    repro = Path(check["data"]["repro"])
    proc = subprocess.run([sys.executable, "repro.py"], cwd=repro, capture_output=True, text=True, timeout=120)
    error = float(proc.stdout.strip().splitlines()[-1].split(":")[-1])
    assert error > 0.1, proc.stdout  # the repro reproduces the OpenCV divergence on its own


def test_fix_option_adds_a_remedies_item(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                         copy_model: Callable[..., Path], tmp_path: Path) -> None:
    copy_model(models["cnn"], "m.keras")
    cache = tmp_path / "cache"
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-fix", "-k", "remedies", cache=cache)
    assert run.ret == 0, run.text
    check = run.checks()["remedies"]
    tried = {(r["opset"], r["layout"]) for r in check["data"]["remedies"]}
    assert tried == {(o, lay) for o in (17, 13, 11, 10) for lay in ("nchw", "nhwc")}
    assert all(r["outcome"] == "works" for r in check["data"]["remedies"])  # OpenCV 5 takes every variant
    assert "Ship this one: --cvdnn-opset=13 --cvdnn-layout=nchw" in check["message"]  # the current settings work
    _ship_this_one_runs_as_printed(check["message"], models["cnn"])
    # a warm run replays the search (same model, options, inputs, tools and OpenCV) instead of loading eight
    # variants again: shown by editing what it remembered; other options search again
    from pytest_cvdnn.cache import Cache

    (entry,) = (cache / "remedies").iterdir()
    remembered = Cache(cache).get_json("remedies", entry.name)
    assert remembered is not None
    remembered["remedies"][0]["detail"] = "max abs error 0.000042 (replayed)"
    Cache(cache).put_json(remembered, "remedies", entry.name)  # (an edit by hand would fail its checksum)
    warm = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-fix", "-k", "remedies", cache=cache)
    assert "(max abs error 0.000042 (replayed))" in warm.checks()["remedies"]["message"]
    other = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-fix", "-k", "remedies", "--cvdnn-atol=2e-4", cache=cache)
    assert "replayed" not in other.checks()["remedies"]["message"]
    assert len(list((cache / "remedies").iterdir())) == 2


def _ship_this_one_runs_as_printed(message: str, keras_path: Path) -> None:
    """The tf2onnx call after "Ship this one: ..., i.e." converts the model as pasted; cv2.dnn loads the result
    and it matches Keras on the same input."""
    import tempfile

    import cv2
    import keras
    import tensorflow as tf
    import tf2onnx

    code = message.split("Ship this one: ", 1)[1].split(", i.e. ", 1)[1].split("; ")[0].split("\n")[0]
    assert code.startswith("tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec(")
    model = keras.models.load_model(keras_path)
    with tempfile.TemporaryDirectory() as tmp:
        code = code.replace("output_path='model.onnx'", f"output_path={str(Path(tmp) / 'model.onnx')!r}")
        exec(code, {"model": model, "tf": tf, "tf2onnx": tf2onnx})  # noqa: S102 - what a user pastes
        net = cv2.dnn.readNetFromONNX(str(Path(tmp) / "model.onnx"))
        assert not net.empty()
        x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
        net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if "inputs_as_nchw" in code else x)
        got = net.forward()
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-4, rtol=1e-3)


CONVERSION_FACTORIES = """
def cumsum():  # tf2onnx converts CumSum from opset 11: at opset 10 it leaves the TensorFlow node
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    inp = keras.Input((8,))
    x = keras.layers.Dense(8, name="dense")(inp)
    return keras.Model(inp, keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=1), name="running")(x))


def convnext_like(advised=False):  # ConvNeXt's blocks: a grouped Conv2D and exact gelu (tf2onnx: neither)
    import math

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(5)
    inp = keras.Input((12, 12, 8))
    if advised:  # what the Fix says
        x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(inp)
        x = keras.layers.Dense(8, name="pointwise")(x)
        x = keras.layers.Lambda(lambda t: 0.5 * t * (1.0 + tf.math.erf(t / math.sqrt(2.0))), name="gelu")(x)
    else:
        x = keras.layers.Conv2D(8, 3, groups=8, padding="same", name="depthwise")(inp)
        x = keras.layers.Dense(8, name="pointwise")(x)
        x = keras.layers.Activation("gelu", name="gelu")(x)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D(name="pool")(x))


def advised():
    return convnext_like(advised=True)


def lgamma():  # no opset has an ONNX Lgamma
    import keras
    import tensorflow as tf

    inp = keras.Input((8,))
    x = keras.layers.Dense(8, name="dense")(inp)
    return keras.Model(inp, keras.layers.Lambda(lambda t: tf.math.lgamma(t), name="gamma")(x))
"""


def test_conversion_failure_searches_the_opsets_and_ships_the_one_that_works(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Issue 15, item 4: an invalid converted graph (a TensorFlow-only node) gets the opset search; the advice
    is what the search verified, and a hand-made conversion at that opset agrees (tf2onnx + cv2.dnn, no plugin)."""
    pytester.makepyfile(factories=CONVERSION_FACTORIES)
    run = run_cvdnn("--cvdnn-model=factories:cumsum", "--cvdnn-opset=10", "-k", "convert", cache=tmp_path / "c")
    convert = run.checks()["convert"]
    assert convert["outcome"] == "failed"
    assert "node 'functional_1/running_1/Cumsum' has op type 'Cumsum'" in convert["message"]
    assert "remedy: --cvdnn-opset=17 --cvdnn-layout=nchw converts it, and the result loads and matches Keras" in \
        convert["message"]
    assert "Fix: convert at opset 17" in convert["message"] and "try another --cvdnn-opset" not in convert["message"]
    assert [(r["opset"], r["outcome"]) for r in convert["data"]["remedies"]] == [(17, "works")]
    diagnosis = run.report["models"][0]["diagnosis"]
    assert diagnosis["failing_stage"] == "convert" and diagnosis["op_type"] == "Cumsum"
    assert diagnosis["keras_layer"] == "running" and diagnosis["remedies"][0]["outcome"] == "works"
    # the advice, taken: the gate passes
    advised = run_cvdnn("--cvdnn-model=factories:cumsum", "--cvdnn-opset=17", cache=tmp_path / "c")
    assert advised.ret == 0, advised.text
    # by hand: tf2onnx at opsets 10 and 17 and onnx.checker in one process (TensorFlow), cv2.dnn in this one
    script = tmp_path / "hand.py"
    script.write_text(f"""
import sys; sys.path.insert(0, {str(pytester.path)!r})
import numpy as np, onnx, tensorflow as tf, tf2onnx
from factories import cumsum
model = cumsum()
x = np.random.default_rng(0).normal(size=(1, 8)).astype(np.float32)
np.save({str(tmp_path / "x.npy")!r}, x)
np.save({str(tmp_path / "y.npy")!r}, model(x).numpy())
for opset in (10, 17):
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec((None, 8), tf.float32),), opset=opset)
    try:
        onnx.checker.check_model(proto)
    except Exception:
        print(opset, "invalid"); continue
    onnx.save(proto, {str(tmp_path)!r} + f"/{{opset}}.onnx")
    print(opset, "valid")
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.stdout.split("\n")[:2] == ["10 invalid", "17 valid"], out.stdout + out.stderr
    import cv2

    net = cv2.dnn.readNetFromONNX(str(tmp_path / "17.onnx"))
    net.setInput(np.load(tmp_path / "x.npy"))
    assert np.abs(net.forward() - np.load(tmp_path / "y.npy")).max() < 1e-5


def test_conversion_failure_at_every_opset_names_the_layer_and_how_to_change_it(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(factories=CONVERSION_FACTORIES)
    run = run_cvdnn("--cvdnn-model=factories:lgamma", "-k", "convert", cache=tmp_path / "c")
    convert = run.checks()["convert"]
    assert convert["outcome"] == "failed"
    assert "no opset tried (17, 13, 11, 10; tf2onnx.convert.from_keras and from_function each) converts it" in \
        convert["message"]
    assert ("Fix: change the Keras layer 'gamma' (Lambda): rewrite its function without the TensorFlow op 'Lgamma'"
            in convert["message"])
    assert "try another --cvdnn-opset" not in convert["message"]
    assert [(r["opset"], r["outcome"], r["op_type"]) for r in convert["data"]["remedies"]] == [
        (17, "convert failed", "Lgamma"), (11, "convert failed", "Lgamma"), (10, "convert failed", "Lgamma")]
    assert "No variant converts: opset 17 NCHW, 11 NCHW, 10 NCHW stop at Lgamma" in run.text
    # remembered: a warm run says the same without TensorFlow
    warm = run_cvdnn("--cvdnn-model=factories:lgamma", "-k", "convert", cache=tmp_path / "c")
    assert warm.checks()["convert"]["message"] == convert["message"]
    assert warm.checks()["convert"]["data"]["remedies"] == convert["data"]["remedies"]


def test_conversion_failure_of_convnext_blocks_names_each_layer_and_the_change_that_converts(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester, tmp_path: Path) -> None:
    """ConvNeXtTiny does not convert (FIELD.md): its grouped Conv2D leaves a StatefulPartitionedCall and its exact
    gelu an Erfc.  The verdict names both op types with their layers and says what to change; the model changed
    that way passes the whole gate."""
    pytester.makepyfile(factories=CONVERSION_FACTORIES)
    run = run_cvdnn("--cvdnn-model=factories:convnext_like", "-k", "convert", cache=tmp_path / "c")
    message = run.checks()["convert"]["message"]
    assert "op types: Erfc in layer 'gelu', StatefulPartitionedCall in layer 'depthwise'" in message
    assert "change the Keras layer 'depthwise' (Conv2D): a Conv2D with groups > 1" in message
    assert "keras.layers.DepthwiseConv2D" in message
    assert "change the Keras layer 'gelu' (Activation): Keras 3's exact gelu computes erfc" in message
    assert "0.5 * x * (1 + erf(x / sqrt(2)))" in message
    fixed = run_cvdnn("--cvdnn-model=factories:advised", cache=tmp_path / "c")
    assert fixed.ret == 0, fixed.text
    assert fixed.checks()["parity[keras-cv2dnn]"]["outcome"] == "passed"
