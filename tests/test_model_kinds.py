"""Real models of every kind a user brings (issue: grayscale and non-image inputs, subclassed and legacy models,
TFLite sources), built here with seeded weights, each verdict compared with a hand script that does the same work
with tf2onnx / the TFLite interpreter / cv2.dnn directly, without the plugin.

One plugin session runs every model (one TensorFlow import); the cases that need a simulated fault (a SavedModel
whose TensorFlow 2 loading fails, as Keras-2 ones do) run in this process.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FACTORIES = '''
import numpy as np
import keras


class RNet(keras.Model):
    """A subclassed model: no functional inputs/outputs (an MTCNN-like two-head net)."""

    def __init__(self):
        super().__init__(name="rnet")
        self.c1 = keras.layers.Conv2D(8, 3, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.cls = keras.layers.Dense(2, activation="softmax")
        self.box = keras.layers.Dense(4)

    def call(self, x, training=False):
        h = self.pool(self.c1(x))
        return self.cls(h), self.box(h)


def built():
    model = RNet()
    model.build((None, 24, 24, 3))
    model.set_weights([np.random.default_rng(k).normal(0, 0.3, w.shape).astype("float32")
                       for k, w in enumerate(model.get_weights())])
    return model


def unbuilt():
    return RNet()
'''


def _tflite(model: Any, path: Path, int8: bool) -> Path:
    """A batch-1 TFLite of ``model`` (frozen, as a deployment exports it); ``int8``: fully quantized with a
    representative dataset, int8 in and out."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shape = (1, *model.inputs[0].shape[1:])
    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(fn.get_concrete_function())])
    if int8:
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.uniform(0, 255, shape).astype(np.float32)] for _ in range(16))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    import warnings

    with warnings.catch_warnings():  # TFLiteConverter's deprecation notes and "no input statistics"
        warnings.simplefilter("ignore")
        path.write_bytes(conv.convert())
    return path


def _tf1_savedmodel(folder: Path) -> Path:
    """A SavedModel written by the TF1 builder, with an optimizer's slot variables (as Keras 2 left them)."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    rng = np.random.default_rng(0)
    with graph.as_default(), tf1.Session(graph=graph) as sess:
        x = tf1.placeholder(tf.float32, (None, 16, 16, 3), name="image")
        w = tf1.get_variable("w", initializer=rng.normal(0, 0.1, (3, 3, 3, 4)).astype("float32"))
        h = tf.nn.relu(tf.nn.conv2d(x / 255.0, w, 1, "SAME"))
        logits = tf.matmul(tf.reduce_mean(h, axis=[1, 2]),
                           tf1.get_variable("w2", initializer=rng.normal(0, 3.0, (4, 3)).astype("float32")))
        probs = tf.nn.softmax(logits, name="probs")
        tf1.train.AdamOptimizer(0.01).minimize(tf.reduce_mean(logits ** 2))
        sess.run(tf1.global_variables_initializer())
        builder = tf1.saved_model.Builder(str(folder))
        sig = tf1.saved_model.predict_signature_def({"image": x}, {"probs": probs, "logits": logits})
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig})
        builder.save()
    return folder


@pytest.fixture(scope="session")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import keras

    folder = tmp_path_factory.mktemp("kinds")
    keras.utils.set_random_seed(7)
    # a legacy-format (.h5) grayscale classifier that normalises its input (Rescaling): 48x40x1
    inp = keras.Input((48, 40, 1), name="face")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="norm")(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(7, activation="softmax", name="emotion")(x)
    keras.Model(inp, out, name="emotion_net").save(folder / "gray_legacy.h5")
    # a non-image (1-D) input
    inp = keras.Input((40,), name="features")
    out = keras.layers.Dense(3)(keras.layers.Dense(16, activation="relu")(inp))
    keras.Model(inp, out, name="tabular").save(folder / "vector.keras")
    # TFLite files: float and fully int8-quantized, from one small classifier
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    small = keras.Model(inp, keras.layers.Dense(5, activation="softmax")(x), name="small")
    keras.utils.set_random_seed(8)
    other = keras.models.clone_model(small)  # same shapes, other weights: a wrong model for the parity
    _tflite(small, folder / "float.tflite", int8=False)
    _tflite(other, folder / "other.tflite", int8=False)
    _tflite(small, folder / "int8.tflite", int8=True)
    small.save(folder / "small.keras")
    # two image inputs: a gray one and a colour one (each input gets its own channel count)
    gray_in, colour_in = keras.Input((24, 24, 1), name="depth"), keras.Input((24, 24, 3), name="rgb")
    g = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255.0)(gray_in)))
    c = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255.0)(colour_in)))
    both = keras.layers.Dense(2)(keras.layers.Concatenate()([g, c]))
    keras.Model([gray_in, colour_in], both, name="rgbd").save(folder / "rgbd.keras")
    (folder / "kinds_factories.py").write_text(FACTORIES)
    _tf1_savedmodel(folder / "tf1_savedmodel")
    return {p.name: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def session_run(kinds: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> "Session":
    """One plugin session over every kind (a real subprocess)."""
    import subprocess

    work = tmp_path_factory.mktemp("kinds-run")
    for name in ("gray_legacy.h5", "vector.keras", "float.tflite", "int8.tflite", "kinds_factories.py", "rgbd.keras"):
        shutil.copyfile(kinds[name], work / name)
    report = work / "report.json"
    models = ["gray_legacy.h5", "vector.keras", "kinds_factories:built", "float.tflite", "int8.tflite", "rgbd.keras"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
                           f"--cvdnn-cache-dir={work / 'cache'}", f"--cvdnn-report={report}",
                           *(f"--cvdnn-model={m}" for m in models), "-q", f"--rootdir={work}"],
                          cwd=work, capture_output=True, text=True, timeout=900)

    return Session(proc.returncode, proc.stdout + proc.stderr, report)


class Session:
    """A plugin session's exit code, output and parsed JSON report."""

    def __init__(self, ret: int, text: str, report: Path) -> None:
        import json

        self.ret, self.text = ret, text
        self.report = json.loads(report.read_text()) if report.is_file() else None


