"""No silent wrong pass: an option cannot make the gate vacuous, and a graph onnx.checker's full check rejects
never passes (quick tier: ONNX models only, no TensorFlow)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnx_mutants import base_model


def _save(model: Any, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def test_the_marker_refuses_an_onnx_beside_an_onnx_model() -> None:
    from pytest_cvdnn.settings import ModelSettings

    with pytest.raises(ValueError, match="onnx='shipped.onnx' is given with the model 'good.onnx'"):
        ModelSettings(model="good.onnx").with_marker({"onnx": "shipped.onnx"})
    assert ModelSettings(model="m.keras").with_marker({"onnx": "m.onnx"}).onnx == "m.onnx"


@pytest.mark.parametrize("name", ["rtol", "srtol"])
def test_a_relative_tolerance_that_accepts_the_signal_itself_is_refused(name: str) -> None:
    from pytest_cvdnn.compare import Tolerance, compare_arrays
    from pytest_cvdnn.settings import parse_tol

    for bad in ("1", "1e308"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"{name} = .* would accept an error as large as the "
                           "signal itself"):
            parse_tol(bad, name)
        with pytest.raises(ValueError, match="no parity item could fail"):
            Tolerance(**{name: float(bad)})
    assert parse_tol("0.5", name) == 0.5
    # the bound is what keeps the gate able to fail: at the largest accepted tolerances and a huge atol, an output
    # replaced by its negative (an error the size of the signal) still fails
    ref = np.linspace(-1, 1, 40, dtype=np.float32).reshape(1, 40)
    tol = Tolerance(atol=1e308, rtol=0.999, srtol=0.999)
    assert not compare_arrays(ref, -ref, tol).ok
    assert compare_arrays(ref, ref * (1 + 1e-6), tol).ok


def _self_external(path: Path) -> Path:
    """A valid model whose first weight says it is stored in the .onnx file itself."""
    import onnx
    from onnx import TensorProto

    model = base_model()
    tensor = model.graph.initializer[0]
    length = len(tensor.raw_data) or tensor.ByteSize()
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", path.name), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _if_wrong_branch(path: Path) -> Path:
    """An If whose branches both make (1, 9) where the node reading it takes (1, 4): valid per node, wrong as a
    graph (strict shape inference refuses the Add)."""
    from onnx import TensorProto, helper, numpy_helper

    def branch(name: str) -> object:
        value = numpy_helper.from_array(np.ones((1, 9), np.float32), f"{name}_c")
        return helper.make_graph([helper.make_node("Constant", [], [f"{name}_o"], value=value)], name, [],
                                 [helper.make_tensor_value_info(f"{name}_o", TensorProto.FLOAT, [1, 9])])

    nodes = [helper.make_node("If", ["cond"], ["b"], then_branch=branch("then"), else_branch=branch("else"),
                              name="if"),
             helper.make_node("Add", ["x", "b"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.array(True), "cond")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return _save(model, path)


def _mutant(kind: str, path: Path) -> Path:
    from onnx import helper

    if kind == "if-branch":
        return _if_wrong_branch(path)

    model = base_model()
    if kind == "output-shape":
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7  # the Gemm makes 5 classes
    elif kind == "duplicate-opset":
        model.opset_import.append(helper.make_opsetid("", 11))
    elif kind == "self-external":
        return _self_external(path)
    return _save(model, path)


def _dense_onnx(path: Path) -> Path:
    """x -> MatMul -> Add -> Relu, with the MatMul's output also a graph output (what the localisation asks
    cv2.dnn for): OpenCV 5.1 fuses MatMul+Add and gives None for that tensor."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"], name="dense/MatMul"),
             helper.make_node("Add", ["mm", "b"], ["z"], name="dense/Add"),
             helper.make_node("Relu", ["z"], ["y"], name="relu")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("y", "mm")]
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return _save(model, path)


def test_a_tensor_cv2_gives_no_value_for_is_named_never_pickled(tmp_path: Path) -> None:
    import cv2

    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.runners.cv2dnn import Cv2DnnRunner
    from pytest_cvdnn.runners.isolated import LOCAL, child_call

    path = _dense_onnx(tmp_path / "dense.onnx")
    x = np.ones((1, 8), np.float32)
    runner = Cv2DnnRunner(path, ["x"], ["y", "mm"], "auto")
    outs = runner.forward([x])
    assert outs[0] is not None and outs[0].shape == (1, 4)
    if int(cv2.__version__.split(".")[0]) < 5:
        pytest.skip(f"OpenCV {cv2.__version__} gives the fused tensor's value (5.1 returns None)")
    assert outs[1] is None
    with pytest.raises(CvdnnError, match="cv2.dnn returned no value for the output\\(s\\) 'mm'"):
        runner.infer([x])
    # the child process: strict, the forward fails naming the tensor (no object array is ever saved or loaded)
    resp, _ = child_call(LOCAL, path, "auto", ["x"], ["y", "mm"], [x])
    assert not resp["ok"] and "no value for the output(s) 'mm'" in resp["error"], resp
    # partial (the localisation's intermediate tensors): the others come back, the missing one is listed
    resp, outs2 = child_call(LOCAL, path, "auto", ["x"], ["y", "mm"], [x], partial=True)
    assert resp["ok"] and resp["missing"] == [1] and outs2[0][0].shape == (1, 4), resp


