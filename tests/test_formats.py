"""Other deployment formats (TFLite, frozen graph) and outputs in NHWC vs cv2.dnn's NCHW."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import ROOT, Run, side_by_side
from test_cache import TF_PROBE, _conversions


def _failed(checks: dict) -> dict:
    return {n: c["message"] for n, c in checks.items() if c["outcome"] == "failed"}


def _has_reader(version: str, fmt: str) -> bool:
    """OpenCV's readers: readNetFromTFLite arrived in 4.8, readNetFromTensorflow was removed in 5.1."""
    here = tuple(int(v) for v in version.split(".")[:2])
    return here >= (4, 8) if fmt == "tflite" else here < (5, 1)


def _tflite_lacks_ops(version: str) -> bool:
    """OpenCV 4.8's TFLite importer has no MEAN or SOFTMAX (measured on 4.8.1; 4.12 and 5.x have them)."""
    return tuple(int(v) for v in version.split(".")[:2]) == (4, 8)


def _tflite_logits_off(version: str) -> bool:
    """OpenCV 4.12 runs the example's TFLite with one logit off by 0.072 (1 %; the same on every sample, the
    saturated probabilities agree): measured here, a real disagreement the parity item reports."""
    return tuple(int(v) for v in version.split(".")[:2]) == (4, 12)


@pytest.mark.zoo  # (three formats on three OpenCV versions: ~140 s)
def test_formats_on_three_opencv_versions(run_cvdnn: Callable[..., Run], opencv_4_5_5: Path,
                                          pytester: pytest.Pytester, tmp_path: Path) -> None:
    """One session: which artifact works on which OpenCV (FIELD.md: opset-13 ONNX fails on 4.5.5, 5.1 has no
    TensorFlow importer, 4.5.5 no TFLite importer).  An OpenCV without an importer skips those items, saying why."""
    import cv2

    cache = tmp_path / "cache"
    (pytester.path / "tiny_cnn.keras").write_bytes((ROOT / "examples" / "tiny_cnn.keras").read_bytes())
    pytester.makeconftest(TF_PROBE)
    other = "5.0.0" if cv2.__version__.startswith("5.1") else "5.1.0"
    side_by_side(other)
    args = ("--cvdnn-model=tiny_cnn.keras", "--cvdnn-format=tflite,tf", "--cvdnn-target=opencv==4.5.5",
            f"--cvdnn-target=opencv=={other}")
    run = run_cvdnn(*args, cache=cache)
    checks = run.checks()
    for version, suffix in ((cv2.__version__, ""), ("4.5.5", "@opencv-4.5.5"), (other, f"@opencv-{other}")):
        for fmt in ("tflite", "tf"):
            load = checks[f"{fmt}:" + (f"load[{suffix[1:]}]" if suffix else "load")]
            parity = checks[f"{fmt}:parity[keras-cv2dnn{suffix}]"]
            if fmt == "tflite" and _tflite_lacks_ops(version):  # load fails, naming the op it lacks
                assert load["outcome"] == "failed", (version, load["message"])
                assert "Unsupported operator type MEAN" in load["message"] and "Fix:" in load["message"]
                assert parity["outcome"] == "skipped"
            elif fmt == "tflite" and _tflite_logits_off(version):
                assert load["outcome"] == "passed" and parity["outcome"] == "failed", (version, parity["message"])
                bad = [o for o in parity["data"]["outputs"] if not o["ok"]]
                assert [o["name"] for o in bad] == ["probs (logits)"] and 0.05 < bad[0]["max_abs"] < 0.1, bad
            elif _has_reader(version, fmt):  # the artifact loads and matches Keras, logits included
                assert load["outcome"] == "passed", (version, fmt, load["message"])
                assert parity["outcome"] == "passed", (version, fmt, parity["message"])
                assert [o["name"] for o in parity["data"]["outputs"]] == ["probs", "probs (logits)"]
            else:  # skipped with the reason, and what to do instead
                assert load["outcome"] == parity["outcome"] == "skipped", (version, fmt, load["message"])
                reader = "readNetFromTFLite" if fmt == "tflite" else "readNetFromTensorflow"
                assert f"has no cv2.dnn.{reader}" in load["message"], load["message"]
                if fmt == "tf":
                    assert "OpenCV 5.1 removed its TensorFlow importer" in load["message"]
                    assert "check the frozen graph on a 4.x target" in load["message"]
                else:
                    assert "(it arrived in OpenCV 4.8)" in load["message"] and "ship the ONNX" in load["message"]
                    assert "arrived" not in checks["tf:" + (f"load[{suffix[1:]}]" if suffix else "load")]["message"]
    assert "tensor_content" in checks["tf:convert"]["message"]  # the rewrite OpenCV's TF importer needs
    assert checks["load[opencv-4.5.5]"]["outcome"] == "failed"  # opset-13 Squeeze
    assert "opencv-4.5.5 tf: OK" in run.text
    assert {e["artifact"] for e in _conversions(cache)} >= {"model.onnx", "model.tflite", "frozen_graph.pb"}

    warm = run_cvdnn(*args, cache=cache)
    converted = len(_conversions(cache))
    assert warm.checks()["tflite:convert"]["message"].startswith("cache hit")
    assert json.loads((pytester.path / "tf-imported-main.json").read_text()) is False
    assert len(_conversions(cache)) == converted
    assert _failed(warm.checks()).keys() == _failed(checks).keys()