def _checks(run: Session, label: str) -> dict[str, Any]:
    assert run.report is not None, run.text[-3000:]
    found = [m for m in run.report["models"] if m["model"] == label]
    assert found, (label, [m["model"] for m in run.report["models"]])
    return found[0]["checks"]


def _outcomes(checks: dict[str, Any]) -> dict[str, str]:
    return {name: c["outcome"] for name, c in checks.items()}


def test_grayscale_legacy_h5_gets_a_gray_blob_verified_against_keras(session_run: Session, kinds: dict[str, Path]) -> None:
    import cv2
    import keras
    from PIL import Image

    checks = _checks(session_run, "gray_legacy.h5")
    assert {n: o for n, o in _outcomes(checks).items() if o != "passed"} == {}, session_run.text[-3000:]
    assert "(?, 1, 48, 40)" in checks["input_spec"]["message"]
    assert "cv2.COLOR_BGR2GRAY" in checks["input_spec"]["message"]
    data = checks["preprocessing"]["data"]
    assert data["declared"]["channels"] == 1 and data["keras_resize_pixels"] <= 2.0
    # the hand script: blobFromImage on the gray photo against Keras' own grayscale pipeline
    # (load_img(color_mode="grayscale") is PIL's convert("L"); the model resizes nothing itself)
    from skimage import data as skdata

    model = keras.models.load_model(kinds["gray_legacy.h5"], compile=False)
    worst = 0.0
    for rgb in (skdata.astronaut(), skdata.chelsea(), skdata.coffee()):
        gray = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2GRAY)
        blob = cv2.dnn.blobFromImage(gray, 1.0, (40, 48), 0.0, False, False)
        pil = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32)[None, ..., None]
        ref = np.asarray(keras.ops.image.resize(pil, (48, 40), antialias=False))
        worst = max(worst, float(np.abs(blob.transpose(0, 2, 3, 1) - ref).max()))
        a, b = np.asarray(model(blob.transpose(0, 2, 3, 1))), np.asarray(model(ref))
        assert a.argmax() == b.argmax() and np.abs(a - b).max() < 0.02
    assert worst <= 2.0 and abs(worst - data["keras_resize_pixels"]) < 1e-3  # the plugin measured the same


