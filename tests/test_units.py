"""Quick tier: option parsing, marker keywords and the cache, without TensorFlow, OpenCV or a model."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_cvdnn.cache import Cache, sha256_bytes, sha256_file, sha256_path, slug
from pytest_cvdnn.compare import Tolerance
from pytest_cvdnn.settings import (ModelSettings, parse_engine, parse_engines, parse_formats, parse_layout,
                                   parse_opset, parse_positive, parse_range, parse_seed, parse_spec, parse_target,
                                   parse_tol, target_label)
from pytest_cvdnn.spec import InputSpec
from pytest_cvdnn.targets import needs_old_numpy, pip_spec

BAD = argparse.ArgumentTypeError


# -- options -----------------------------------------------------------------------------------
def test_opset_layout_and_engine_parsing() -> None:
    assert parse_opset("11") == 11 and parse_opset("7") == 7 and parse_opset("23") == 23
    for bad in ("6", "24", "x", ""):
        with pytest.raises(BAD):
            parse_opset(bad)
    assert parse_layout(" NHWC ") == "nhwc" and parse_layout("nchw") == "nchw"
    with pytest.raises(BAD, match="not a layout"):
        parse_layout("chw")
    assert parse_engine("ORT") == "ort"
    with pytest.raises(BAD, match="auto, opencv or ort"):
        parse_engine("fast")
    assert parse_engines("opencv, ort,opencv") == ("opencv", "ort")
    with pytest.raises(BAD, match="no engine"):
        parse_engines(" , ")


def test_numbers_ranges_and_formats() -> None:
    assert parse_tol("1e-4") == 1e-4 and parse_tol("0") == 0
    for bad in ("-1", "nan", "inf", "x"):
        with pytest.raises(BAD):
            parse_tol(bad)
    assert parse_positive("3") == 3
    for bad in ("0", "-2", "x"):
        with pytest.raises(BAD):
            parse_positive(bad)
    assert parse_seed("5") == 5
    with pytest.raises(argparse.ArgumentTypeError, match="a seed is an integer from 0"):
        parse_seed("-5")
    with pytest.raises(BAD):
        parse_seed("1.5")
    assert parse_range("-1,1") == (-1.0, 1.0) and parse_range("0:255") == (0.0, 255.0)
    for bad in ("1,-1", "1,1", "1", "a,b", "0,inf"):
        with pytest.raises(BAD):
            parse_range(bad)
    assert parse_formats("tflite") == ("onnx", "tflite") and parse_formats("tf,onnx,tf") == ("onnx", "tf")
    with pytest.raises(BAD, match="unknown format coreml"):
        parse_formats("onnx,coreml")
    with pytest.raises(BAD, match="empty"):
        parse_formats(",")


def test_targets(tmp_path: Path) -> None:
    assert parse_target("opencv==4.5.5") == "opencv==4.5.5"
    with pytest.raises(BAD, match="like opencv==4.5.5"):
        parse_target("opencv==4.5")
    assert parse_target(sys.executable) == sys.executable
    not_exe = tmp_path / "python"
    not_exe.write_text("")
    with pytest.raises(BAD, match="is not a target"):
        parse_target(str(not_exe))
    assert target_label(None) == "local" and target_label("opencv==4.8.1") == "opencv-4.8.1"
    assert pip_spec("4.5.5") == "opencv-python-headless==4.5.5.64"
    assert pip_spec("4.12.0") == "opencv-python-headless==4.12.0.*"  # the last build of the release
    assert pip_spec("5.1.0.95") == "opencv-python-headless==5.1.0.95"
    assert needs_old_numpy("4.8.1") and not needs_old_numpy("4.9.0") and not needs_old_numpy("5.1.0")


def test_spec_option_gives_a_default_and_named_specs() -> None:
    default, named = parse_spec("image:caffe;thumb:tf,size=64x64")
    assert default is None and dict(named)["thumb"].size == (64, 64) and dict(named)["image"].mode == "caffe"
    default, named = parse_spec("torch")
    assert default is not None and default.mode == "torch" and named == ()
    with pytest.raises(BAD):
        parse_spec("scale=abc")


def test_marker_keywords_are_validated_and_applied() -> None:
    base = ModelSettings(model="m.keras")
    changed = base.with_marker({"atol": 1e-3, "srtol": 0.01, "opset": "11", "layout": "NHWC", "engine": "opencv",
                                "seed": "3", "samples": 2, "input_range": (-1, 1), "onnx": None,
                                "input_spec": "tf,size=32x32"})
    assert changed.tolerance == Tolerance(atol=1e-3, rtol=base.tolerance.rtol, srtol=0.01)
    assert (changed.opset, changed.layout, changed.engine, changed.seed, changed.samples) == (11, "nhwc", "opencv", 3, 2)
    assert changed.input_range == (-1.0, 1.0) and changed.onnx is None and changed.spec is not None
    assert changed.spec.mode == "tf" and changed.key() != base.key()
    with pytest.raises(ValueError, match="unknown @pytest.mark.cvdnn keyword"):
        base.with_marker({"atoll": 1})
    with pytest.raises(BAD):
        base.with_marker({"opset": 99})
    with pytest.raises(BAD):
        base.with_marker({"input_range": (2, 1)})
    assert base.with_marker({"atol": None}) == base  # None keeps the setting
    assert base.effective_spec == InputSpec(layout="nchw")


# -- cache ---------------------------------------------------------------------------------------
def test_hashes_and_slugs(tmp_path: Path) -> None:
    assert sha256_bytes(b"abc").startswith("ba7816bf")
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == sha256_bytes(b"abc") == sha256_path(tmp_path / "f")
    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x").write_bytes(b"1")
    first = sha256_path(folder)
    (folder / "sub" / "x").write_bytes(b"2")
    assert sha256_path(folder) != first
    (folder / "sub" / "x").write_bytes(b"1")
    (folder / "sub" / "x").rename(folder / "sub" / "y")  # same content, another name: another hash
    assert sha256_path(folder) != first
    assert slug("a b/c:d-e_f.g") == "a_b_c_d-e_f.g"


def test_arrays_and_json_round_trip_and_damage_is_rebuilt(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64)]
    cache.put_arrays(arrays, "ref", "a.npz")
    back = cache.get_arrays("ref", "a.npz")
    assert back is not None and len(back) == 2 and all(np.array_equal(a, b) and a.dtype == b.dtype
                                                         for a, b in zip(arrays, back))
    assert cache.get_arrays("ref", "missing.npz") is None
    path = tmp_path / "ref" / "a.npz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated
    assert cache.get_arrays("ref", "a.npz") is None and not path.exists()  # discarded, to be rebuilt
    cache.put_json({"b": 1, "a": [1, 2]}, "keras", "m.json")
    assert cache.get_json("keras", "m.json") == {"a": [1, 2], "b": 1}
    assert json.loads((tmp_path / "keras" / "m.json").read_text())["data"] == {"a": [1, 2], "b": 1}
    (tmp_path / "keras" / "bad.json").write_text("[1, 2]")
    assert cache.get_json("keras", "bad.json") is None  # not a document
    (tmp_path / "keras" / "broken.json").write_text("{")
    assert cache.get_json("keras", "broken.json") is None
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


def test_artifacts_carry_a_checksum_and_a_corrupt_one_is_removed(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    produced = tmp_path / "model.onnx"
    produced.write_bytes(b"onnx bytes")
    path, meta = cache.put_onnx("k1", produced, {"opset": 13})
    assert path.read_bytes() == b"onnx bytes" and meta["sha256"] == sha256_bytes(b"onnx bytes")
    assert meta["opset"] == 13
    found = cache.get_onnx("k1")
    assert found is not None and found[0] == path and found[1] == meta
    assert cache.get_onnx("k2") is None
    path.write_bytes(b"tampered")
    assert cache.get_onnx("k1") is None and not cache.onnx_dir("k1").exists()
    produced.write_bytes(b"v2")
    cache.put_onnx("k1", produced, {})
    assert cache.get_onnx("k1") is not None  # replaced atomically
    assert [p.name for p in (tmp_path / "cache" / "onnx").iterdir()] == ["k1"]  # no staging folder left


def test_event_log_appends_whole_lines(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    assert cache.events() == []
    for n in range(3):
        cache.log_event({"n": n, "pid": os.getpid()})
    assert [e["n"] for e in cache.events()] == [0, 1, 2]


# -- input specs ---------------------------------------------------------------------------------------
from pytest_cvdnn.spec import SpecError, detect_keras_mode  # noqa: E402

FAMILIES = [("vgg16", "caffe", "VGG"), ("resnet101", "caffe", "ResNet"), ("resnet50v2", "tf", "ResNetV2"),
            ("mobilenet_1.00_224", "tf", "MobileNet"), ("mobilenetv2_1.00_96", "tf", "MobileNetV2"),
            ("inception_v3", "tf", "InceptionV3"), ("inception_resnet_v2", "tf", "InceptionResNetV2"),
            ("xception", "tf", "Xception"), ("NASNet_mobile", "tf", "NASNet"), ("densenet169", "torch", "DenseNet"),
            ("efficientnetb3", "none", "EfficientNet"), ("efficientnetv2-b0", "none", "EfficientNetV2"),
            ("MobilenetV3small", "none", "MobileNetV3"), ("convnext_tiny", "none", "ConvNeXt"),
            ("regnetx002", "none", "RegNet")]


@pytest.mark.parametrize("name, mode, family", FAMILIES)
def test_keras_applications_are_recognised_by_name(name: str, mode: str, family: str) -> None:
    found, why, confident = detect_keras_mode(name, ["InputLayer", "Conv2D"])
    assert (found, confident) == (mode, True)
    assert why.startswith(f"model {name!r} is keras.applications {family}, whose preprocess_input uses mode {mode!r}")
    assert why.endswith("(normalisation inside the model: raw 0..255 RGB)") == (mode == "none")


def test_detection_by_normalisation_layer_or_a_guess() -> None:
    mode, why, confident = detect_keras_mode("my_net", ["InputLayer", "Rescaling", "Conv2D"])
    assert (mode, confident) == ("none", True) and "starts with Rescaling" in why
    mode, why, confident = detect_keras_mode("my_net", ["InputLayer", "Normalization"])
    assert confident and "starts with Normalization" in why
    mode, why, confident = detect_keras_mode("resnet50_finetuned", ["InputLayer", "Conv2D"])  # not a name match
    assert (mode, confident) == ("none", False) and "assuming raw 0..255 RGB input" in why
    assert detect_keras_mode("vgg16x", [])[2] is False and detect_keras_mode("my_vgg16", [])[2] is False


def test_from_model_reads_name_layers_and_input_size() -> None:
    class Layer:
        pass

    class Rescaling(Layer):
        pass

    class Model:  # (what from_model reads: a name, the first layers' classes and the input shape)
        name = "densenet121"
        layers = [Layer(), Layer()]
        inputs = [type("T", (), {"shape": (None, 48, 64, 3)})()]

    spec = InputSpec.from_model(Model())
    assert (spec.mode, spec.size, spec.std) == ("torch", (64, 48), (0.229, 0.224, 0.225))
    assert "DenseNet" in spec.note
    Model.name, Model.layers = "mine", [Layer(), Rescaling()]
    Model.inputs = [type("T", (), {"shape": (None, None, None, 3)})()]
    spec = InputSpec.from_model(Model(), layout="nhwc")
    assert (spec.mode, spec.size, spec.layout, spec.scale, spec.swap_rb) == ("none", None, "nhwc", 1.0, True)


def test_parse_every_key_and_its_errors() -> None:
    spec = InputSpec.parse("scale=0.5/0.25/0.125, mean=1:2:3, std=4/5/6, swapRB=no, size=32X16, crop=1, "
                           "layout=NHWC, channel_order=RGB, interpolation=Nearest, dtype=FLOAT16, batch=2")
    assert spec == InputSpec(size=(32, 16), layout="nhwc", channel_order="rgb", swap_rb=False,
                             scale=(0.5, 0.25, 0.125), mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0),
                             interpolation="nearest", crop="center", dtype="float16", batch=2)
    assert spec.mode is None and InputSpec.parse("swaprb=true,crop=false").swap_rb is True
    assert InputSpec.parse("crop=letterbox,size=8*8").crop == "letterbox"
    assert InputSpec.parse("tf,size=10x20").size == (10, 20) and InputSpec.parse("scale=2").scale == 2.0
    for bad, match in (("", "empty input spec"), ("bgr", "unknown Keras preprocessing mode 'bgr'"),
                       ("tf,size", "is not key=value"), ("size=10", "bad value '10' for 'size'"),
                       ("swap_rb=maybe", "bad value"), ("colour=1", "unknown key 'colour'"),
                       ("scale=a", "bad value"), ("layout=chw", "layout must be one of"),
                       ("mean=1/2", "1, 3 or 4 values"), ("std=1/0/1", "std must not contain 0"),
                       ("batch=0", "batch must be between 1 and"), ("dtype=int8", "dtype must be"),
                       ("size=0x4", "positive"), ("crop=diagonal", "crop must be one of"),
                       ("channel_order=bgra", "channel_order must be"), ("interpolation=lanczos", "interpolation")):
        with pytest.raises(SpecError, match=match):
            InputSpec.parse(bad)


def test_coerce_describe_as_dict_and_numbers() -> None:
    spec = InputSpec.coerce({"mode": "caffe", "size": (8, 8)})
    assert spec.mode == "caffe" and spec.mean == (103.939, 116.779, 123.68) and not spec.swap_rb
    assert InputSpec.coerce(spec) is spec and InputSpec.coerce("tf").scale == pytest.approx(1 / 127.5)
    assert InputSpec.coerce({"scale": 2}).scale == 2
    with pytest.raises(SpecError, match=r"unknown input spec field\(s\) \['scal'\]"):
        InputSpec.coerce({"scal": 1})
    with pytest.raises(SpecError, match="got int"):
        InputSpec.coerce(3)
    torch = InputSpec.from_keras_mode("torch", size=(4, 2))
    assert torch.describe() == ("torch mode: 4x2 NCHW float32, BGR source, swap_rb=1, scale=0.00392157, "
                                "mean=(123.675, 116.28, 103.53), std=(0.229, 0.224, 0.225), bilinear resize, "
                                "crop=none")
    assert InputSpec(mode=None).describe().startswith("model size NCHW float32, BGR source, swap_rb=1, scale=1,")
    d = torch.as_dict()
    assert d["size"] == [4, 2] and d["mean"] == [123.675, 116.28, 103.53] and d["std"] == [0.229, 0.224, 0.225]
    assert d["mode"] == "torch" and d["layout"] == "nchw" and isinstance(d["scale"], float)
    assert torch.with_size(7, 5).size == (7, 5)
    lo, hi = InputSpec.from_keras_mode("tf").value_range()
    assert (lo, hi) == (pytest.approx(-1.0), pytest.approx(1.0))
    lo, hi = InputSpec.from_keras_mode("caffe").value_range()
    assert lo == pytest.approx(-123.68) and hi == pytest.approx(255 - 103.939)
    pixels = np.full((1, 1, 1, 3), 255.0)
    assert np.allclose(torch.normalize(pixels), (255 / 255 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225])
    gray = InputSpec(scale=0.5, std=(2.0, 1.0, 1.0)).normalize(np.full((1, 1, 1, 1), 8.0))
    assert gray.dtype == np.float32 and gray.ravel()[0] == pytest.approx(2.0)  # one channel: scale / std[0]


# -- preprocessing mistakes, named (pure: the comparison with Keras is in test_preprocessing.py) -------------
from pytest_cvdnn.preprocess import blob_method, candidate_mistakes, pixel_error  # noqa: E402

TORCH = InputSpec.from_keras_mode("torch", size=(64, 64))


@pytest.mark.parametrize("declared, name, message", [
    ("torch,size=64x64,swap_rb=0", "channels swapped",
     "the blob is BGR but dn (torch mode) expects RGB: use swapRB=True"),
    ("torch,size=56x56", "wrong size", "the blob is 56x56 but dn expects 64x64: use size=(64, 64)"),
    ("torch,size=64x64,layout=nhwc", "NHWC vs NCHW",
     "the blob is NHWC but the model input is NCHW: use blobFromImage (NCHW)"),
    ("torch,size=64x64,crop=1", "crop vs stretch",
     "the blob is centre-cropped but the model expects the image stretched to size (no crop): use crop=False"),
    ("torch,size=64x64,interpolation=nearest", "nearest vs bilinear",
     "the image is resized with nearest interpolation but the reference pipeline uses bilinear: resize with "
     "cv2.INTER_LINEAR (blobFromImage resizes bilinearly)"),
    ("torch,size=64x64,mean=103.53/116.28/123.675", "mean in wrong channel order",
     "the mean (103.53, 116.28, 123.675) is given in the wrong channel order for a RGB blob: use "
     "mean=(123.675, 116.28, 103.53)"),
    ("torch,size=64x64,mean=0/0/0", "wrong mean", "the mean is (0, 0, 0) but the model expects (123.675, 116.28, "
     "103.53)"),
    ("scale=0.00392157,mean=123.675/116.28/103.53,size=64x64", "std missing",
     "std is missing: dn (torch mode) divides by std (0.229, 0.224, 0.225) after the mean (per-channel scale: "
     "blobFromImageWithParams, OpenCV >= 4.8)"),
    ("torch,size=64x64,std=1/1/1", "wrong std", "std is (1, 1, 1) but the model expects (0.229, 0.224, 0.225)"),
    ("torch,size=64x64,scale=1", "missing scaling",
     "the blob is 255x too large: the scaling is missing; the model expects scalefactor=0.00392156863"),
    ("torch,size=64x64,scale=0.0000153787", "double scaling",
     "the blob is 255x too small (scaled twice?); the model expects scalefactor=0.00392156863"),
    ("torch,size=64x64,scale=0.00396", "wrong scale",
     "the blob is 0.98 % too large (scalefactor off by a factor 1.01); the model expects scalefactor=0.00392156863"),
    ("torch,size=64x64,mean=123.175/116.28/103.53", "wrong mean",
     "the mean is (123.175, 116.28, 103.53) but the model expects (123.675, 116.28, 103.53)"),
    ("torch,size=64x64,crop=letterbox", "crop vs stretch",
     "the blob is letterboxed but the model expects the image stretched to size (no crop): use crop=False"),
])
def test_each_usual_mistake_is_named_with_its_fix(declared: str, name: str, message: str) -> None:
    found = candidate_mistakes(InputSpec.parse(declared), TORCH, "dn")
    assert [m.name for m in found] == [name]
    assert found[0].message == message
    fixed = found[0].corrected
    assert candidate_mistakes(fixed, TORCH, "dn") == []  # the correction is exactly what was missing


def test_no_mistake_when_the_spec_is_right_and_the_ways_a_blob_is_built() -> None:
    assert candidate_mistakes(TORCH, TORCH, "dn") == []
    assert blob_method(InputSpec.parse("tf,size=8x8")) == "blobFromImage"
    assert blob_method(InputSpec.parse("tf,size=8x8,interpolation=nearest")) == "numpy"
    assert blob_method(InputSpec.parse("tf,size=8x8,dtype=uint8")) != "blobFromImage"
    blob = np.zeros((1, 2, 2, 3), np.float32)
    off = blob.copy()
    off[0, 1, 1, 2] = 2 / (255 * 0.225)  # two pixel levels in the blue channel of a torch blob
    assert pixel_error(off, blob, TORCH) == pytest.approx(2.0)
    assert pixel_error(blob[:, :1], blob, TORCH) == float("inf")


def test_writes_are_atomic_and_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_cvdnn.cache import _atomic_write_bytes, default_user_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_user_cache() == tmp_path / "xdg" / "pytest-cvdnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_user_cache() == Path(os.path.expanduser("~")) / ".cache" / "pytest-cvdnn"
    target = tmp_path / "deep" / "er" / "f.bin"
    _atomic_write_bytes(target, b"one")
    _atomic_write_bytes(target, b"two")  # replaces
    assert target.read_bytes() == b"two" and os.listdir(target.parent) == ["f.bin"]
    blocked = tmp_path / "deep" / "dir.bin"
    blocked.mkdir()  # a directory in the way: os.replace fails, the temporary file is removed
    with pytest.raises(OSError):
        _atomic_write_bytes(blocked, b"x")
    assert sorted(os.listdir(tmp_path / "deep")) == ["dir.bin", "er"]
    cache = Cache(tmp_path / "c")
    with cache.lock("k"):
        assert (tmp_path / "c" / "locks" / "k.lock").exists()
    produced = tmp_path / "a.tflite"
    produced.write_bytes(b"flat")
    path, meta = cache.put_onnx("t", produced, {"x": 1}, filename="model.tflite")
    assert path.name == "model.tflite" and cache.get_onnx("t", "model.tflite") == (path, meta)
    assert cache.get_onnx("t") is None  # another artifact name of the same entry
    stored = json.loads((cache.onnx_dir("t") / "meta.json").read_text())
    assert stored == {"sha256": sha256_bytes(b"flat"), "x": 1}


def test_photos_from_a_folder_or_scikit_image_and_their_errors(tmp_path: Path) -> None:
    import cv2

    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.preprocess import SKIMAGE_PHOTOS, load_photos

    default = load_photos()
    assert [name for name, _ in default] == list(SKIMAGE_PHOTOS) == ["astronaut", "chelsea", "coffee"]
    assert [img.shape for _, img in default] == [(512, 512, 3), (300, 451, 3), (400, 600, 3)]
    assert all(img.dtype == np.uint8 for _, img in default)
    from skimage import data

    for name, img in default:  # the same pixels as scikit-image's own reader, in BGR (as cv2.imread gives)
        assert np.array_equal(img, getattr(data, name)()[..., ::-1]), name
    folder = tmp_path / "mine"
    folder.mkdir()
    with pytest.raises(CvdnnError, match="holds no images"):
        load_photos(folder)
    for n in range(10):
        cv2.imwrite(str(folder / f"p{n}.png"), np.full((4, 6, 3), n, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    found = load_photos(folder, limit=3)
    assert [name for name, _ in found] == ["p0.png", "p1.png", "p2.png"] and found[2][1].shape == (4, 6, 3)
    assert found[2][1].max() == 2 and len(load_photos(folder)) == 8  # the default limit
    (folder / "p00.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CvdnnError, match=r"has unreadable images: p00.jpg.*Fix: point it at a folder of PNG/JPEG"):
        load_photos(folder)


def test_option_errors_say_what_is_accepted() -> None:
    for parse, bad, match in ((parse_opset, "x", r"'x' is not an integer opset; use e.g. 11, 13 or 17"),
                              (parse_opset, "99", r"opset 99 is out of range; tf2onnx supports 7..18"),
                              (parse_tol, "x", r"'x' is not a number; use e.g. 1e-4"),
                              (parse_tol, "-1", r"'-1' must be a finite number >= 0"),
                              (parse_range, "x", r"'x' is not a range; write LOW,HIGH, e.g. -1,1 or 0,255"),
                              (parse_range, "2,1", r"'2,1': the range needs finite LOW < HIGH"),
                              (parse_positive, "x", r"'x' is not an integer"),
                              (parse_positive, "1", None), (parse_positive, "0", r"'0' must be >= 1"),
                              (parse_seed, "x", r"'x' is not an integer seed"),
                              (parse_spec, "bgr", r"unknown Keras preprocessing mode 'bgr'"),
                              (parse_formats, "x,y", r"unknown format x, y; use a comma list of onnx, tflite "
                                                     r"\(cv2.dnn.readNetFromTFLite, OpenCV >= 4.8\) and tf"),
                              (parse_formats, ",", r"unknown format \(empty\)")):
        if match is None:
            assert parse(bad) == 1
            continue
        with pytest.raises(BAD, match=match):
            parse(bad)
    assert target_label("/usr/bin/python3") == "/usr/bin/python3" and target_label("opencv==5.1.0") == "opencv-5.1.0"


def test_marker_model_and_onnx(tmp_path: Path) -> None:
    base = ModelSettings(model="m.keras", onnx="shipped.onnx")
    changed = base.with_marker({"model": tmp_path / "other.keras", "onnx": None, "rtol": 0.5})
    assert changed.model == str(tmp_path / "other.keras") and changed.onnx is None  # None clears --cvdnn-onnx
    assert changed.tolerance.rtol == 0.5 and changed.tolerance.atol == base.tolerance.atol
    assert base.with_marker({"onnx": tmp_path / "a.onnx"}).onnx == str(tmp_path / "a.onnx")
    assert base.with_marker({"input_range": "-1,1"}).input_range == (-1.0, 1.0)
    with pytest.raises(ValueError, match=r"unknown @pytest.mark.cvdnn keyword\(s\) \['x'\]; known: model, onnx, "):
        base.with_marker({"x": 1, "atol": 1e-3})


# -- channels: gray (1), colour (3), BGRA (4) ------------------------------------------------------------
def test_channels_are_parsed_validated_and_fitted_to_the_values() -> None:
    gray = InputSpec.parse("tf,size=8x8,channels=gray")
    assert (gray.channels, gray.n_channels, gray.swap_rb) == (1, 1, False)  # nothing to swap in gray
    assert gray.per_channel("mean") == (127.5,) and gray.per_channel("std") == (1.0,)
    assert "1-channel (gray) source" in gray.describe() and "mean=(127.5)" in gray.describe()
    assert InputSpec(size=(4, 4)).channels is None and InputSpec().n_channels == 3  # None: the model's
    rgba = InputSpec.parse("scale=0.5,mean=1/2/3,size=8x8,channels=4")
    assert rgba.mean == (1.0, 2.0, 3.0, 0.0) and rgba.per_channel("std") == (1.0,) * 4  # alpha: mean 0, std 1
    assert "BGRA source" in rgba.describe()
    four = InputSpec.parse("mean=1/2/3/4,std=1/2/3/4")
    assert four.channels == 4 and four.std == (1.0, 2.0, 3.0, 4.0)  # four values imply 4 channels
    assert four.per_channel("scale") == (1.0,) * 4
    px = np.full((1, 1, 1, 4), 9.0)
    assert np.allclose(four.normalize(px), [[[[8.0, 3.5, 2.0, 1.25]]]])
    assert np.allclose(gray.normalize(np.full((1, 1, 1, 1), 255.0)), 1.0)
    for bad, match in (("channels=2", "channels must be 1"), ("channels=1,mean=1/2/3", "takes one mean value"),
                       ("channels=3,mean=1/2/3/4", "add channels=4"), ("channels=x", "bad value"),
                       ("torch,channels=1", "takes one mean value")):
        with pytest.raises(SpecError, match=match):
            InputSpec.parse(bad)
    with pytest.raises(SpecError, match="takes one std value"):
        InputSpec(std=(1, 2, 3)).with_channels(1)
    assert InputSpec.from_keras_mode("tf").with_channels(1).mean == (127.5, 127.5, 127.5)


def test_sources_are_converted_to_the_specs_channels_and_a_wrong_count_is_named() -> None:
    import cv2

    from pytest_cvdnn.errors import CvdnnError

    from pytest_cvdnn.preprocess import source_image

    bgr = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    gray = source_image(bgr, InputSpec(channels=1))
    assert gray.shape == (6, 5) and np.array_equal(gray, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert source_image(gray, InputSpec(channels=1)) is not None and source_image(gray, InputSpec(channels=1)).shape == (6, 5)
    bgra = source_image(bgr, InputSpec(channels=4))
    assert bgra.shape == (6, 5, 4) and (bgra[..., 3] == 255).all() and np.array_equal(bgra[..., :3], bgr)
    assert source_image(bgr, InputSpec()).shape == (6, 5, 3)
    assert np.array_equal(source_image(bgra, InputSpec()), bgr)
    # an RGB source (channel_order=rgb) is the photo as the application holds it: channels reversed, alpha last;
    # a gray or BGRA source becomes RGB, an RGBA one loses its alpha
    assert np.array_equal(source_image(gray, InputSpec(channel_order="rgb")), cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))
    assert np.array_equal(source_image(bgra, InputSpec(channel_order="rgb")), bgr[..., ::-1])
    assert np.array_equal(source_image(bgra, InputSpec(channel_order="rgb", channels=4))[..., :3], bgr[..., ::-1])
    with pytest.raises(CvdnnError) as info:
        source_image(np.zeros((4, 4, 2), np.uint8), InputSpec())
    assert str(info.value) == ("an image with 2 channels cannot be the source of a 3-channel blob. Fix: give images "
                               "with 3 channels (or 3-channel BGR photos).")
    assert np.array_equal(source_image(bgr, InputSpec(channel_order="rgb")), bgr[..., ::-1])
    rgba = source_image(bgr, InputSpec(channel_order="rgb", channels=4))
    assert np.array_equal(rgba[..., :3], bgr[..., ::-1]) and (rgba[..., 3] == 255).all()
    assert np.array_equal(source_image(bgr, InputSpec(channel_order="rgb", channels=1)), gray)  # same luma
    assert np.array_equal(InputSpec(size=(5, 6), channel_order="rgb", swap_rb=False).blob([bgr]),
                          InputSpec(size=(5, 6), swap_rb=True).blob([bgr]))
    # a gray blob from a colour photo equals blobFromImage on the gray image, whichever path builds it
    spec = InputSpec.parse("scale=0.5,mean=10,size=4x3,channels=1")
    blob = spec.blob([bgr])
    want = (cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (4, 3)).astype(np.float32) - 10) * 0.5
    assert blob.shape == (1, 1, 3, 4) and np.allclose(blob[0, 0], want)
    exp = InputSpec.parse("tf,size=64x64,channels=1")
    found = candidate_mistakes(InputSpec.parse("tf,size=64x64,channels=3"), exp, "emotion")
    assert [m.name for m in found] == ["channel count"] and "COLOR_BGR2GRAY" in found[0].message
    assert found[0].corrected == exp


# -- the TFLite reference's quantization (pure numpy) ------------------------------------------------------
def test_quantize_and_dequantize_with_the_models_parameters() -> None:
    from pytest_cvdnn.runners.tflite import dequantize, quantize

    int8 = {"dtype": "int8", "scale": 0.5, "zero_point": -128}
    q = quantize(np.array([0.0, 0.24, 0.26, 10.0, 200.0, -5.0]), int8)
    assert q.dtype == np.int8 and q.tolist() == [-128, -128, -127, -108, 127, -128]  # rounded, clipped
    assert dequantize(q, int8).tolist() == [0.0, 0.0, 0.5, 10.0, 127.5, 0.0]
    uint8 = {"dtype": "uint8", "scale": 1 / 255, "zero_point": 0}
    assert quantize(np.array([0.0, 0.5, 1.0, 2.0]), uint8).tolist() == [0, 128, 255, 255]
    f32 = {"dtype": "float32", "scale": 0.0, "zero_point": 0}
    x = np.array([1.25, -3.5])
    assert quantize(x, f32).dtype == np.float32 and np.array_equal(quantize(x, f32), x)
    assert dequantize(np.array([3], dtype=np.int8), {"dtype": "int8", "scale": 0.0, "zero_point": 0}).tolist() == [3.0]
    assert dequantize(np.array([1.5], dtype=np.float32), int8).dtype == np.float32


def test_input_shapes_from_the_option_ini_and_marker() -> None:
    from pytest_cvdnn.settings import parse_input_shape

    assert parse_input_shape("64x64x1") == ((64, 64, 1),) and parse_input_shape("64,64,1") == ((64, 64, 1),)
    assert parse_input_shape("24x24x3;40") == ((24, 24, 3), (40,))
    assert parse_input_shape((24, 24, 3)) == ((24, 24, 3),) and parse_input_shape([(8, 8, 1), (4,)]) == ((8, 8, 1), (4,))
    for bad in ("", "0x4", "axb", "64x-1", ";"):
        with pytest.raises(argparse.ArgumentTypeError, match="input shape"):
            parse_input_shape(bad)
    marked = ModelSettings(model="m:f").with_marker({"input_shape": (24, 24, 3)})
    assert marked.input_shape == ((24, 24, 3),) and marked.key() != ModelSettings(model="m:f").key()


# -- factories: the cache key is read from the files, never by importing them -------------------
def _project(root: Path) -> None:
    (root / "models").mkdir()
    (root / "models" / "__init__.py").write_text("import this_package_does_not_exist  # never run\n")
    (root / "models" / "net.py").write_text(
        "import numpy as np\nimport os, json\nfrom .blocks import conv_block\nfrom . import layers_util\n"
        "from models.deep import helpers\nfrom shared import *\nimport keras\n\n"
        "def build():\n    return conv_block(8)\n")
    (root / "models" / "blocks.py").write_text("FILTERS = 8\n\ndef conv_block(n):\n    return n\n")
    (root / "models" / "layers_util.py").write_text("X = 1\n")
    (root / "models" / "deep").mkdir()
    (root / "models" / "deep" / "__init__.py").write_text("")
    (root / "models" / "deep" / "helpers.py").write_text("from ..blocks import FILTERS\n")
    (root / "shared.py").write_text("Y = 2\n")
    (root / "unrelated.py").write_text("Z = 3\n")
    (root / "broken.py").write_text("def oops(:\n")


def test_factory_files_follow_project_imports_without_importing(tmp_path: Path) -> None:
    from pytest_cvdnn.factories import factory_digest, factory_files, locate_module

    _project(tmp_path)
    search = [str(tmp_path), *sys.path]
    found = {name: Path(file).relative_to(tmp_path).as_posix() for name, file in factory_files("models.net", search,
                                                                                              [tmp_path])}
    assert found == {"models.net": "models/net.py", "models": "models/__init__.py", "models.blocks": "models/blocks.py",
                     "models.layers_util": "models/layers_util.py", "models.deep": "models/deep/__init__.py",
                     "models.deep.helpers": "models/deep/helpers.py", "shared": "shared.py"}
    assert "models" not in sys.modules and "this_package_does_not_exist" not in sys.modules  # nothing ran
    assert locate_module("numpy", search) is not None and locate_module("no.such.module", search) is None
    assert locate_module("bad-name", search) is None
    with pytest.raises(LookupError):
        factory_files("no_such_module", search, [tmp_path])

    def digest(func: str = "build") -> str:
        return factory_digest("models.net", func, search, [tmp_path])[0]

    first = digest()
    assert digest() == first  # stable
    (tmp_path / "unrelated.py").write_text("Z = 4\n")
    assert digest() == first  # a file it does not import
    assert digest("build_other") != first  # another function
    for rel, text in (("models/deep/helpers.py", "from ..blocks import FILTERS  # edited\n"),
                      ("models/blocks.py", "FILTERS = 16\n"), ("models/__init__.py", "\n"), ("shared.py", "Y = 3\n")):
        before = digest()
        (tmp_path / rel).write_text(text)
        assert digest() != before, rel  # each file it imports, however deep, is part of the key
    # a module that does not parse is still hashed (running it will say what is wrong)
    assert factory_files("broken", search, [tmp_path]) == [("broken", tmp_path / "broken.py")]


def test_file_digests_are_remembered_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"a" * 100)
    first = sha256_file(path)
    assert first == sha256_bytes(b"a" * 100) and sha256_file(path) == first
    stat = os.stat(path)
    path.write_bytes(b"b" * 100)  # same size; the write moves mtime/ctime (forced apart here, whatever the clock)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert sha256_file(path) == sha256_bytes(b"b" * 100)
    path.write_bytes(b"b" * 99)  # another size
    assert sha256_file(path) == sha256_bytes(b"b" * 99)
    moved = tmp_path / "other.onnx"
    path.rename(moved)
    path.write_bytes(b"c" * 99)  # a new file (inode) at the old path
    assert sha256_file(path) == sha256_bytes(b"c" * 99) and sha256_file(moved) == sha256_bytes(b"b" * 99)


def test_inputs_hash_remembers_only_arrays_that_cannot_change() -> None:
    from pytest_cvdnn.deployment import Deployment

    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    before = Deployment.inputs_hash([x])
    x[0, 0, 0] = 99  # writable: hashed again, so the change shows
    assert Deployment.inputs_hash([x]) != before
    x.flags.writeable = False
    frozen = Deployment.inputs_hash([x])
    assert Deployment.inputs_hash([x]) == frozen == Deployment.inputs_hash([x.copy()])
    assert Deployment.inputs_hash([x[:1]]) == Deployment.inputs_hash([x[:1].copy()])  # views of it too
    assert Deployment.inputs_hash([x[:1]]) != Deployment.inputs_hash([x[1:]])
    base = np.zeros((2, 3), np.float32)
    view = base[:1]
    view.flags.writeable = False  # read-only view of a writable array: its memory can still change
    digest = Deployment.inputs_hash([view])
    base[0, 0] = 5
    assert Deployment.inputs_hash([view]) != digest


def test_pil_nearest_tensor_is_what_load_img_then_preprocess_input_give() -> None:
    """The resize note's tensor (a training pipeline on keras.utils.load_img: PIL nearest) against the same
    pipeline written out here: PIL resize of the RGB (or L / RGBA) photo, then Keras' preprocess_input
    constants by hand (caffe: BGR minus the ImageNet means; tf: x/127.5 - 1; torch: RGB (x/255 - mean)/std)."""
    from PIL import Image

    from pytest_cvdnn.preprocess import pil_nearest_tensor

    rng = np.random.default_rng(4)
    photos = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), rng.integers(0, 256, (20, 90, 3), dtype=np.uint8)]

    def pil(mode: str) -> np.ndarray:
        rows = [np.asarray(Image.fromarray(np.ascontiguousarray(p[..., ::-1])).convert(mode).resize((11, 7),
                                                                                                    Image.NEAREST),
                           dtype=np.float32) for p in photos]
        return np.stack([r if r.ndim == 3 else r[..., None] for r in rows])

    rgb = pil("RGB")
    caffe = rgb[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    torch = (rgb / 255 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    for mode, want in (("caffe", caffe), ("tf", rgb / 127.5 - 1), ("torch", torch), ("none", rgb)):
        got = pil_nearest_tensor(photos, InputSpec.from_keras_mode(mode, size=(11, 7)))
        assert got.shape == (2, 7, 11, 3) and got.dtype == np.float32, mode
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=mode)
    gray = pil_nearest_tensor(photos, InputSpec.from_keras_mode("tf", size=(11, 7), channels=1, swap_rb=False))
    np.testing.assert_allclose(gray, pil("L") / 127.5 - 1, atol=1e-5)
    rgba = pil_nearest_tensor(photos, InputSpec(size=(11, 7), channels=4, swap_rb=True))
    np.testing.assert_array_equal(rgba, pil("RGBA"))  # (a plain spec: pixels as they are, alpha opaque)


# -- cache files: deterministic, private staging beside their destination, no pickles ---------------
def test_cache_files_are_deterministic_and_created_with_their_folders(tmp_path: Path) -> None:
    """Sorted keys and a fixed indent (bundles and cache entries regenerate byte-identical); nested folders
    that do not exist yet are created; the event log is one sorted JSON line per event, mode 0644."""
    cache = Cache(tmp_path / "new" / "root")
    cache.put_json({"b": 1, "a": [1, 2]}, "deep", "er", "x.json")
    check = sha256_bytes(b'deep/er/x.json\0{"a": [1, 2], "b": 1}')
    assert (cache.root / "deep" / "er" / "x.json").read_text() == \
        json.dumps({"data": {"a": [1, 2], "b": 1}, "sha256": check}, indent=2)
    assert cache.get_json("deep", "er", "x.json") == {"a": [1, 2], "b": 1}
    produced = tmp_path / "produced.onnx"
    produced.write_bytes(b"onnx bytes")
    path, meta = cache.put_onnx("k1", produced, {"z": 1, "a": 2})
    assert meta == {"z": 1, "a": 2, "sha256": sha256_bytes(b"onnx bytes")}
    assert (path.parent / "meta.json").read_text() == json.dumps(meta, indent=2, sort_keys=True)
    old = os.umask(0o022)
    try:
        cache.log_event({"y": 1, "x": 2})
    finally:
        os.umask(old)
    events = cache.root / "events.jsonl"
    assert events.read_text() == '{"x": 2, "y": 1}\n'
    assert events.stat().st_mode & 0o777 == 0o644


def test_cache_writes_are_staged_beside_their_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An atomic rename needs the staging file in the destination's folder (a rename across file systems is a
    copy, and a reader could see half a file): every os.replace the cache does stays in one folder, and the
    staging names are hidden (a leading dot) so that nothing lists them as entries."""
    moves: list[tuple[Path, Path]] = []
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        moves.append((Path(src), Path(dst)))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    cache = Cache(tmp_path / "c")
    cache.put_json({"a": 1}, "j", "x.json")
    cache.put_arrays([np.zeros(3)], "r", "y.npz")
    produced = tmp_path / "p.onnx"
    produced.write_bytes(b"x")
    cache.put_onnx("key", produced, {})
    assert len(moves) == 3
    for src, dst in moves:
        assert src.parent == dst.parent and src.name.startswith("."), (src, dst)
    assert not [p for p in (tmp_path / "c").rglob(".*")]  # no staging left behind


