"""Everything the plugin prints for a user to paste runs, on every supported OpenCV, and builds the plugin's blob.

The code is executed as a user would paste it (a namespace holding only ``cv2``, ``np`` and ``img``), in a child
process per OpenCV version (installed side by side, see targets.py), and its blob is compared with
``spec.blob()`` on scikit-image's photos.  No TensorFlow is needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_cvdnn import InputSpec

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

#: the OpenCV versions the plugin supports and tests (pyproject.toml, README "Supported OpenCV")
SUPPORTED = ("4.5.5", "4.8.1", "4.12.0", "5.0.0", "5.1.0")

#: one spec per code path: blobFromImage, Image2BlobParams (per-channel scale, std, NHWC, letterbox, crop),
#: the numpy fallback (nearest resize; every spec on OpenCV < 4.8), the dtype conversions, 1 and 4 channels
SPECS = (
    "caffe,size=224x224",
    "tf,size=96x64",
    "tf,size=96x96,crop=center",
    "torch,size=224x224",
    "torch,size=80x80,crop=center",
    "torch,size=64x64,crop=letterbox",
    "none,size=64x64",
    "scale=0.00392,mean=0/0/0,swap_rb=0,size=64x48,layout=nhwc",
    "caffe,size=64x64,layout=nhwc,crop=letterbox",
    "caffe,size=33x77,crop=center",
    "tf,size=64x64,interpolation=nearest",
    "scale=1,mean=0/0/0,size=32x32,dtype=uint8",
    "tf,size=32x32,dtype=float16",
    # gray (1 channel: the printed code converts cv2.imread's BGR image) and BGRA (4 channels, alpha padded)
    "tf,size=64x48,channels=1",
    "scale=0.0039,mean=127,size=40x40,channels=gray,crop=center",
    "scale=0.5,mean=3,std=2,size=30x20,channels=1,layout=nhwc",
    "scale=0.00392,mean=10/20/30/40,std=1/2/3/4,size=32x32",
    "none,size=32x32,channels=4,layout=nhwc,crop=letterbox",
    "scale=2,mean=1/2/3,size=16x24,channels=4",
)


def _python_path(version: str) -> str:
    """PYTHONPATH that puts OpenCV ``version`` (and its numpy) first: the installed one, or side by side."""
    import cv2

    if cv2.__version__ == version:
        return str(SRC)
    from conftest import side_by_side

    return f"{side_by_side(version)}:{SRC}"


def _run_child(version: str, specs: tuple[str, ...] = SPECS) -> list[dict[str, Any]]:
    import os

    env = dict(os.environ, PYTHONPATH=_python_path(version))
    proc = subprocess.run([sys.executable, str(HERE / "snippet_child.py"), *specs], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _agrees(entry: dict[str, Any]) -> bool:
    """The pasted code's blob has the plugin's shape and dtype, and equals it within 1e-6 (relative to the
    blob's magnitude: float32 arithmetic on values ~150 cannot be closer)."""
    return bool(entry["shape_ok"] and entry["dtype_ok"] and entry["max_abs"] is not None
                and entry["max_abs"] <= 1e-6 * max(1.0, entry["scale"]))


@pytest.mark.parametrize("version", SUPPORTED)
def test_printed_blob_code_runs_and_reproduces_the_blob(version: str) -> None:
    results = _run_child(version)
    assert results and all(r["opencv"] == version for r in results)
    errors = [(r["spec"], r["error"][-800:]) for r in results if "error" in r]
    assert not errors, errors
    for r in results:
        assert _agrees(r["cv2"]), (r["spec"], r["photo"], r["cv2"])
        assert _agrees(r["numpy"]), (r["spec"], r["photo"], r["numpy"])
    codes = {r["spec"]: r["cv2"]["code"] for r in results}
    per_channel = codes["torch,size=224x224"]
    assert "paddingmode" not in "".join(codes.values())  # the constructor's keyword is mode=
    if tuple(int(v) for v in version.split(".")[:2]) < (4, 8):
        assert per_channel.startswith(f"# OpenCV {version} has no blobFromImageWithParams (it arrived in 4.8)")
        assert "blobFromImageWithParams(" not in per_channel
    else:
        assert per_channel.startswith("blob = cv2.dnn.blobFromImageWithParams(img, cv2.dnn.Image2BlobParams(")
        assert ", mode=cv2.dnn.DNN_PMODE_NULL))" in per_channel
    assert codes["caffe,size=224x224"].startswith("blob = cv2.dnn.blobFromImage(img, scalefactor=1.0")
    assert codes["tf,size=64x64,interpolation=nearest"].startswith("# blobFromImage resizes bilinearly only")


def _paste(code: str, img: np.ndarray) -> np.ndarray:
    sys.path.insert(0, str(HERE))
    try:
        from snippet_child import run
    finally:
        sys.path.remove(str(HERE))
    return run(code, img)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from pytest_cvdnn.preprocess import load_photos

    return load_photos()[1][1]  # chelsea, 300x451: not square


def test_the_harness_catches_code_that_crashes_or_builds_another_blob(photo: np.ndarray) -> None:
    """The comparison above can fail: the 5.1 regression (paddingmode=) raises, a flipped swapRB differs."""
    import cv2

    spec = InputSpec.parse("torch,size=64x64,crop=center")
    code = spec.to_cv2_code()
    expected = spec.blob([photo])
    assert np.abs(_paste(code, photo) - expected).max() <= 1e-6 * np.abs(expected).max()
    if hasattr(cv2.dnn, "Image2BlobParams"):
        with pytest.raises((cv2.error, TypeError), match="paddingmode"):
            _paste(code.replace("mode=", "paddingmode="), photo)
    flipped = code.replace("swapRB=True", "swapRB=False").replace("x = x[..., ::-1]  # swapRB\n", "")
    assert flipped != code
    assert np.abs(_paste(flipped, photo) - expected).max() > 0.1
    # the crop this plugin's numpy fallback did before (resize to a rounded size, not by OpenCV's factor)
    numpy_crop = spec.to_numpy_code().replace("cv2.resize(img, None, fx=r, fy=r,", "cv2.resize(img, (round(iw * r), "
                                              "round(ih * r)),")
    assert numpy_crop != spec.to_numpy_code()
    assert np.abs(_paste(numpy_crop, photo) - expected).max() > 0.01


def test_code_for_another_opencv_version_names_the_right_constants() -> None:
    spec = InputSpec.parse("tf,size=32x32,layout=nhwc")
    assert "datalayout=cv2.dnn.DNN_LAYOUT_NHWC" in spec.to_cv2_code("4.8.1")
    assert "datalayout=cv2.DNN_LAYOUT_NHWC" in spec.to_cv2_code("5.1.0")  # moved to cv2 in OpenCV 5
    assert spec.to_cv2_code("4.5.5").startswith("# OpenCV 4.5.5 has no blobFromImageWithParams")
    assert spec.to_cv2_code("4.5.5").endswith(spec.to_numpy_code())


def test_printed_code_in_this_process_too() -> None:
    """The same check without a child process, on the installed OpenCV (mutation testing sees this one)."""
    import cv2

    from snippet_child import main

    results = main(list(SPECS))
    assert not [r for r in results if "error" in r]
    assert all(_agrees(r["cv2"]) and _agrees(r["numpy"]) for r in results)
    assert all(r["opencv"] == cv2.__version__ for r in results)


@pytest.mark.parametrize("text", SPECS)
def test_the_numpy_fallback_equals_opencv_where_opencv_can_build_the_blob(text: str, photo: np.ndarray) -> None:
    """spec.blob() on OpenCV (blobFromImage / blobFromImageWithParams) against the plugin's own numpy path."""
    from pytest_cvdnn.preprocess import _as_dtype, _numpy_blob, blob_method, source_image, to_nhwc

    spec = InputSpec.parse(text)
    expected = _as_dtype(_numpy_blob([source_image(photo, spec)], spec), spec)
    got = spec.blob([photo])
    assert got.shape == expected.shape and got.dtype == expected.dtype, blob_method(spec)
    scale = max(1.0, float(np.abs(expected.astype(np.float64)).max()))
    assert np.abs(got.astype(np.float64) - expected.astype(np.float64)).max() <= 1e-6 * scale
    assert to_nhwc(got, spec.layout).shape[-1] == spec.n_channels


@pytest.mark.parametrize("text", ["size=16x12,channels=1", "size=16x12,channels=1,channel_order=rgb",
                                  "size=16x12,channels=4,channel_order=rgb", "size=16x12,channel_order=rgb,swap_rb=0",
                                  "size=16x12,channels=4,scale=0.5,mean=1/2/3"])
def test_the_printed_code_turns_the_applications_own_image_into_the_blob(text: str, photo: np.ndarray) -> None:
    """The source lines of the printed code, pasted on the image the application holds (BGR from cv2.imread, or
    RGB where the spec's channel_order says so), build the spec's blob of that photo."""
    from snippet_child import run as paste

    from pytest_cvdnn.preprocess import cv2_call

    spec = InputSpec.parse(text)
    held = np.ascontiguousarray(photo[..., ::-1]) if spec.channel_order == "rgb" else photo
    code = cv2_call(spec)
    assert code.startswith("# img: an RGB image (channel_order=rgb: e.g. from PIL or a camera API), not "
                           "cv2.imread's BGR\n") == (spec.channel_order == "rgb")
    src = "RGB" if spec.channel_order == "rgb" else "BGR"
    if spec.n_channels == 1:
        assert ("if img.ndim == 3:  # the model takes 1 channel: gray, as cv2.imread(path, cv2.IMREAD_GRAYSCALE) "
                f"reads it\n    img = cv2.cvtColor(img, cv2.COLOR_{src}2GRAY)\n") in code
    if spec.n_channels == 4:
        assert (f"if img.ndim == 3 and img.shape[2] == 3:  # the model takes 4 channels ({src}A, as "
                f"cv2.imread(path, cv2.IMREAD_UNCHANGED) reads a PNG with alpha)\n"
                f"    img = cv2.cvtColor(img, cv2.COLOR_{src}2{src}A)\n") in code
    np.testing.assert_array_equal(paste(code, held), spec.blob([photo]))


AGREEMENT_CHILD = """
import sys, json, numpy as np, cv2
path, out = sys.argv[1], sys.argv[2]
codes = json.loads(sys.argv[3])
arrays = {}
for k, code in enumerate(codes):
    namespace = {"cv2": cv2, "np": np, "path": path, "img": cv2.imread(path, cv2.IMREAD_COLOR)}
    exec(compile(code, "<pasted>", "exec"), namespace)
    arrays[f"a{k}"] = namespace["blob"] if "blob" in namespace else namespace["img"]
np.savez(out, **arrays)
print(cv2.__version__)
"""


@pytest.mark.parametrize("version", SUPPORTED)
def test_the_agreement_fixes_run_as_printed_on_every_opencv(version: str, tmp_path: Path) -> None:
    """The agreement item's fixes (a resize before the blob, with each interpolation it tries; a read that ignores
    the EXIF orientation), pasted with ``path`` and ``img = cv2.imread(path)`` as a deployment has them, build what
    the pipeline the item measured builds (within a pixel level: OpenCV versions round resizes differently)."""
    import os

    from PIL import Image

    from pytest_cvdnn.checks_agreement import RESIZE_FIXES
    from pytest_cvdnn.pipelines import deployed_pipeline, resize_code, tensors

    rng = np.random.default_rng(0)
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(path, exif=exif, quality=95)
    spec = InputSpec.parse("none,size=48x40")
    codes = [resize_code(spec, name) for name in RESIZE_FIXES]
    codes.append("img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)")
    env = dict(os.environ, PYTHONPATH=_python_path(version))
    proc = subprocess.run([sys.executable, "-c", AGREEMENT_CHILD, str(path), str(tmp_path / "out.npz"),
                           json.dumps(codes)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == version, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    deployed = deployed_pipeline(spec)
    from dataclasses import replace

    for k, name in enumerate(RESIZE_FIXES):
        want = tensors([path], replace(deployed, resize=f"opencv:{name}"), spec.size)
        blob = np.moveaxis(got[f"a{k}"], 1, -1)
        assert blob.shape == want.shape and np.abs(blob - want).max() <= 1.0, (name, np.abs(blob - want).max())
    import cv2

    turned = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert got[f"a{len(RESIZE_FIXES)}"].shape == turned.shape == (90, 120, 3)  # (not turned upright: 120x90)