def test_a_colour_spec_on_a_gray_model_is_named_as_the_channel_count(kinds: dict[str, Path], tmp_path: Path) -> None:
    from pytest_cvdnn.cache import Cache
    from pytest_cvdnn.checks import CheckFailed
    from pytest_cvdnn.deployment import build_deployment
    from pytest_cvdnn.settings import ModelSettings
    from pytest_cvdnn.spec import InputSpec

    settings = ModelSettings(model=str(kinds["gray_legacy.h5"]), spec=InputSpec.parse("none,channels=3"))
    dep = build_deployment(settings, Cache(tmp_path / "c"))
    with pytest.raises(CheckFailed) as err:
        dep.check("input_spec")
    assert "has 3 channel(s)" in str(err.value) and "takes 1" in str(err.value)
    assert "set channels=1" in str(err.value) and "IMREAD_GRAYSCALE" in str(err.value)
    with pytest.raises(CheckFailed) as err:
        dep.check("preprocessing")
    assert "the blob has 3 channel(s) but emotion_net takes 1" in str(err.value)
    assert "cv2.COLOR_BGR2GRAY" in str(err.value)


def test_a_gray_and_a_colour_input_get_their_own_channels(session_run: Session) -> None:
    checks = _checks(session_run, "rgbd.keras")
    assert {n: o for n, o in _outcomes(checks).items() if o != "passed"} == {}, session_run.text[-3000:]
    specs = {d["expected"]["name"]: d["spec"] for d in checks["input_spec"]["data"]["inputs"]}
    assert {name: spec["channels"] for name, spec in specs.items()} == {"depth": 1, "rgb": None}
    assert "(1, 1, 24, 24)" in checks["input_spec"]["message"] and "(1, 3, 24, 24)" in checks["input_spec"]["message"]
    pre = checks["preprocessing"]["data"]["inputs"]
    assert pre["depth"]["declared"]["channels"] == 1 and pre["depth"]["keras_resize_pixels"] <= 2.0
    assert pre["rgb"]["keras_resize_pixels"] <= 1.0


def test_a_non_image_input_is_checked_without_a_blob(session_run: Session, kinds: dict[str, Path]) -> None:
    import cv2
    import keras

    checks = _checks(session_run, "vector.keras")
    assert _outcomes(checks)["preprocessing"] == "skipped" and "no image input" in checks["preprocessing"]["message"]
    assert "non-image input" in checks["input_spec"]["message"]
    for name in ("parity[keras-cv2dnn]", "parity[keras-onnxruntime]", "batch", "determinism"):
        assert checks[name]["outcome"] == "passed", (name, checks[name]["message"])
    # the hand script: tf2onnx + cv2.dnn on a vector agree with Keras
    model = keras.models.load_model(kinds["vector.keras"], compile=False)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 40)).astype(np.float32)
    import tensorflow as tf
    import tf2onnx

    path = kinds["vector.keras"].with_name("vector_hand.onnx")
    tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec((None, 40), tf.float32, name="x"),),
                               opset=13, output_path=str(path))
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(x)
    assert np.abs(net.forward() - np.asarray(model(x))).max() < 1e-4


def test_a_subclassed_model_converts_from_its_built_shape(session_run: Session) -> None:
    checks = _checks(session_run, "kinds_factories:built")
    assert {n: o for n, o in _outcomes(checks).items() if o not in ("passed", "skipped")} == {}, session_run.text[-3000:]
    assert checks["parity[keras-cv2dnn]"]["outcome"] == "passed"
    assert len(checks["parity[keras-cv2dnn]"]["data"]["outputs"]) >= 2  # both heads compared


