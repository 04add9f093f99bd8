"""Shared fixtures: small real Keras models built once per session, a shared conversion cache.

Models are built here with real Keras (TensorFlow backend) and seeded weights; the
plugin runs in pytester *subprocesses* (``runpytest_subprocess``) wherever TensorFlow
is involved, so every plugin run is a real, fresh pytest session.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]


def _keras() -> Any:
    import keras

    return keras


def build_small_cnn(seed: int = 0, softmax: bool = True, size: int | None = 32, name: str = "small_cnn") -> Any:
    """Conv/BN/ReLU/pool/Dropout/Dense (+ final Softmax): the shape of most deployed classifiers."""
    keras = _keras()
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.5, name="drop")(x)
    x = layers.Dense(10, name="fc")(x)
    if softmax:
        x = layers.Softmax(name="probs")(x)
    model = keras.Model(inputs, x, name=name)
    # non-trivial BatchNorm statistics, so that inference vs training mode matters
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma * 1.5, beta + 0.1, rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2, var.shape)])
    return model


def convert(model: Any, path: Path, layout: str = "nchw", opset: int = 13, size: int = 32) -> Path:
    import tensorflow as tf
    import tf2onnx

    sig = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(model, input_signature=sig, opset=opset, output_path=str(path),
                               inputs_as_nchw=["image"] if layout == "nchw" else None)
    return path


def perturb_first_conv(src: Path, dst: Path, scale: float = 0.05) -> str:
    """Copy an ONNX model with one convolution's weights perturbed; returns that node's name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = inits[conv.input[1]]
    arr = numpy_helper.to_array(weight).copy()
    arr += np.random.default_rng(0).normal(0, scale, arr.shape).astype(arr.dtype)
    weight.CopyFrom(numpy_helper.from_array(arr, weight.name))
    onnx.save(model, str(dst))
    return conv.name


