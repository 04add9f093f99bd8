"""Quick tier: option parsing, marker keywords and the cache, without TensorFlow, OpenCV or a model."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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
    assert parse_seed("-5") == -5
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
    assert json.loads((tmp_path / "keras" / "m.json").read_text()) == {"a": [1, 2], "b": 1}
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