def test_cached_arrays_are_never_unpickled(tmp_path: Path) -> None:
    """An .npz in the cache holding an object array (a pickle: code) is treated as damaged and removed, not
    loaded."""
    cache = Cache(tmp_path)
    path = tmp_path / "ref" / "x.npz"
    path.parent.mkdir()
    np.savez(path, __count__=np.array(1), a0=np.array([{"code": 1}], dtype=object))
    assert cache.get_arrays("ref", "x.npz") is None
    assert not path.exists()


def test_pixel_limits_are_the_readme_s() -> None:
    """README: the blob may differ from Keras' own pipeline by 1 pixel level in colour (bilinear resize,
    measured <= 0.78) and 2 in gray (PIL's and OpenCV's gray conversions differ by 1 level on a few pixels)."""
    from pytest_cvdnn.preprocess import pixel_limit

    assert pixel_limit(InputSpec.from_keras_mode("caffe", size=(8, 8))) == 1.0
    assert pixel_limit(InputSpec(size=(8, 8), channels=4)) == 1.0
    assert pixel_limit(InputSpec.from_keras_mode("tf", size=(8, 8), channels=1, swap_rb=False)) == 2.0


# -- bundle manifests are untrusted input ---------------------------------------------------------
def _bundle(folder: Path) -> dict[str, Any]:
    """A minimal well-formed bundle (files with their checksums) and its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"model.onnx": b"onnx", "inputs.npz": b"npz", "ref-onnxruntime-0.npz": b"ref"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    manifest = {
        "format": 1, "model": "m.keras", "model_hash": "ab" * 32, "has_keras": False, "keras_meta": None,
        "graph": {"inputs": [{"name": "image", "shape": [None, 3, 8, 8], "dtype": "float32"}],
                  "outputs": [{"name": "probs", "shape": [None, 10], "dtype": "float32"}],
                  "softmax_outputs": [True], "opset": 13, "op_types": ["Conv"]},
        "softmax_logits": [[0, "logits"]],
        "settings": {"atol": 1e-4, "rtol": 1e-3, "srtol": 1e-3, "opset": 13, "layout": "nchw", "engine": "auto",
                     "samples": 4, "seed": 0},
        "spec": {"size": [8, 8], "layout": "nchw"}, "input_specs": [], "preprocessing": None,
        "references": [{"runner": "onnxruntime", "logits": False, "inputs": "cd" * 32,
                        "file": "ref-onnxruntime-0.npz"}],
        "files": {name: sha256_bytes(data) for name, data in files.items()},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.mark.parametrize("edit, said", [
    (lambda m: "{not json", "the file cannot be read as JSON (JSONDecodeError: Expecting property name enclosed in "
                            "double quotes: line 1 column 2 (char 1))"),
    (lambda m: [], "the top level is a JSON list, not an object"),
    (lambda m: {}, "'format' is missing"),
    (lambda m: {k: v for k, v in m.items() if k != "settings"}, "'settings' is missing"),
    (lambda m: {**m, "model": 3}, "'model' is int, not str"),
    (lambda m: {**m, "format": 2}, "'format' is 2; this pytest-cvdnn reads bundles of format 1"),
    (lambda m: {**m, "settings": {**m["settings"], "atol": "abc"}}, "'settings.atol' is 'abc', not a number >= 0"),
    (lambda m: {**m, "settings": {**m["settings"], "rtol": -1}}, "'settings.rtol' is -1, not a number >= 0"),
    (lambda m: {**m, "settings": {**m["settings"], "srtol": 5.0}},
     "'settings.srtol' is refused: srtol = 5 would accept an error as large as the signal itself (max|Δ| / max|ref| "
     "up to 5): no parity item could fail; use a value below 1 (default 0.001)"),
    (lambda m: {**m, "settings": {**m["settings"], "samples": True}},
     "'settings.samples' is True, not an integer in [1, 10000]"),
    (lambda m: {**m, "settings": {**m["settings"], "opset": 101}}, "'settings.opset' is 101, not an integer in [1, 100]"),
    (lambda m: {**m, "settings": {**m["settings"], "seed": 1.5}},
     "'settings.seed' is 1.5, not an integer in [-9223372036854775808, 9223372036854775807]"),
    (lambda m: {**m, "settings": {**m["settings"], "layout": "nwhc"}}, "'settings.layout' is 'nwhc', not 'nchw' or 'nhwc'"),
    (lambda m: {**m, "spec": {"scale": "abc"}},
     "'spec' is not a valid input spec (scale must be a number or three numbers, got 'abc')"),
    (lambda m: {**m, "input_specs": {}}, "'input_specs' is dict, not a list of [name, spec] pairs"),
    (lambda m: {**m, "input_specs": [["a"]]}, "'input_specs'[0] is not a [name, spec] pair"),
    (lambda m: {**m, "input_specs": [["a", {"layout": "abc"}]]},
     "'input_specs'[0] is not a valid input spec (layout must be one of nchw, nhwc, got 'abc')"),
    (lambda m: {**m, "preprocessing": {"x": 1}}, "'preprocessing' is neither null nor an object with an 'expected_spec'"),
    (lambda m: {**m, "preprocessing": {"expected_spec": {"layout": "abc"}}},
     "'preprocessing.expected_spec' is not a valid input spec (layout must be one of nchw, nhwc, got 'abc')"),
    (lambda m: {**m, "graph": {"inputs": []}},
     "'graph' does not describe the model's inputs and outputs (KeyError: 'outputs')"),
    (lambda m: {**m, "graph": {**m["graph"], "inputs": [{"name": "x", "shape": ["a"], "dtype": "float32"}]}},
     "'graph' does not describe the model's inputs and outputs (ValueError: tensor 'x' has shape ('a',))"),
    (lambda m: {**m, "softmax_logits": [["0", "x"]]},
     "'graph' does not describe the model's inputs and outputs (ValueError: softmax_logits holds an entry that is "
     "not an [output index, tensor name] pair)"),
    (lambda m: {**m, "softmax_logits": [[5, "x"]]}, "'softmax_logits' names an output the graph does not have"),
    (lambda m: {**m, "files": {**m["files"], "../../../../etc/passwd": "0" * 64}},
     "the file name '../../../../etc/passwd' is not a plain file name inside the bundle (a path, '..' or empty)"),
    (lambda m: {**m, "files": {**m["files"], "/etc/passwd": "0" * 64}},
     "the file name '/etc/passwd' is not a plain file name inside the bundle (a path, '..' or empty)"),
    (lambda m: {**m, "files": {**m["files"], "model.onnx": "xyz"}}, "the checksum of 'model.onnx' is not a SHA-256 digest"),
    (lambda m: {**m, "files": {k: v for k, v in m["files"].items() if k != "inputs.npz"}},
     "'files' does not list inputs.npz"),
    (lambda m: {**m, "files": {k: v for k, v in m["files"].items() if k != "model.onnx"}},
     "'files' does not list model.onnx"),
    (lambda m: {**m, "references": [{**m["references"][0], "file": "../../outside_ref.npz"}]},
     "'references'[0].file '../../outside_ref.npz' is not listed (with its checksum) in 'files'"),
    (lambda m: {**m, "references": [{**m["references"][0], "runner": "cv2dnn"}]},
     "'references'[0] is not a {runner, logits, inputs, file} object of a reference runner"),
    (lambda m: {**m, "references": [{**m["references"][0], "runner": "../keras"}]},
     "'references'[0] is not a {runner, logits, inputs, file} object of a reference runner"),
    (lambda m: {**m, "references": [{**m["references"][0], "logits": 1}]},
     "'references'[0] is not a {runner, logits, inputs, file} object of a reference runner"),
    (lambda m: {**m, "has_keras": True}, "'keras_meta' is missing for a bundle with a Keras model"),
])
def test_a_malformed_bundle_manifest_is_one_error_naming_the_field(tmp_path: Path, edit: Any, said: str) -> None:
    """Each malformed field is named with what is wrong with it, in one error whose fix is to regenerate."""
    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.manifest import load_manifest

    folder = tmp_path / "b"
    good = _bundle(folder)
    assert load_manifest(folder) == good
    edited = edit(good)
    (folder / "manifest.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(CvdnnError) as info:
        load_manifest(folder)
    assert str(info.value) == (f"the bundle {folder} has an invalid manifest.json: {said}. Fix: regenerate the "
                               "bundle with --cvdnn-save-bundle=DIR on the machine that has the Keras model and "
                               "TensorFlow (a bundle is written whole by pytest-cvdnn, never edited by hand).")


def test_no_bundle_file_can_lead_outside_the_bundle(tmp_path: Path) -> None:
    """A symbolic link in the bundle (to a file outside it) is refused by name, and never opened."""
    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.manifest import bundle_file, load_manifest

    folder = tmp_path / "b"
    manifest = _bundle(folder)
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(b"onnx")  # same bytes, same checksum as the listed model.onnx
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").symlink_to(outside)
    with pytest.raises(CvdnnError, match="the file 'model.onnx' is a symbolic link"):
        load_manifest(folder)
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").write_bytes(b"onnx")
    assert load_manifest(folder) == manifest
    for name in ("..", "", "a/b", "a\\b", "~x"):
        with pytest.raises(CvdnnError):
            bundle_file(folder, name)


def test_a_cache_entry_emptied_damaged_or_copied_from_another_reads_as_missing(tmp_path: Path) -> None:
    """Each JSON and array entry carries a checksum over its name and content: `{}`, a truncated file, another
    entry's (valid) file, or an entry of the older format without a checksum is missing — and removed, so it
    is rebuilt once, not read as a wrong document or wrong reference outputs."""
    cache = Cache(tmp_path)
    cache.put_json({"inputs": [1]}, "keras", "a.json")
    cache.put_json({"inputs": [2]}, "keras", "b.json")
    cache.put_arrays([np.arange(4.0)], "ref", "a.npz")
    cache.put_arrays([np.arange(4.0) + 1], "ref", "b.npz")
    (tmp_path / "keras" / "c.json").write_bytes((tmp_path / "keras" / "b.json").read_bytes())
    (tmp_path / "ref" / "c.npz").write_bytes((tmp_path / "ref" / "b.npz").read_bytes())
    assert cache.get_json("keras", "c.json") is None and cache.get_arrays("ref", "c.npz") is None
    (tmp_path / "keras" / "b.json").write_text("{}")
    assert cache.get_json("keras", "b.json") is None and not (tmp_path / "keras" / "b.json").exists()
    stored = json.loads((tmp_path / "keras" / "a.json").read_text())
    stored["data"]["inputs"] = [3]  # edited content, old checksum
    (tmp_path / "keras" / "a.json").write_text(json.dumps(stored))
    assert cache.get_json("keras", "a.json") is None
    np.savez(tmp_path / "ref" / "old.npz", __count__=np.array(1), a0=np.arange(4.0))  # no checksum
    assert cache.get_arrays("ref", "old.npz") is None
    np.savez(tmp_path / "ref" / "b.npz", __count__=np.array(1), a0=np.arange(4.0) + 9,
             __check__=np.load(tmp_path / "ref" / "a.npz")["__check__"])  # another array, a checksum not its own
    assert cache.get_arrays("ref", "b.npz") is None
    assert [a.tolist() for a in cache.get_arrays("ref", "a.npz") or []] == [[0.0, 1.0, 2.0, 3.0]]


def test_inputs_that_would_not_fit_in_memory_are_refused_before_allocation() -> None:
    """A valid model that declares a 1x3x20000x20000 input made the plugin try to allocate tens of GiB: the size
    is checked against the budget first (default half the RAM, --cvdnn-memory-budget), with the numbers."""
    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.budget import ram_bytes
    from pytest_cvdnn.inputs import PEAK_BYTES_PER_VALUE, check_input_sizes
    from pytest_cvdnn.settings import parse_gib

    huge = [[1, 20000, 20000, 3]]
    with pytest.raises(CvdnnError) as info:
        check_input_sizes(huge, ["image"], 4, None)
    text = str(info.value)
    need = 1_200_000_000 * 4 * PEAK_BYTES_PER_VALUE / (1 << 30)
    assert (f"the model's inputs hold 1,200,000,000 values per sample (the largest: 'image' of shape (1, 20000, 20000, "
            f"3) NHWC): the checks would need about {need:.3g} GiB (4 samples, ~320 bytes per value at their peak), more "
            f"than the memory budget of {ram_bytes() / 2 / (1 << 30):.3g} GiB") in text
    assert "raise --cvdnn-memory-budget" in text
    check_input_sizes(huge, ["image"], 4, 1000.0)  # a budget that holds it: no error
    check_input_sizes([[1, 224, 224, 3], [1, 40]], ["a", "b"], 4, None)  # an ordinary model
    with pytest.raises(CvdnnError, match=r"hold 150,568 values per sample \(the largest: 'a' of shape \(1, 224, 224, "
                       r"3\) NHWC\).*budget of 0.01 GiB"):
        check_input_sizes([[1, 40], [1, 224, 224, 3]], ["b", "a"], 4, 0.01)  # the bigger input is named
    for bad in ([1, 0, 224, 3], [1, 224, -1, 3]):
        with pytest.raises(CvdnnError, match="a dimension below 1 cannot hold a sample"):
            check_input_sizes([bad], ["x"], 4, None)
    assert parse_gib("1.5") == 1.5
    for wrong in ("0", "-2", "abc", "nan", "inf"):
        with pytest.raises(BAD):
            parse_gib(wrong)


@pytest.mark.parametrize("kind, rewrite, node", [("slice", "sort-slice-axes", "crop"),
                                                 ("squeeze", "squeeze-as-reshape", "squeeze"),
                                                 ("kernel", "conv-kernel-shape", "conv"),
                                                 ("clip", "clip-as-hardsigmoid", "relu6")])
def test_each_onnx_rewrite_computes_the_same_and_its_script_makes_the_same_file(kind: str, rewrite: str, node: str,
                                                                                 tmp_path: Path) -> None:
    """Issue 15: a rewrite changes only its node, onnxruntime computes the same on both graphs (at batch 1 and
    3), the others leave the model alone, and fix.py (the rewrite's own source) writes the very same file."""
    import sys

    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_mutants import importer_limits_model
    from script_runner import run_script
    from pytest_cvdnn.rewrites import REWRITES, Candidate, apply, candidates, fix_script

    model = importer_limits_model(kind)
    assert [c.label for c in candidates(model)][0] == rewrite
    for other, fn in REWRITES.items():
        if other != rewrite:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            assert fn(copy) == [] and copy == model, other
    fixed, changed = apply(model, Candidate((rewrite,)))
    assert changed == [node]
    onnx.checker.check_model(fixed)
    onnx.save(model, str(tmp_path / "model.onnx"))
    onnx.save(fixed, str(tmp_path / "ours.onnx"))
    x = np.random.default_rng(1).random((3, 3, 8, 8), dtype=np.float32)
    for batch in (x[:1], x):
        a = ort.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"x": batch})[0]
        b = ort.InferenceSession(str(tmp_path / "ours.onnx")).run(None, {"x": batch})[0]
        assert a.shape == b.shape and np.array_equal(a, b)
    (tmp_path / "fix").mkdir()
    (tmp_path / "fix" / "fix.py").write_text(fix_script(Candidate((rewrite,)), str(tmp_path / "model.onnx")))
    run_script(tmp_path / "fix" / "fix.py")
    assert (tmp_path / "fix" / "fixed.onnx").read_bytes() == (tmp_path / "ours.onnx").read_bytes()
    # as the load item prints it: "python fix.py model.onnx writes fixed.onnx beside fix.py", from the user's folder
    (tmp_path / "fix" / "fixed.onnx").unlink()
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "model.onnx").write_bytes((tmp_path / "model.onnx").read_bytes())
    run_script(tmp_path / "fix" / "fix.py", "model.onnx", cwd=tmp_path / "user")
    assert (tmp_path / "fix" / "fixed.onnx").read_bytes() == (tmp_path / "ours.onnx").read_bytes()