def mvn_onnx(path: Path) -> Path:
    """An ONNX model onnxruntime runs but cv2.dnn cannot import (MeanVarianceNormalization)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name="norm/mvn")
    model = helper.make_model(helper.make_graph([node], "mvn", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(autouse=True)
def _frameworks_outlive_pytester(request: pytest.FixtureRequest) -> None:
    """Import TensorFlow, Keras, tf2onnx, onnx and cv2 before a test that uses ``pytester`` starts.

    ``pytester`` restores ``sys.modules`` after each test that uses it, so a framework first imported
    inside such a test is dropped again, and importing onnx's C extension a second time aborts the
    process (seen under ``-n 2``: an xdist worker died importing onnx after test_formats.py).  (Autouse
    fixtures run before the others of their scope, so this runs before pytester takes its snapshot.)
    Tests without pytester import nothing here, and quick-tier tests with it (test_fuzz.py: ONNX and bundles
    only) import onnx and onnxruntime alone: the quick tier (``-m quick``) needs no TensorFlow.
    """
    if "pytester" not in request.fixturenames:
        return
    import cv2  # noqa: F401 - (re-imported after pytester dropped it, cv2.dnn loses its functions)
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    if request.node.get_closest_marker("quick") is not None:
        return
    import keras  # noqa: F401
    import tensorflow  # noqa: F401
    import tf2onnx  # noqa: F401


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real small models on disk, built once per session (and per xdist worker)."""
    out = tmp_path_factory.mktemp("models")
    cnn = build_small_cnn(seed=0)
    paths = {"cnn": out / "small_cnn.keras"}
    cnn.save(paths["cnn"])
    other = build_small_cnn(seed=7, name="other_cnn")
    paths["other"] = out / "other_cnn.keras"
    other.save(paths["other"])
    nosoft = build_small_cnn(seed=3, softmax=False, name="logits_cnn")
    paths["h5"] = out / "logits_cnn.h5"
    nosoft.save(paths["h5"])
    dynamic = build_small_cnn(seed=4, size=None, name="dynamic_cnn")
    paths["dynamic"] = out / "dynamic_cnn.keras"
    dynamic.save(paths["dynamic"])
    paths["onnx"] = convert(cnn, out / "small_cnn.onnx")
    paths["onnx_nhwc"] = convert(cnn, out / "small_cnn_nhwc.onnx", layout="nhwc")
    paths["other_onnx"] = convert(other, out / "other_cnn.onnx")
    paths["perturbed"] = out / "small_cnn_perturbed.onnx"
    perturb_first_conv(paths["onnx"], paths["perturbed"])
    paths["mvn"] = mvn_onnx(out / "mvn.onnx")
    return paths


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One conversion cache for the runs that do not test caching itself (keeps the suite fast)."""
    return tmp_path_factory.mktemp("cvdnn-cache")


class Run:
    """Result of a plugin run in a subprocess, with the JSON report parsed."""

    def __init__(self, result: pytest.RunResult, report: Path) -> None:
        self.result = result
        self.ret = result.ret
        self.text = result.stdout.str() + "\n" + result.stderr.str()
        self.report = json.loads(report.read_text()) if report.is_file() else None

    def outcomes(self) -> dict[str, int]:
        return self.result.parseoutcomes()

    def checks(self, model_index: int = 0) -> dict[str, Any]:
        assert self.report is not None, self.text
        return self.report["models"][model_index]["checks"]


@pytest.fixture
def run_cvdnn(pytester: pytest.Pytester, shared_cache: Path) -> Callable[..., Run]:
    """Run ``pytest <args>`` in a subprocess in the pytester dir; returns :class:`Run`."""

    def run(*args: str, cache: Path | None = shared_cache, report: bool = True) -> Run:
        report_path = pytester.path / "cvdnn-report.json"
        report_path.unlink(missing_ok=True)
        extra = [f"--cvdnn-cache-dir={cache}"] if cache is not None else []
        if report:
            extra.append(f"--cvdnn-report={report_path}")
        result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:benchmark", *extra, *args,
                                               timeout=900)
        return Run(result, report_path)

    return run


@pytest.fixture
def copy_model(pytester: pytest.Pytester) -> Callable[[Path, str | None], Path]:
    def copy(src: Path, name: str | None = None) -> Path:
        dst = pytester.path / (name or src.name)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)
        return dst

    return copy


def pytest_configure(config: pytest.Config) -> None:
    sys.path.insert(0, str(ROOT))


#: the subset each OpenCV environment of tox.ini runs (`pytest -m core`): tests whose expectations follow the
#: installed OpenCV's version (the printed code, the load diagnosis, engines, formats, the README command) and
#: the pure comparison/spec code; the rest of the suite assumes the newest OpenCV a fresh install resolves
CORE_MODULES = {"test_snippets.py", "test_opencv_versions.py", "test_formats.py", "test_compare.py", "test_spec.py"}
CORE_TESTS = {"test_examples.py::test_readme_main_command_on_the_shipped_model"}


#: the quick tier (`pytest -m quick`, seconds, no TensorFlow): the pure comparison and spec code, and the
#: printed snippets executed on every supported OpenCV (what mutation testing runs, benchmarks/README.md)
QUICK_MODULES = {"test_compare.py", "test_spec.py", "test_snippets.py", "test_units.py", "test_fuzz.py", "test_ownership.py",
                 "test_gate_integrity.py", "test_cache_healing.py", "test_decisions.py",
                 "test_readme_numbers.py", "test_feeds.py", "test_model_tables.py", "test_agreement_math.py",
                 "test_architecture.py", "test_rewrites.py"}


def _zoo_left_out(config: pytest.Config) -> bool:
    """The default run (no ``-m``) leaves the zoo out: ``pytest -m zoo`` runs it (CI runs both, .ci/run)."""
    return not config.getoption("markexpr") and not os.environ.get("CVDNN_ZOO")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        test = f"{module}::{item.nodeid.split('::', 1)[-1].split('[')[0]}"
        if (module in CORE_MODULES or test in CORE_TESTS) and item.get_closest_marker("zoo") is None:
            item.add_marker(pytest.mark.core)
        if module in QUICK_MODULES:
            item.add_marker(pytest.mark.quick)
    if _zoo_left_out(config):
        zoo = [item for item in items if item.get_closest_marker("zoo") is not None]
        if zoo:
            config.hook.pytest_deselected(items=zoo)
            items[:] = [item for item in items if item.get_closest_marker("zoo") is None]
            config.stash[_ZOO_LEFT] = len(zoo)
            if hasattr(config, "workeroutput"):  # an xdist worker: the controller prints the line
                config.workeroutput["cvdnn_zoo_left"] = len(zoo)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist's controller collects nothing itself: the workers' count of zoo tests left out (each collects all)."""
    left = getattr(node, "workeroutput", {}).get("cvdnn_zoo_left", 0)
    node.config.stash[_ZOO_LEFT] = max(node.config.stash.get(_ZOO_LEFT, 0), left)


_ZOO_LEFT = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    left = config.stash.get(_ZOO_LEFT, 0)
    if left:
        terminalreporter.write_line(f"{left} zoo test(s) deselected (the heavier tests): run them "
                                    "with `pytest -m zoo` (CI runs both, .ci/run)")