def _endless_loop(path: Path) -> Path:
    """A valid graph (onnx.checker's full check passes) whose Loop runs 2^62 times."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Add", ["v_in", "one"], ["v_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((1, 4), np.float32), "one")])
    inits = [numpy_helper.from_array(np.array(2 ** 62, np.int64), "trip"), numpy_helper.from_array(np.array(True), "cond")]
    graph = helper.make_graph([helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)], "endless",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return _save(model, path)


@pytest.mark.parametrize("value", ["0", "-5", "1e9", "x"])
def test_a_time_limit_out_of_range_is_a_usage_error(value: str) -> None:
    from pytest_cvdnn.settings import parse_seconds

    with pytest.raises(argparse.ArgumentTypeError, match="seconds"):
        parse_seconds(value)


# -- absurd values are refused at start-up, with their range ---------------------------------------------------
@pytest.mark.parametrize("parse, value, words", [
    ("parse_seed", "-1", "a seed is an integer from 0 to 2**32-1"),
    ("parse_seed", str(2 ** 40), "a seed is an integer from 0 to 2**32-1"),
    ("parse_range", "-1e308,1e308", "must lie within"),
    ("parse_spec", "scale=0", "scale must not be 0"),
    ("parse_spec", "size=100000x100000", "larger than 16384 pixels"),
    ("parse_spec", "batch=1000000", "batch must be between 1 and 4096"),
    ("parse_spec", "mean=1e308/0/0", "mean must be finite numbers of magnitude at most"),
])
def test_absurd_option_values_are_refused_with_their_range(parse: str, value: str, words: str) -> None:
    from pytest_cvdnn import settings

    with pytest.raises(argparse.ArgumentTypeError, match=words.replace("*", r"\*")):
        getattr(settings, parse)(value)


def test_the_marker_validates_seed_and_samples() -> None:
    from pytest_cvdnn.settings import ModelSettings

    for kwargs in ({"seed": -1}, {"samples": 0}):
        with pytest.raises(argparse.ArgumentTypeError):
            ModelSettings(model="m.keras").with_marker(kwargs)


def test_the_marker_takes_one_known_device() -> None:
    from pytest_cvdnn.settings import ModelSettings

    assert ModelSettings(model="m.keras").with_marker({"device": " OpenCL_FP16"}).device == "opencl_fp16"
    with pytest.raises(ValueError, match="a test runs on one device; parametrize the test to check several"):
        ModelSettings(model="m.keras").with_marker({"device": "cpu,opencl"})
    with pytest.raises(argparse.ArgumentTypeError, match="'gpu' is not a cv2.dnn device"):
        ModelSettings(model="m.keras").with_marker({"device": "gpu"})


# -- memory budget before any allocation -----------------------------------------------------------------------
def _png_header(path: Path, width: int, height: int) -> Path:
    """The first bytes of a PNG that says it is ``width`` x ``height`` (never decoded: refused from its header)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 64)
    return path


def test_image_sizes_are_read_from_headers(tmp_path: Path) -> None:
    import cv2

    from pytest_cvdnn.folders import image_dimensions

    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp"):
        cv2.imwrite(str(tmp_path / f"x{ext}"), img)
        assert image_dimensions(tmp_path / f"x{ext}") == (53, 37), ext
    assert image_dimensions(_png_header(tmp_path / "big.png", 20000, 20000)) == (20000, 20000)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert image_dimensions(tmp_path / "junk.png") is None


def test_a_huge_photo_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.preprocess import load_photos

    folder = tmp_path / "photos"
    folder.mkdir()
    _png_header(folder / "scan.png", 20000, 20000)
    with pytest.raises(CvdnnError, match=r"--cvdnn-images: scan.png is 20000x20000 pixels; .* GiB, more than the "
                       r"memory budget .*it is not read\. Fix: resize it"):
        load_photos(folder)


def test_a_blob_beyond_the_budget_is_refused_before_it_is_made() -> None:
    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.preprocess import make_blob
    from pytest_cvdnn.spec import InputSpec

    photos = [np.zeros((8, 8, 3), np.uint8)] * 3
    with pytest.raises(CvdnnError, match="a blob of 3 image\\(s\\) at 16384x16384x4 would need about"):
        make_blob(photos, InputSpec(size=(16384, 16384)))
    assert make_blob(photos, InputSpec(size=(16, 16))).shape == (3, 3, 16, 16)