def test_clip_as_hardsigmoid_is_clip_for_any_finite_bounds_and_leaves_other_clips(tmp_path: Path) -> None:
    """(hi - lo) * HardSigmoid(x) + lo against onnxruntime's Clip, on values around, between and far beyond the
    bounds: within float32 rounding of the output (a Relu(x - lo) - Relu(x - hi) form was off by an ulp of x,
    5e-4 at x = 1e4); a Clip whose bounds are not constants, or lo >= hi, is left alone."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from pytest_cvdnn.rewrites import clip_as_hardsigmoid, drop_unused_initializers

    x = np.concatenate([np.linspace(-50, 50, 1001), [-1e4, 1e4, -2.0, 3.0, 0.0]]).astype(np.float32)[None]
    for lo, hi in ((0.0, 6.0), (-2.0, 3.0), (1.5, 1.75), (-1.0, 0.0)):
        bounds = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", lo), ("hi", hi))]
        graph = helper.make_graph([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, x.shape[1]])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, x.shape[1]])], bounds)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        fixed = onnx.ModelProto()
        fixed.CopyFrom(model)
        assert clip_as_hardsigmoid(fixed) == ["clip"] and "Clip" not in {n.op_type for n in fixed.graph.node}
        drop_unused_initializers(fixed)
        onnx.checker.check_model(fixed)
        a, b = (ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0] for m in (model, fixed))
        assert np.abs(a - b).max() <= 4 * np.spacing(np.float32(max(abs(lo), abs(hi)))), (lo, hi)
        assert not any(t.name in ("lo", "hi") for t in fixed.graph.initializer)  # (replaced, and dropped)
    reversed_bounds = onnx.ModelProto()
    reversed_bounds.CopyFrom(model)
    reversed_bounds.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(0.0, np.float32), "lo"))
    assert clip_as_hardsigmoid(reversed_bounds) == []  # (lo = hi = 0)
    dynamic = onnx.ModelProto()
    dynamic.CopyFrom(model)
    del dynamic.graph.initializer[:]
    dynamic.graph.input.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, []) for n in ("lo", "hi")])
    assert clip_as_hardsigmoid(dynamic) == []


def test_onnxslim_folds_a_run_time_flatten_and_its_script_makes_the_same_file(tmp_path: Path) -> None:
    """The simplifier candidate: Keras Flatten's Shape -> Gather chain (VGG16, OpenCV 4.5.5 rejects its Gather)
    becomes a constant; onnxruntime computes the same at batch 1 and 3; fix.py writes the very same file."""
    import sys

    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_mutants import importer_limits_model
    from script_runner import run_script
    from pytest_cvdnn.rewrites import Candidate, apply, candidates, fix_script

    model = importer_limits_model("flatten")
    assert [c.label for c in candidates(model)][0] == "onnxslim"
    fixed, changed = apply(model, Candidate((), simplified=True))
    assert {"shape", "gather"} <= set(changed)
    assert not {"Shape", "Gather"} & {n.op_type for n in fixed.graph.node}
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # (the batch stays dynamic)
    onnx.save(model, str(tmp_path / "model.onnx"))
    onnx.save(fixed, str(tmp_path / "ours.onnx"))
    x = np.random.default_rng(1).random((3, 3, 8, 8), dtype=np.float32)
    for batch in (x[:1], x):
        a, b = (ort.InferenceSession(str(tmp_path / f)).run(None, {"x": batch})[0] for f in ("model.onnx", "ours.onnx"))
        assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-6)
    (tmp_path / "fix").mkdir()
    (tmp_path / "fix" / "fix.py").write_text(fix_script(Candidate((), simplified=True), str(tmp_path / "model.onnx")))
    run_script(tmp_path / "fix" / "fix.py")
    assert (tmp_path / "fix" / "fixed.onnx").read_bytes() == (tmp_path / "ours.onnx").read_bytes()


def test_a_keras_variant_is_shipped_only_if_it_matches_one_by_one_and_batched_and_a_crash_is_called_one() -> None:
    """Issue 15: a variant that matched Keras one sample at a time but returned all-ones at batch 4 was "Ship
    this one"; a forward that crashed was "parity failed".  The decision, on real comparisons."""
    from pytest_cvdnn.compare import compare
    from pytest_cvdnn.diagnose import _try_variant
    from pytest_cvdnn.errors import CvdnnError

    ref = [np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3)]

    class Variant:
        inputs = [np.zeros((4, 2), np.float32)]
        fixed_batch_of_one = False

        def __init__(self, batched: list[np.ndarray] | Exception) -> None:
            self.batched = batched

        def require(self, name: str) -> None:
            pass

        def parity(self, expected: str, obtained: str, whole_batch: bool = False) -> object:
            if not whole_batch:
                return compare(ref, [ref[0].copy()])
            if isinstance(self.batched, Exception):
                raise self.batched
            return compare(ref, self.batched)

    ones = _try_variant(Variant([np.ones((4, 3), np.float32)]), 11, "nchw")
    assert ones.outcome == "parity failed" and ones.detail.startswith("a batch of 4: max abs error 1"), ones
    crash = _try_variant(Variant(CvdnnError("cv2.dnn crashed the process (SIGSEGV)")), 11, "nchw")
    assert crash.outcome == "forward crashed" and "a batch of 4" in crash.detail, crash
    good = _try_variant(Variant([ref[0].copy()]), 11, "nchw")
    assert good.works and good.detail == "max abs error 0 at batch 1 and 4", good