def test_an_unbuilt_subclassed_model_says_what_to_declare_and_the_failure_is_remembered(
        kinds: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_cvdnn.cache import Cache
    from pytest_cvdnn.deployment import build_deployment
    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.settings import ModelSettings

    monkeypatch.syspath_prepend(str(kinds["kinds_factories.py"].parent))
    cache = Cache(tmp_path / "c")
    settings = ModelSettings(model="kinds_factories:unbuilt", tf_helper=False)
    with pytest.raises(CvdnnError) as err:
        build_deployment(settings, cache).conversion
    text = str(err.value)
    assert "RNet (a subclassed keras.Model) whose input shape is not defined" in text
    assert "--cvdnn-input-shape=HxWxC" in text and "model.build((None, H, W, C))" in text
    with pytest.raises(CvdnnError) as again:  # a warm run does not load it again, and says the same
        build_deployment(settings, cache).conversion
    assert str(again.value) == text and "remembered from an earlier attempt" in str(again.value.details)
    declared = build_deployment(settings.__class__(model="kinds_factories:unbuilt", tf_helper=False,
                                                   input_shape=((24, 24, 3),)), cache)
    assert declared.check("parity[keras-cv2dnn]").data["outputs"]


def test_tflite_sources_float_and_int8_against_the_interpreter(session_run: Session, kinds: dict[str, Path]) -> None:
    import cv2

    from pytest_cvdnn.runners.tflite import TFLiteRunner

    checks = _checks(session_run, "float.tflite")
    assert set(checks) == {"convert", "load", "input_spec", "output_spec", "parity[tflite-cv2dnn]", "batch",
                           "determinism"}
    assert checks["parity[tflite-cv2dnn]"]["outcome"] == "passed", checks["parity[tflite-cv2dnn]"]["message"]
    assert "no conversion" in checks["convert"]["message"]
    # the hand script: the interpreter and readNetFromTFLite on one image
    x = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3)).astype(np.float32)
    ref = TFLiteRunner(kinds["float.tflite"]).infer([x])[0]
    net = cv2.dnn.readNetFromTFLite(str(kinds["float.tflite"]))
    net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    assert np.abs(net.forward() - ref).max() < 1e-5

    q = _checks(session_run, "int8.tflite")
    assert "int8 (scale" in q["convert"]["message"] and "zero point -128" in q["convert"]["message"]
    try:  # what cv2.dnn does with the int8 file, by hand
        cv2.dnn.readNetFromTFLite(str(kinds["int8.tflite"]))
        hand_loads = True
    except cv2.error:
        hand_loads = False
    if hand_loads:
        assert q["load"]["outcome"] == "passed", q["load"]["message"]
    else:  # every OpenCV 4.8 … 5.1 measured here: the importer rejects an int8 CONV_2D with a fused RELU
        assert q["load"]["outcome"] == "failed", q["load"]["message"]
        assert "TFLite operator" in q["load"]["message"] and "index 0 of the subgraph's" in q["load"]["message"]
        assert "CONV_2D" in q["load"]["message"] and "Fix:" in q["load"]["message"]


def test_the_int8_reference_dequantizes_to_the_float_model(kinds: dict[str, Path]) -> None:
    """The interpreter runner's quantize/dequantize: the int8 model's outputs, dequantized, are the float Keras
    model's within quantization error, and its raw int8 outputs are what the dequantized ones say."""
    import keras

    from pytest_cvdnn.runners.tflite import TFLiteRunner, dequantize, quantize

    x = np.random.default_rng(4).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    runner = TFLiteRunner(kinds["int8.tflite"])
    got = runner.infer([x])[0]
    want = np.asarray(keras.models.load_model(kinds["small.keras"], compile=False)(x))
    assert got.dtype == np.float32 and got.shape == want.shape == (3, 5)
    assert np.abs(got - want).max() < 0.03 and (got.argmax(1) == want.argmax(1)).mean() >= 2 / 3
    out = runner.meta["outputs"][0]
    assert np.array_equal(dequantize(quantize(got, out), out), got)  # on the output grid already