def side_by_side(version: str) -> Path:
    """OpenCV ``version`` installed side by side (cached per user, pip once), or a skip saying why it cannot be
    had here (no package index); with CVDNN_REQUIRE_TARGETS=1 (.ci/run) that is a failure instead."""
    from pytest_cvdnn.cache import default_user_cache
    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.targets import provision_opencv

    try:
        return provision_opencv(version, default_user_cache())
    except CvdnnError as exc:
        if os.environ.get("CVDNN_REQUIRE_TARGETS"):
            raise
        pytest.skip(f"OpenCV {version} cannot be installed side by side here: {exc}")


@pytest.fixture(scope="session")
def opencv_4_5_5() -> Path:
    """OpenCV 4.5.5 (with numpy<2) installed side by side, cached per user (pip, once)."""
    return side_by_side("4.5.5")


def save_application(factory: pytest.TempPathFactory, name: str, seed: int, size: int, filename: str) -> Path:
    """keras.applications.<name>(weights=None), seeded, at size x size, saved as .keras (no download)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    path = factory.mktemp(filename.split(".")[0]) / filename
    getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3)).save(path)
    return path


@pytest.fixture(scope="session")
def densenet_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DenseNet121 at 64x64 (conversion ~10 s)."""
    return save_application(tmp_path_factory, "DenseNet121", 121, 64, "densenet121.keras")


def resize_ceil_onnx(path: Path, scale: float = 1.0) -> Path:
    """Conv -> Resize(nearest, half_pixel, nearest_mode=ceil) -> Conv: cv2.dnn (5.0) rounds this Resize
    differently from onnxruntime (measured here: max |Δ| ~4 on normal inputs), a real OpenCV-side divergence.
    ``scale`` multiplies both convolutions' weights (1e-4: tensors far below the default atol)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((scale * rng.normal(0, 0.3, (4, 3, 3, 3))).astype(np.float32), "w1"),
        numpy_helper.from_array((scale * rng.normal(0, 0.3, (2, 4, 3, 3))).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([], np.float32), "roi"),
        numpy_helper.from_array(np.array([], np.float32), "scales"),
        numpy_helper.from_array(np.array([1, 4, 13, 17], np.int64), "sizes"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="block1/conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c1", "roi", "scales", "sizes"], ["up"], name="block2/upsample", mode="nearest",
                         coordinate_transformation_mode="half_pixel", nearest_mode="ceil"),
        helper.make_node("Conv", ["up", "w2"], ["y"], name="block3/conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "resize_ceil", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 7, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 13, 17])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def two_in_two_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    image = keras.Input((32, 32, 3), name="image")
    meta = keras.Input((8,), name="meta")
    x = layers.Conv2D(8, 3, activation="relu")(image)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Concatenate()([x, layers.Dense(8, activation="relu")(meta)])
    probs = layers.Dense(5, activation="softmax", name="probs")(x)
    box = layers.Dense(4, name="box")(x)
    path = tmp_path_factory.mktemp("multi") / "two_in_two_out.keras"
    keras.Model([image, meta], [probs, box], name="two_in_two_out").save(path)
    return path


@pytest.fixture(scope="session")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny segmentation model: NHWC map out, softmax over the classes (the channel axis)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(8)
    inp = keras.Input((32, 32, 3), name="image")
    x = layers.Rescaling(1 / 255.0)(inp)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(4, 1, name="classes")(x)
    path = tmp_path_factory.mktemp("seg") / "segmenter.keras"
    keras.Model(inp, layers.Softmax(axis=-1, name="mask")(x), name="segmenter").save(path)
    return path


def side_by_side_package(requirement: str) -> Path:
    """A package installed without its dependencies into a folder of its own (cached per user, pip once), to put on
    PYTHONPATH of a child (as the OpenCV targets are); a skip where no package index is reachable (a failure with
    CVDNN_REQUIRE_TARGETS=1, as in .ci/run)."""
    import subprocess
    import sys

    from filelock import FileLock

    from pytest_cvdnn.cache import default_user_cache

    base = default_user_cache() / "packages"
    dest = base / requirement.replace("=", "_").replace("<", "_").replace(">", "_")
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock", timeout=900):
        if not (dest / ".complete").is_file():
            shutil.rmtree(dest, ignore_errors=True)
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                   "--no-deps", "--target", str(dest), *requirement.split()],
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                shutil.rmtree(dest, ignore_errors=True)
                if os.environ.get("CVDNN_REQUIRE_TARGETS"):
                    raise RuntimeError(f"pip install {requirement} failed: {proc.stderr[-1000:]}")
                pytest.skip(f"{requirement} cannot be installed here: {proc.stderr.strip()[-300:]}")
            (dest / ".complete").write_text(requirement)
    return dest