def test_the_keras_remedy_search_tries_what_the_blocking_op_allows_first_and_stops_at_the_first_that_works(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: the search re-converted the model eight times although the first variants failed on the same
    node.  Squeeze: opsets <= 11 first (OpenCV 4.5 reads its axes as an attribute), the model's layout first;
    it stops at the first variant that works, unless asked for all (--cvdnn-fix).  (_try_variant, which converts
    and runs a variant, is replaced by its verdict: opsets above 11 fail to load.)"""
    from types import SimpleNamespace

    from pytest_cvdnn import diagnose
    from pytest_cvdnn.settings import ModelSettings

    dep = SimpleNamespace(has_keras=True, can_convert=True, settings=ModelSettings(model="m.keras", layout="nhwc"))
    assert diagnose.remedy_order(dep, "Squeeze") == [(11, "nhwc"), (11, "nchw"), (10, "nhwc"), (10, "nchw"),
                                                     (17, "nhwc"), (17, "nchw"), (13, "nhwc"), (13, "nchw")]
    assert diagnose.remedy_order(dep, "Clip")[0] == (10, "nhwc")
    assert diagnose.remedy_order(dep, None)[:2] == [(17, "nhwc"), (17, "nchw")]
    tried = []

    def verdict(variant: object, opset: int, layout: str) -> diagnose.Remedy:
        tried.append((opset, layout))
        return diagnose.Remedy(opset, layout, "works" if opset <= 11 else "load failed")

    monkeypatch.setattr(diagnose, "_try_variant", verdict)
    first = diagnose.remedy_search(dep, lambda settings: settings, "Squeeze")
    assert [(r.opset, r.outcome) for r in first] == [(11, "works")] and tried == [(11, "nhwc")]
    unknown = diagnose.remedy_search(dep, lambda settings: settings, None)
    assert [r.outcome for r in unknown] == ["load failed"] * 4 + ["works"]
    assert len(diagnose.remedy_search(dep, lambda settings: settings, "Squeeze", exhaustive=True)) == 8


def test_tf2onnx_warnings_during_a_conversion_are_kept() -> None:
    """Issue 15: tf2onnx logs "Failed to apply optimize_transpose" (the graph then keeps NHWC ops an importer may
    reject) and the plugin swallowed it; the conversion's metadata keeps tf2onnx's warnings, once each."""
    import logging

    from pytest_cvdnn.convert import _Warnings

    with _Warnings() as warned:
        logging.getLogger("tf2onnx.optimizer").warning("Failed to apply %s", "optimize_transpose")
        logging.getLogger("tf2onnx.optimizer").warning("Failed to apply %s", "optimize_transpose")
        logging.getLogger("tf2onnx.tfonnx").info("an info line is not a warning")
        logging.getLogger("keras").warning("another library's warning")
    logging.getLogger("tf2onnx.optimizer").warning("after the conversion: not kept")
    assert warned.messages == ["Failed to apply optimize_transpose"]


def test_a_node_is_said_to_block_every_variant_only_when_it_does() -> None:
    """Issue 15: the message named a Clip and said 4.5.5 needs opset <= 10, but the opset-10 variants failed on
    another node (a ReduceMean).  The blocking node is named only when it blocks every variant; otherwise the
    variant that gets furthest is described."""
    from pytest_cvdnn.diagnose import no_fix_summary

    def r(opset: int, outcome: str, op: str | None = None, detail: str = "") -> dict:
        return {"opset": opset, "layout": "nchw", "outcome": outcome, "detail": detail, "op_type": op}

    blocking = "node 'relu6' (op Clip) blocks every variant; known to import: OpenCV >= 4.8"
    assert no_fix_summary([r(13, "load failed", "Clip"), r(11, "load failed", "Clip")], "Clip", blocking) == blocking
    mixed = [r(13, "load failed", "Clip"), r(10, "load failed", "ReduceMean", "node 'mean' (op ReduceMean) …")]
    assert no_fix_summary(mixed, "Clip", blocking) == ("no variant loads: opset 13 NCHW stop at Clip; opset 10 NCHW "
                                                       "stop at ReduceMean")
    further = [r(13, "load failed", "Clip"), r(10, "parity failed", None, "a batch of 4: max abs error 1")]
    assert no_fix_summary(further, "Clip", blocking) == ("no variant works; the one that gets furthest, opset 10 "
                                                         "NCHW, parity failed: a batch of 4: max abs error 1")


def test_rewrites_skip_tensors_of_unknown_rank_and_one_failing_rewrite_does_not_stop_the_others() -> None:
    """The zoo's UpSampling2D model: shape inference leaves a Squeeze input without a shape; squeeze-as-reshape
    took its rank for 0 and divided by it (ZeroDivisionError), which ended the whole ONNX search, onnxslim
    included.  Now that node is left alone; and a rewrite that raises on a graph is skipped, not fatal."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pytest_cvdnn import rewrites

    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"], name="reshape"),
             helper.make_node("Squeeze", ["r", "axes"], ["y"], name="squeeze")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                                           helper.make_tensor_value_info("s", TensorProto.INT64, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    assert rewrites.squeeze_as_reshape(copy) == [] and copy == model

    def broken(m: object) -> list[str]:
        raise ZeroDivisionError("integer modulo by zero")

    original = dict(rewrites.REWRITES)
    try:
        rewrites.REWRITES.clear()
        rewrites.REWRITES.update({"broken": broken, **original})
        labels = [c.label for c in rewrites.candidates(model)]
    finally:
        rewrites.REWRITES.clear()
        rewrites.REWRITES.update(original)
    assert "broken" not in " ".join(labels) and "onnxslim" in labels


def test_a_rewrite_is_proven_on_its_own_tensors_not_only_on_flat_final_outputs(tmp_path: Path) -> None:
    """The final outputs of an untrained model hardly depend on the input (the zoo's MobileNetV2: 0.001 for every
    class), so they cannot tell a right rewrite from a wrong one.  The rewritten nodes' own outputs are compared
    with the original graph's tensors of the same name: a Clip rewritten to the wrong bounds is caught there."""
    from types import SimpleNamespace

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pytest_cvdnn.fixes import _same_tensors
    from pytest_cvdnn.rewrites import clip_as_hardsigmoid

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_mutants import importer_limits_model

    model = importer_limits_model("clip")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    model.graph.initializer.append(zero)
    model.graph.node.append(helper.make_node("Mul", ["y", "zero"], ["flat"], name="flatten_out"))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 4, 8, 8]))
    onnx.save(model, str(tmp_path / "model.onnx"))
    from pytest_cvdnn.compare import Tolerance

    dep = SimpleNamespace(graph=SimpleNamespace(inputs=[SimpleNamespace(name="x")]), onnx_path=tmp_path / "model.onnx",
                          fixed_batch_of_one=False, to_onnx_inputs=list, settings=SimpleNamespace(tolerance=Tolerance()))
    feeds = [np.random.default_rng(0).normal(0, 1, (3, 3, 8, 8)).astype(np.float32)]
    for hi, expected in ((0.5, None), (0.7, "differs")):  # the right bound, then a wrong one
        fixed = onnx.ModelProto()
        fixed.CopyFrom(model)
        for t in fixed.graph.initializer:
            if t.name == "hi":
                t.CopyFrom(numpy_helper.from_array(np.array(hi, np.float32), "hi"))
        changed = clip_as_hardsigmoid(fixed)
        onnx.save(fixed, str(tmp_path / "fixed.onnx"))
        found = _same_tensors(dep, model, fixed, tmp_path / "fixed.onnx", changed, feeds)
        assert (found is None) if expected is None else (expected in found and "'y'" in found), found