def test_segmentation_map_in_every_format(run_cvdnn: Callable[..., Run], segmenter: Path,
                                          copy_model: Callable[..., Path]) -> None:
    copy_model(segmenter)
    run = run_cvdnn("--cvdnn-model=segmenter.keras", "--cvdnn-format=tflite,tf")
    checks = run.checks()
    onnx = {n: c for n, c in checks.items() if ":" not in n}
    assert not _failed(onnx), _failed(onnx)  # tf2onnx keeps the NHWC output: the ONNX deployment is right
    import cv2

    if not _has_reader(cv2.__version__, "tflite"):  # OpenCV < 4.8: skipped, saying why
        assert checks["tflite:output_spec"]["outcome"] == "skipped"
        assert "has no cv2.dnn.readNetFromTFLite" in checks["tflite:load"]["message"]
        return
    if _tflite_lacks_ops(cv2.__version__):  # 4.8: the importer names the op it lacks
        assert checks["tflite:load"]["outcome"] == "failed"
        assert "Unsupported operator type SOFTMAX" in checks["tflite:load"]["message"]
        return
    # OpenCV's TFLite importer returns the map in NCHW and takes the channel softmax over another axis:
    # the logits agree, the probabilities do not, and the item says so
    spec = checks["tflite:output_spec"]
    assert spec["outcome"] == "passed" and "NCHW (1, 4, 32, 32)" in spec["message"]
    parity = checks["tflite:parity[keras-cv2dnn]"]
    assert parity["outcome"] == "failed"
    assert "the logits agree, only the final Softmax of 'mask' differs" in parity["message"]
    assert "apply the softmax yourself" in parity["message"]
    # the frozen graph crashed OpenCV 5.0's importer here: it must fail one item, not the session; 5.1 has no
    # TensorFlow importer at all: skipped with the reason
    load = checks["tf:load"]
    assert load["outcome"] in ("passed", "failed", "skipped")
    if load["outcome"] == "failed":
        assert "frozen_graph.pb" in load["message"] and "Fix:" in load["message"]
    if load["outcome"] == "skipped":
        assert "has no cv2.dnn.readNetFromTensorflow" in load["message"]
    assert run.report is not None and "Fatal Python error" not in run.text


def test_an_onnx_with_nchw_outputs_is_compared_after_transposing(
    run_cvdnn: Callable[..., Run], segmenter: Path, copy_model: Callable[..., Path], pytester: pytest.Pytester,
) -> None:
    import tensorflow as tf
    import tf2onnx

    import keras

    copy_model(segmenter)
    model = keras.models.load_model(segmenter)
    sig = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="image"),)
    onnx_path = pytester.path / "segmenter_nchw.onnx"
    tf2onnx.convert.from_keras(model, input_signature=sig, opset=13, output_path=str(onnx_path),
                               inputs_as_nchw=["image"], outputs_as_nchw=[model.output_names[0]])
    run = run_cvdnn("--cvdnn-model=segmenter.keras", f"--cvdnn-onnx={onnx_path.name}", "-k", "parity or output_spec")
    checks = run.checks()
    assert not _failed(checks), _failed(checks)
    assert "where Keras has NHWC" in checks["output_spec"]["message"]
    notes = checks["parity[keras-cv2dnn]"]["data"]["notes"]
    assert any("compared after transposing (0, 2, 3, 1)" in n for n in notes), notes


def test_unknown_format_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--cvdnn-format=onnx,coreml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown format coreml*tflite*"])


def test_constants_are_rewritten_as_tensor_content() -> None:
    import tensorflow as tf

    from pytest_cvdnn.formats import constants_as_tensor_content

    graph = tf.Graph()
    with graph.as_default():
        tf.constant(0.5, name="scalar")
        tf.constant(np.arange(3, dtype=np.float32), name="vector")
        tf.constant("text", name="string")
    graph_def = graph.as_graph_def()
    before = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph_def.node}
    assert constants_as_tensor_content(graph_def) >= 1
    for node in graph_def.node:
        tensor = node.attr["value"].tensor
        if node.name != "string":
            assert tensor.tensor_content and not tensor.float_val
        np.testing.assert_array_equal(tf.make_ndarray(tensor), before[node.name])