def test_a_misspelt_marker_keyword_names_the_one_it_looks_like() -> None:
    from pytest_cvdnn.settings import ModelSettings

    with pytest.raises(ValueError, match=r"unknown @pytest.mark.cvdnn keyword\(s\) \['input_spc'\] \(did you mean "
                       r"'input_spec'\?\)"):
        ModelSettings(model="m.keras").with_marker({"input_spc": "tf"})


# -- the whole message of each refusal, with its numbers ---------------------------------------------------------
def test_a_blob_beyond_the_budget_is_refused_with_its_numbers_and_one_within_is_made() -> None:
    """The need is width x height x channels x images x 16 bytes (boundary included: equal is allowed)."""
    from pytest_cvdnn.budget import IMAGE_PEAK_BYTES_PER_VALUE, check_blob_budget
    from pytest_cvdnn.errors import CvdnnError

    assert IMAGE_PEAK_BYTES_PER_VALUE == 16
    exact = 640 * 480 * 3 * 2 * 16 / (1 << 30)  # GiB
    check_blob_budget(640, 480, 3, 2, "the spec's blob", budget_gib=exact)  # exactly the budget: made
    for w, h, c, n in ((641, 480, 3, 2), (640, 481, 3, 2), (640, 480, 4, 2), (640, 480, 3, 3)):
        with pytest.raises(CvdnnError):
            check_blob_budget(w, h, c, n, "the spec's blob", budget_gib=exact)
    check_blob_budget(640, 480, 0, 0, "the spec's blob", budget_gib=640 * 480 * 16 / (1 << 30))  # (at least 1 each)
    with pytest.raises(CvdnnError) as info:
        check_blob_budget(20000, 20000, 3, 4, "--cvdnn-preprocess", budget_gib=2.0)
    assert str(info.value) == (
        "--cvdnn-preprocess: a blob of 4 image(s) at 20000x20000x3 would need about 71.5 GiB, more than the memory "
        "budget of 2 GiB; it is not made. Fix: check the size= of --cvdnn-preprocess (or the model's declared input "
        "size); raise --cvdnn-memory-budget (GiB) only on a machine that has the memory.")


def test_an_execution_provider_this_onnxruntime_lacks_is_named_with_the_ones_it_has() -> None:
    import argparse

    import onnxruntime

    from pytest_cvdnn.settings import parse_providers

    assert parse_providers(" CPUExecutionProvider , CPUExecutionProvider,") == ("CPUExecutionProvider",)
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_providers("TensorRTExecutionProvider,CPUExecutionProvider,FooProvider")
    assert str(info.value) == (
        f"TensorRTExecutionProvider, FooProvider not available in this onnxruntime {onnxruntime.__version__} (it has "
        f"{', '.join(onnxruntime.get_available_providers())}); install the onnxruntime build that has it (e.g. "
        "onnxruntime-gpu for CUDAExecutionProvider, onnxruntime-openvino for OpenVINOExecutionProvider), or drop it")
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_providers(" , ")
    assert str(info.value) == "' , ': no execution provider; e.g. CPUExecutionProvider"


def test_photos_come_from_the_folder_given_or_scikit_images_wheel_and_each_problem_is_said(tmp_path: Path,
                                                                                          monkeypatch: Any) -> None:
    import cv2
    import numpy as np

    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.preprocess import SKIMAGE_PHOTOS, load_photos

    photos = load_photos()
    assert [name for name, _ in photos] == list(SKIMAGE_PHOTOS)
    from skimage import data

    assert np.array_equal(photos[0][1], data.astronaut()[..., ::-1])  # BGR, as cv2.imread reads a deployment's
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"p{k}.png"), np.full((5, 7, 3), 40 * k, np.uint8))
    got = load_photos(folder, limit=2)
    assert [name for name, _ in got] == ["p0.png", "p1.png"] and got[1][1].shape == (5, 7, 3)
    (folder / "p3.jpg").write_bytes(b"not a jpeg")
    cases = [
        (lambda: load_photos(folder), f"--cvdnn-images={folder} has unreadable images: p3.jpg. Fix: point it at a "
                                      "folder of PNG/JPEG photos."),
        (lambda: load_photos(tmp_path / "none"), f"--cvdnn-images={tmp_path / 'none'} is not a folder. Fix: pass a "
                                                  "folder of PNG/JPEG images (class subfolders for labels)."),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((lambda: load_photos(tmp_path / "empty"), f"--cvdnn-images={tmp_path / 'empty'} holds no images. "
                                                            "Fix: point it at a folder of PNG/JPEG photos."))
    for call, said in cases:
        with pytest.raises(CvdnnError) as info:
            call()
        assert str(info.value) == said
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # (scikit-image not installed)
    with pytest.raises(CvdnnError) as info:
        load_photos()
    assert str(info.value) == ("the preprocessing check needs photos: scikit-image is not installed. Fix: pip install "
                               "scikit-image (its wheel ships real photos), or pass --cvdnn-images=DIR.")