@pytest.mark.parametrize("kind, rewrite, node", [("slice", "sort-slice-axes", "crop"),
                                                 ("squeeze", "squeeze-as-reshape", "squeeze"),
                                                 ("clip", "clip-as-hardsigmoid", "relu6")])
def test_rewrites_read_constants_from_constant_nodes_too(kind: str, rewrite: str, node: str, tmp_path: Path) -> None:
    """PyTorch's exporter writes Clip bounds, Squeeze axes and Slice starts as Constant nodes, not initializers
    (tf2onnx's way, which the rewrites only read before): the same rewrites apply, compute the same in
    onnxruntime, and fix.py (with the helper that reads them) makes the same file."""

    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_mutants import as_constant_nodes, importer_limits_model
    from script_runner import run_script
    from pytest_cvdnn.rewrites import Candidate, apply, candidates, fix_script

    model = as_constant_nodes(importer_limits_model(kind))
    onnx.checker.check_model(model)
    assert [c.label for c in candidates(model)][0] == rewrite
    fixed, changed = apply(model, Candidate((rewrite,)))
    assert changed == [node]
    onnx.checker.check_model(fixed)
    onnx.save(model, str(tmp_path / "model.onnx"))
    onnx.save(fixed, str(tmp_path / "ours.onnx"))
    x = np.random.default_rng(2).normal(size=(3, 3, 8, 8)).astype(np.float32)
    a, b = (ort.InferenceSession(str(tmp_path / f)).run(None, {"x": x})[0] for f in ("model.onnx", "ours.onnx"))
    assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-6)
    (tmp_path / "fix").mkdir()
    (tmp_path / "fix" / "fix.py").write_text(fix_script(Candidate((rewrite,)), str(tmp_path / "model.onnx")))
    run_script(tmp_path / "fix" / "fix.py")
    assert (tmp_path / "fix" / "fixed.onnx").read_bytes() == (tmp_path / "ours.onnx").read_bytes()