_HAND_EXPORT = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
model = keras.saving.load_model(sys.argv[1])
fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec((1, 8), tf.float32))
frozen = convert_variables_to_constants_v2(fn)
open(sys.argv[2] + "/hand.pb", "wb").write(frozen.graph.as_graph_def().SerializeToString())
open(sys.argv[2] + "/hand.tflite", "wb").write(tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert())
"""

_HAND_RUN = r"""
import json, sys
import cv2, numpy as np
x = np.load(sys.argv[2] + "/x.npy")
pb = cv2.dnn.readNetFromTensorflow(sys.argv[2] + "/hand.pb") if sys.argv[1] == "pb" else None
net = pb if pb is not None else cv2.dnn.readNetFromTFLite(sys.argv[2] + "/hand.tflite")
names = list(net.getUnconnectedOutLayersNames())
net.setInput(x)
print(json.dumps({"names": names, "outs": [o.tolist() for o in net.forward(names)]}))
"""


@pytest.fixture(scope="session")
def deep_and_shallow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two outputs of the same shape, the first computed last: OpenCV's TensorFlow importer lists them in the
    other order, under its own layer names (no Identity nodes)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    x = keras.Input((8,), name="x")
    h = x
    for k in range(3):
        h = layers.Dense(4, activation="relu", name=f"d{k}")(h)
    model = keras.Model(x, [layers.Dense(4, name="deep")(h), layers.Dense(4, name="shallow")(x)])
    path = tmp_path_factory.mktemp("outputs") / "deep_and_shallow.keras"
    model.save(path)
    return path


@pytest.mark.zoo  # (two OpenCV targets, two formats and a hand export: ~65 s)
def test_artifact_outputs_are_paired_by_name(run_cvdnn: Callable[..., Run], deep_and_shallow: Path,
                                             copy_model: Callable[..., Path], pytester: pytest.Pytester) -> None:
    import subprocess
    import sys

    import keras

    old, new = side_by_side("4.12.0"), side_by_side("5.0.0")
    copy_model(deep_and_shallow)
    run = run_cvdnn("--cvdnn-model=deep_and_shallow.keras", "--cvdnn-format=tf,tflite",
                    "--cvdnn-target=opencv==4.12.0", "--cvdnn-target=opencv==5.0.0", "-k", "4.12.0 or 5.0.0")
    checks = run.checks()
    # hand script: the same export without the plugin, run by each OpenCV directly
    subprocess.run([sys.executable, "-c", _HAND_EXPORT, str(deep_and_shallow), str(pytester.path)], check=True)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 8)).astype(np.float32)
    np.save(pytester.path / "x.npy", x)
    want = [np.asarray(o) for o in keras.saving.load_model(deep_and_shallow)(x)]

    def hand(target: Path, kind: str) -> dict:
        out = subprocess.run([sys.executable, "-c", _HAND_RUN, kind, str(pytester.path)], check=True,
                             capture_output=True, text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
        return json.loads(out.stdout.strip().splitlines()[-1])

    # OpenCV 4.12 lists the frozen graph's outputs shallow first, named after its own layers: paired in that
    # order they are wrong (the cosine of the pairs is far from 1), by their names they agree with Keras
    frozen = hand(old, "pb")
    assert [n.split("/")[1] for n in frozen["names"]] == ["shallow_1", "deep_1"]
    got = [np.asarray(o, np.float32) for o in frozen["outs"]]
    assert not np.allclose(got[0], want[0], atol=1e-3) and np.allclose(got[1], want[0], atol=1e-4)
    parity = checks["tf:parity[keras-cv2dnn@opencv-4.12.0]"]
    assert parity["outcome"] == "passed", parity["message"]
    # OpenCV 5.0's TFLite importer gives one output of the two: a failure that says so, with no error numbers
    tflite = hand(new, "tflite")
    assert len(tflite["names"]) == 1
    spec = checks["tflite:output_spec[opencv-5.0.0]"]
    assert spec["outcome"] == "failed"
    assert "cv2dnn returns 1 output(s), keras 2" in spec["message"]
    assert "OpenCV 5.0.0's TFLite importer does not give this model's outputs" in spec["message"]
    assert "--cvdnn-onnx" not in spec["message"]
    counted = checks["tflite:parity[keras-cv2dnn@opencv-5.0.0]"]
    assert counted["outcome"] == "failed"
    assert counted["message"].startswith("cv2dnn returns 1 output(s) where keras returns 2")
    line = next(ln for ln in run.text.splitlines() if "tflite:keras-cv2dnn@opencv-5.0.0" in ln)
    assert "1 output(s) where the reference has 2" in line and "inf" not in line