def test_tflite_parity_fails_on_a_wrong_reference(kinds: dict[str, Path], tmp_path: Path) -> None:
    from pytest_cvdnn.cache import Cache
    from pytest_cvdnn.deployment import build_deployment
    from pytest_cvdnn.runners.tflite import TFLiteRunner
    from pytest_cvdnn.settings import ModelSettings

    dep = build_deployment(ModelSettings(model=str(kinds["float.tflite"])), Cache(tmp_path / "c"))
    assert dep.parity("tflite", "cv2dnn").ok
    wrong = build_deployment(ModelSettings(model=str(kinds["float.tflite"])), Cache(tmp_path / "c2"))
    wrong._stages["tflite_runner"] = (True, TFLiteRunner(kinds["other.tflite"]))  # another model's outputs
    assert not wrong.parity("tflite", "cv2dnn").ok


def test_a_savedmodel_tensorflow_2_cannot_load_goes_through_the_tf1_loader(
        kinds: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras-2 SavedModels with optimizer slot variables fail tf.saved_model.load under TF 2.21 (reported by a
    user) while the TF1-compatible loader reads them; that failure cannot be produced with Keras 3, so it is
    simulated here, on a real TF1-builder SavedModel (with Adam slots)."""
    import tensorflow as tf

    from pytest_cvdnn.cache import Cache
    from pytest_cvdnn.deployment import build_deployment
    from pytest_cvdnn.settings import ModelSettings

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("simulated: the SavedModel's object graph cannot be restored")

    monkeypatch.setattr(tf.saved_model, "load", refuse)
    dep = build_deployment(ModelSettings(model=str(kinds["tf1_savedmodel"]), tf_helper=False), Cache(tmp_path / "c"))
    result = dep.check("parity[keras-cv2dnn]")
    assert sorted(o["name"] for o in result.data["outputs"])[:2] == ["logits", "probs"]
    assert dep.output_names[:2] == ["logits", "probs"] or sorted(dep.output_names) == ["logits", "probs"]
    # the hand script: the TF1 session itself on the same inputs
    tf1 = tf.compat.v1
    x = dep.inputs[0]
    with tf.Graph().as_default(), tf1.Session() as sess:
        meta = tf1.saved_model.loader.load(sess, ["serve"], str(kinds["tf1_savedmodel"]))
        sig = meta.signature_def["serving_default"]
        want = sess.run(sig.outputs["probs"].name, {sig.inputs["image"].name: x})
    got = dep.run("cv2dnn", per_sample=True)[dep.output_names.index("probs")]
    assert np.abs(got - want).max() < 1e-5


def test_damaged_tflite_and_same_bytes_in_two_files_are_reported_per_file(kinds: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """A remembered failure belongs to its file: two empty files (same content hash) of different kinds each
    get their own message; a truncated TFLite is named as such by the interpreter."""
    from pytest_cvdnn.cache import Cache
    from pytest_cvdnn.deployment import build_deployment
    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.settings import ModelSettings

    cache = Cache(tmp_path / "c")
    good = kinds["float.tflite"].read_bytes()
    cases = {"a.keras": (b"", "a.keras is empty (0 bytes)"), "b.h5": (b"", "b.h5 is not an HDF5 file"),
             "c.tflite": (b"", "c.tflite is not a TFLite model (empty)"),
             "d.tflite": (good[: len(good) // 2], "the TFLite interpreter cannot load"),
             "e.tflite": (b"\0" * 64, "e.tflite is not a TFLite model (no TFL3 identifier")}
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
    for attempt in range(2):  # the second time from the remembered failures
        for name, (content, expected) in cases.items():
            with pytest.raises(CvdnnError) as err:
                build_deployment(ModelSettings(model=str(tmp_path / name), tf_helper=False), cache).conversion
            assert expected in str(err.value) and name in str(err.value) and "Fix:" in str(err.value), str(err.value)
            assert ("remembered" in str(err.value.details)) == (attempt == 1 and not name.endswith(".tflite"))
    (tmp_path / "a.keras").write_bytes(b"not a zip")  # a changed file is tried again
    with pytest.raises(CvdnnError) as err:
        build_deployment(ModelSettings(model=str(tmp_path / "a.keras"), tf_helper=False), cache).conversion
    assert "is not a valid .keras archive" in str(err.value) and "remembered" not in str(err.value.details)