def test_dropping_unused_constants_keeps_those_a_subgraph_reads() -> None:
    """fixed.onnx loses the constants no node reads after a rewrite, but not one read only inside an If branch
    (it would be an invalid model)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pytest_cvdnn.rewrites import drop_unused_initializers

    inner = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["then_y"])], "then", [],
                              [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["else_y"])], "else", [],
                              [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, [2])])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=inner, else_branch=other)
    inits = [numpy_helper.from_array(np.ones(2, np.float32), "bias"),
             numpy_helper.from_array(np.ones(2, np.float32), "orphan")]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                                            helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    drop_unused_initializers(model)
    assert [t.name for t in model.graph.initializer] == ["bias"]
    onnx.checker.check_model(model)


def test_opencv_error_lines_keep_their_comparisons() -> None:
    """OpenCV's assertion is quoted as it is ("bufidx >= 0", "axis >= -dims"): only 4.x's "> " continuation marks
    at the start of a line are dropped (they were turned into "bufidx = 0", a different statement)."""
    from pytest_cvdnn.runners.cv2dnn import opencv_error_line

    assert opencv_error_line(Exception(
        "OpenCV(5.1.0) /io/opencv/modules/dnn/src/net_impl2.cpp:465: error: (-215:Assertion failed) bufidx >= 0 in "
        "function 'argTensor'\n")) == "bufidx >= 0 in function 'argTensor'"
    assert opencv_error_line(Exception(
        "OpenCV(4.8.1) /x/onnx_importer.cpp:1073: error: (-2:Unspecified error) in function 'handleNode'\n"
        "> Node [DequantizeLinear@ai.onnx]:(dq) parse error: OpenCV(4.8.1) /x/layer.cpp:9: error: (-215:Assertion "
        "failed) axis >= -dims && axis < dims in function 'normalize_axis'\n> ")) == (
        "node 'dq' (op DequantizeLinear) cannot be imported: axis >= -dims && axis < dims in function 'normalize_axis'")


def test_the_output_checks_decide_on_arrays_and_tables() -> None:
    """The output checks' pure decisions: non-finite values per runner and output, the (shape, dtype) table
    against the reference, bit-identity of repeated forwards, and a failure the logits explain."""
    from pytest_cvdnn.verdicts import first_difference, not_finite, output_table_problems, softmax_only_failures

    finite = np.ones((2, 3), np.float32)
    inf = np.full((2, 3), np.inf, np.float32)
    nan = finite.copy()
    nan[0, 1] = np.nan
    assert not_finite({"keras": [finite, np.arange(3)]}, ["a", "b"]) == []
    assert not_finite({"keras": [finite, inf], "cv2dnn": [nan]}, ["a"]) == [
        "keras output '1': 0 NaN, 6 Inf of 6", "cv2dnn output 'a': 1 NaN, 0 Inf of 6"]

    ref = [((1, 5), "float32"), ((1, 4, 8, 8), "float32")]
    table = {"keras": ref, "same": ref, "count": ref[:1], "shape": [((1, 5), "float32"), ((1, 8, 8, 4), "float32")],
             "ones": [((5,), "float32"), ((1, 4, 8, 8), "float32")], "half": [((1, 5), "float16"), ref[1]]}
    problems, notes = output_table_problems(table, "keras", ["probs", "map"])
    assert problems == ["count returns 1 output(s), keras 2",
                        "output 1 (map): shape (1, 8, 8, 4) vs keras (1, 4, 8, 8)",
                        "output 0: half dtype float16 vs keras float32"]
    assert notes == ["output 0 (probs): ones (5,) vs keras (1, 5) (only size-1 axes differ)"]
    assert output_table_problems({"keras": ref, "x": [((2, 5), "float32"), ref[1]]}, "keras", [])[0] == [
        "output 0 (0): x (2, 5) vs keras (1, 5)"]  # (a size that is not 1 differs: a problem, named by index)

    a = [finite, np.array([np.nan, 1.0])]
    assert first_difference(a, [finite.copy(), np.array([np.nan, 1.0])]) is None  # (NaN where NaN: identical)
    assert first_difference(a, [finite + 1e-7, a[1]]) == (0, pytest.approx(1.1920929e-07))  # (not allclose)
    assert first_difference(a, [finite, np.array([np.nan, 1.5])]) == (1, 0.5)
    assert first_difference(a, [finite[:1], a[1]]) == (0, float("inf"))
    assert first_difference(a, a[:1]) == (-1, float("inf"))

    probs, logits, box = ({"name": n, "ok": ok} for n, ok in (("probs", False), ("probs (logits)", True),
                                                                ("box", True)))
    assert softmax_only_failures([probs, logits, box]) == ["probs"]
    assert softmax_only_failures([probs, {**logits, "ok": False}, box]) == []  # (the logits differ too)
    assert softmax_only_failures([probs, logits, {**box, "ok": False}]) == []  # (another output fails)
    assert softmax_only_failures([{**probs, "ok": True}, logits, box]) == []  # (nothing fails)


@pytest.mark.parametrize("parse, value, said", [
    ("parse_gib", "x", "'x' is not a number of GiB"),
    ("parse_gib", "0", "'0' must be a positive number of GiB"),
    ("parse_gib", "-1", "'-1' must be a positive number of GiB"),
    ("parse_gib", "nan", "'nan' must be a positive number of GiB"),
    ("parse_gib", "inf", "'inf' must be a positive number of GiB"),
    ("parse_seconds", "soon", "'soon' is not a number of seconds"),
    ("parse_seconds", "0", "'0' must be a number of seconds in (0, 86400]"),
    ("parse_seconds", "86400.5", "'86400.5' must be a number of seconds in (0, 86400]"),
    ("parse_seed", "1.5", "'1.5' is not an integer seed"),
    ("parse_seed", "-1", "'-1': a seed is an integer from 0 to 2**32-1"),
    ("parse_seed", str(2 ** 32), f"'{2 ** 32}': a seed is an integer from 0 to 2**32-1"),
    ("parse_fraction", "most", "'most' is not a number; use e.g. 0.99"),
    ("parse_fraction", "0", "'0' is not a share in (0, 1]; use e.g. 0.99 (99 % of the images)"),
    ("parse_fraction", "1.01", "'1.01' is not a share in (0, 1]; use e.g. 0.99 (99 % of the images)"),
    ("parse_drop", "-0.1", "'-0.1' is not a fraction in [0, 1): use e.g. 0.01 for one point; 1 or more would let "
                           "any drop pass"),
    ("parse_drop", "1", "'1' is not a fraction in [0, 1): use e.g. 0.01 for one point; 1 or more would let any "
                        "drop pass"),
    ("parse_range", "1", "'1' is not a range; write LOW,HIGH, e.g. -1,1 or 0,255"),
    ("parse_range", "1,1", "'1,1': the range needs finite LOW < HIGH"),
    ("parse_range", "0,inf", "'0,inf': the range needs finite LOW < HIGH"),
    ("parse_range", "0,2e9", "'0,2e9': the values fed to the model must lie within ±1e+09 (float32 inputs; larger "
                             "ones overflow to inf in the model's first layers)"),
    ("parse_input_shape", "64x0x3", "'64x0x3' is not an input shape; write the shape without the batch, e.g. "
                                    "64x64x1 (an image, NHWC) or 40 (a vector), and one per input separated by ';'"),
    ("parse_input_shape", ";", "';' is not an input shape; write e.g. 64x64x1"),
    ("parse_precisions", "int4", "'int4': unknown precision int4; use a comma list of fp16 (float16 weights, "
                                 "float32 arithmetic) and int8 (onnxruntime static quantization, QDQ)"),
    ("parse_precisions", ",", "',': unknown precision (empty); use a comma list of fp16 (float16 weights, float32 "
                              "arithmetic) and int8 (onnxruntime static quantization, QDQ)"),
])
def test_each_numeric_option_refuses_what_it_cannot_mean_with_its_own_words(parse: str, value: str, said: str) -> None:
    import argparse

    from pytest_cvdnn import settings

    with pytest.raises(argparse.ArgumentTypeError) as info:
        getattr(settings, parse)(value)
    assert str(info.value) == said


def test_each_numeric_option_takes_its_boundaries() -> None:
    from pytest_cvdnn import settings

    assert settings.parse_gib("0.5") == 0.5 and settings.parse_seconds("86400") == 86400.0
    assert settings.parse_seconds("0.01") == 0.01
    assert settings.parse_seed("0") == 0 and settings.parse_seed(str(2 ** 32 - 1)) == 2 ** 32 - 1
    assert settings.parse_fraction("1") == 1.0 and settings.parse_fraction("0.001") == 0.001
    assert settings.parse_drop("0") == 0.0 and settings.parse_drop("0.999") == 0.999
    assert settings.parse_range("-1e9:1e9") == (-1e9, 1e9) and settings.parse_range(" 0 255 ") == (0.0, 255.0)
    assert settings.parse_input_shape("64x64x1;10") == ((64, 64, 1), (10,))
    assert settings.parse_input_shape("1*2,3") == ((1, 2, 3),)
    assert settings.parse_input_shape((8, 8, 3)) == ((8, 8, 3),)
    assert settings.parse_input_shape([(8, 8, 3), [4]]) == ((8, 8, 3), (4,))
    assert settings.parse_precisions(" INT8 , fp16,int8") == ("int8", "fp16")
    assert settings.parse_tol("0") == 0.0 and settings._tol("srtol")("0.5") == 0.5


def test_the_verdict_helpers_say_exactly_what_differs() -> None:
    from pytest_cvdnn.verdicts import (CheckFailed, first_difference, not_finite, output_table_problems,
                                       rewrite_difference, shape_text)

    assert shape_text((None, 3, 224)) == "(?, 3, 224)" and shape_text(()) == "()"
    failed = CheckFailed("it differs.", fix="do this", details="numbers")
    assert (failed.message, failed.fix, failed.details, failed.data) == ("it differs", "do this", "numbers", {})
    assert CheckFailed("x", data={"a": 1}).data == {"a": 1}
    assert not_finite({"r": [np.array([1, 2])]}, []) == []  # (integers are finite)
    assert not_finite({"r": [np.array([np.inf, -np.inf, np.nan], np.float16)]}, []) == ["r output '0': 1 NaN, 2 Inf of 3"]
    # a second runner with one more output, and a shape that differs in more than size-1 axes
    problems, notes = output_table_problems({"ref": [((1, 4), "float32")],
                                              "more": [((1, 4), "float32"), ((1,), "float32")],
                                              "squeezed": [((4, 1), "float32")]}, "ref", ["y"])
    assert problems == ["more returns 2 output(s), ref 1"] and notes == [
        "output 0 (y): squeezed (4, 1) vs ref (1, 4) (only size-1 axes differ)"]
    assert output_table_problems({"ref": [((2, 2), "f")], "t": [((4,), "f")]}, "ref", ["y"]) == (
        ["output 0 (y): t (4,) vs ref (2, 2)"], [])  # (same size, other non-1 dims: not the same data)
    a = [np.zeros((2, 2), np.float32), np.ones(3, np.int64)]
    assert first_difference(a, [a[0], np.array([1, 1, 3])]) == (1, 2.0)
    assert first_difference(a, [np.full((2, 2), np.nan, np.float32), a[1]]) == (0, 0.0)  # (all NaN: no number)
    assert first_difference([np.zeros(0)], [np.zeros(0)]) is None
    assert first_difference(a, a[::-1])[0] == 0
    x = np.array([1.0, -2.0, -4.0])
    assert rewrite_difference("output", [("y", x, x + 5e-6)]) == "output 'y' differs by 5e-06 (max |output| 4) in onnxruntime"
    assert rewrite_difference("output", [("y", x, x + 5e-6)], relative=2e-6) is None  # (within 2e-6 of 4)
    assert rewrite_difference("output", [("y", x, x + 3.9e-6)]) is None  # (within 1e-6 of max |x| = 4)
    assert rewrite_difference("tensor", [("t", x, x[:2])]) == "tensor 't' has the shape (2,), the original (3,)"
    assert rewrite_difference("output", [("e", np.zeros(0), np.zeros(0)), ("y", x, x)]) is None
    assert rewrite_difference("output", [("a", x, x), ("b", x, -x)]).startswith("output 'b' differs by 8")


def test_devices_are_parsed_keyed_and_coded_exactly() -> None:
    """--cvdnn-device: known names only (the message lists them), duplicates once, first kept first; the default
    device keeps the cached outputs' key; the printed calls name the pair."""
    import argparse

    from pytest_cvdnn.devices import DEVICES, device_code, net_key
    from pytest_cvdnn.settings import parse_devices

    assert parse_devices(" CPU, opencl_fp16,cpu ") == ("cpu", "opencl_fp16")
    for bad, said in (("gpu", "'gpu' is not a cv2.dnn device; use one of " + ", ".join(DEVICES)), (" , ", "no device")):
        with pytest.raises(argparse.ArgumentTypeError, match=said):
            parse_devices(bad)
    assert net_key("auto", "cpu") == "auto" and net_key("ort", "opencl_fp16") == "ort+opencl_fp16"
    assert device_code("cuda_fp16") == ("net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)\n"
                                        "net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA_FP16)")


def test_every_setting_that_changes_a_deployment_is_in_its_memo_key() -> None:
    """The session memoises deployments by ModelSettings.key(): a field left out makes two deployments one
    (--cvdnn-device ran its items on the CPU until it was added).  Each field is in the key, or listed here as
    not changing what a deployment computes."""
    import dataclasses

    from pytest_cvdnn.settings import ModelSettings

    session_wide = {"formats", "quantize", "fix", "repro", "save_bundle", "bundle", "tf_helper", "memory_budget",
                    "timeout", "protected"}
    base = ModelSettings(model="m")
    for field in dataclasses.fields(ModelSettings):
        if field.name in session_wide or field.name == "model":
            continue
        other = dataclasses.replace(base, **{field.name: _another_value(getattr(base, field.name))})
        assert other.key() != base.key(), field.name


def _another_value(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return (*value, "x")
    return "x"  # (None and objects: a value that differs)


def test_device_items_are_named_per_device_target_and_precision() -> None:
    from pytest_cvdnn.checks import check_items

    items = check_items(True, ["opencv==4.8.1"], devices=("opencl",), precisions=("int8",))
    named = [(i.name, i.target, i.fmt, i.device) for i in items if i.device]
    assert named[:2] == [("load[device-opencl]", None, "onnx", "opencl"),
                         ("output_spec[device-opencl]", None, "onnx", "opencl")]
    assert ("parity[keras-cv2dnn@opencv-4.8.1+device-opencl]", "opencv==4.8.1", "onnx", "opencl") in named
    assert ("int8:load[opencv-4.8.1+device-opencl]", "opencv==4.8.1", "int8", "opencl") in named
    assert not [n for n, *_ in named if n.startswith(("ops", "int8:ops", "convert", "int8:convert"))]
    assert len(named) == 2 * (6 + 4)  # (here and on the target: 6 float items and 4 int8 items each)
    assert all(i.device is None for i in check_items(True, ["opencv==4.8.1"]))
