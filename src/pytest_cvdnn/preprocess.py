"""Building the deployment blob with OpenCV exactly as deployment code would.

``make_blob`` picks the OpenCV call that can express the spec:

* ``cv2.dnn.blobFromImages`` for a scalar scale, no std, NCHW, no letterbox;
* ``cv2.dnn.blobFromImagesWithParams`` (OpenCV >= 4.8) for per-channel scale/std,
  NHWC output or letterbox;
* a documented numpy fallback otherwise (older OpenCV), which computes the same
  ``(resize(img) - mean) * scale / std``.

``cv2_call`` returns the line a user pastes into deployment code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import CvdnnError

if TYPE_CHECKING:  # (spec.py's InputSpec.blob() calls this module: a type here, no import cycle)
    from .spec import InputSpec

__all__ = ["make_blob", "source_image", "cv2_call", "numpy_code", "blob_method", "load_photos", "pil_nearest_tensor", "candidate_mistakes", "Mistake", "to_nhwc"]

_INTERP_NAMES = {"bilinear": "INTER_LINEAR", "nearest": "INTER_NEAREST", "bicubic": "INTER_CUBIC", "area": "INTER_AREA"}


def _plain_ok(spec: InputSpec) -> bool:
    """Can plain blobFromImage express the spec?"""
    return (
        spec.std is None
        and isinstance(spec.scale, (int, float))
        and spec.layout == "nchw"
        and spec.crop in ("none", "center")
        and spec.interpolation == "bilinear"
        and spec.dtype == "float32"
    )


def _plain_scale(spec: InputSpec) -> float:
    """The scalar scale of a spec plain blobFromImage can express (:func:`_plain_ok`)."""
    scale = spec.scale
    assert isinstance(scale, (int, float)), "_plain_ok: a scalar scale"
    return float(scale)


def _has_params() -> bool:
    import cv2

    return hasattr(cv2.dnn, "blobFromImagesWithParams") and hasattr(cv2.dnn, "Image2BlobParams")


def _const(name: str) -> tuple[str, int]:
    """An OpenCV constant and where it lives: DNN_LAYOUT_* moved from cv2.dnn (4.x) to cv2 (5.x)."""
    import cv2

    if hasattr(cv2.dnn, name):
        return f"cv2.dnn.{name}", int(getattr(cv2.dnn, name))
    return f"cv2.{name}", int(getattr(cv2, name))


def _layout_const(spec: InputSpec) -> tuple[str, int]:
    return _const("DNN_LAYOUT_NHWC" if spec.layout == "nhwc" else "DNN_LAYOUT_NCHW")


#: OpenCV's padding mode of each crop of the spec (cv2.dnn.DNN_PMODE_*, where 4.8 … 5.1 all keep them)
_PMODES = {"none": "DNN_PMODE_NULL", "center": "DNN_PMODE_CROP_CENTER", "letterbox": "DNN_PMODE_LETTERBOX"}


def _pad_const(spec: InputSpec) -> tuple[str, int]:
    return _const(_PMODES[spec.crop])


def blob_method(spec: InputSpec) -> str:
    """Which implementation :func:`make_blob` uses for ``spec`` on the installed OpenCV."""
    if _plain_ok(spec):
        return "blobFromImage"
    if _has_params() and spec.interpolation == "bilinear" and not _params_cannot(spec):
        return "blobFromImageWithParams"
    return "numpy"


def _params_cannot(spec: InputSpec) -> str:
    """Why blobFromImageWithParams cannot build this spec's blob on any supported OpenCV ('' if it can)."""
    if spec.n_channels == 4 and spec.layout == "nhwc":
        return ("blobFromImageWithParams cannot build a 4-channel NHWC blob (it asserts in copyTo on OpenCV "
                "4.8 … 5.1)")
    return ""


def _effective_scale(spec: InputSpec) -> tuple[float, ...]:
    """scale / std per channel of the blob (1, 3 or 4 values)."""
    return tuple(a / b for a, b in zip(spec.per_channel("scale"), spec.per_channel("std"), strict=True))


def _scalar4(values: Sequence[float]) -> tuple[float, float, float, float]:
    """A cv2.Scalar (4 values) from 1, 3 or 4 per-channel values."""
    padded = (*values, *(0.0,) * (4 - len(values)))
    return (float(padded[0]), float(padded[1]), float(padded[2]), float(padded[3]))


#: how a BGR image (cv2.imread's default) becomes the source of a 1- or 4-channel spec
_SOURCE_CONVERSION = {("bgr", 1): "COLOR_BGR2GRAY", ("bgr", 4): "COLOR_BGR2BGRA",
                      ("rgb", 1): "COLOR_RGB2GRAY", ("rgb", 4): "COLOR_RGB2RGBA"}


def source_image(img: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``img`` (a BGR photo, as cv2.imread gives it) as the deployment's source image under ``spec``: in the
    spec's channel order (an RGB source is the photo's channels reversed, what PIL or a camera API gives) and
    with the channel count the blob is built from: gray (1 channel, what ``cv2.IMREAD_GRAYSCALE`` reads) or
    with an opaque alpha (4 channels); an image that has them already is unchanged."""
    import cv2

    img = np.ascontiguousarray(img)
    have = 1 if img.ndim == 2 else img.shape[2]
    want, order = spec.n_channels, spec.channel_order
    if order == "rgb" and have in (3, 4):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB if have == 3 else cv2.COLOR_BGRA2RGBA)
    if have == want:
        return img
    if have == 3 and (order, want) in _SOURCE_CONVERSION:
        return cv2.cvtColor(img, getattr(cv2, _SOURCE_CONVERSION[order, want]))
    if have == 1 and want == 3:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR if order == "bgr" else cv2.COLOR_GRAY2RGB)
    if have == 4 and want == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR if order == "bgr" else cv2.COLOR_RGBA2RGB)
    raise CvdnnError(f"an image with {have} channels cannot be the source of a {want}-channel blob",
                     fix=f"give images with {want} channels (or 3-channel BGR photos)")


def _source_lines(spec: InputSpec) -> list[str]:
    """The line(s) the printed code starts with to turn the source image (cv2.imread's BGR, or an RGB image
    where the spec's channel_order is rgb) into the channel count the blob is built from."""
    rgb = spec.channel_order == "rgb"
    src = "RGB" if rgb else "BGR"
    lines = ["# img: an RGB image (channel_order=rgb: e.g. from PIL or a camera API), not cv2.imread's BGR"] if rgb else []
    if spec.n_channels == 1:
        return lines + ["if img.ndim == 3:  # the model takes 1 channel: gray, as cv2.imread(path, "
                        "cv2.IMREAD_GRAYSCALE) reads it", f"    img = cv2.cvtColor(img, cv2.COLOR_{src}2GRAY)"]
    if spec.n_channels == 4:
        return lines + [f"if img.ndim == 3 and img.shape[2] == 3:  # the model takes 4 channels ({src}A, as "
                        "cv2.imread(path, cv2.IMREAD_UNCHANGED) reads a PNG with alpha)",
                        f"    img = cv2.cvtColor(img, cv2.COLOR_{src}2{src}A)"]
    return lines


def make_blob(images: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """A blob from source images (BGR as cv2.imread gives them, converted to gray or BGRA for a 1- or
    4-channel spec), in ``spec.layout``."""
    import cv2

    if spec.size is None:
        raise ValueError("the input spec has no size; set InputSpec(size=(w, h)) or let the model supply it")
    from .budget import check_blob_budget

    check_blob_budget(int(spec.size[0]), int(spec.size[1]), 4, len(images), "the input spec's blob")
    imgs = [source_image(img, spec) for img in images]
    method = blob_method(spec)
    if method == "blobFromImage":
        return cv2.dnn.blobFromImages(
            imgs, _plain_scale(spec), spec.size, _scalar4(spec.per_channel("mean")), spec.swap_rb,
            spec.crop == "center", cv2.CV_32F
        )
    if method == "blobFromImageWithParams":
        scale = _effective_scale(spec)
        params = cv2.dnn.Image2BlobParams()
        params.scalefactor = _scalar4(scale)
        params.size = spec.size
        params.mean = _scalar4(spec.per_channel("mean"))
        params.swapRB = spec.swap_rb
        params.ddepth = cv2.CV_32F
        params.datalayout = _layout_const(spec)[1]
        params.paddingmode = _pad_const(spec)[1]
        return _as_dtype(cv2.dnn.blobFromImagesWithParams(imgs, params), spec)
    return _as_dtype(_numpy_blob(imgs, spec), spec)


def _as_dtype(blob: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The blob in the spec's dtype (OpenCV builds float32; see :func:`_dtype_line` for the printed code)."""
    if spec.dtype == "float16":
        return blob.astype(np.float16)
    if spec.dtype == "uint8":
        rounded: np.ndarray = np.clip(np.rint(blob), 0, 255).astype(np.uint8)  # (numpy types rint as Any)
        return rounded
    return blob


def _numpy_blob(sources: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Fallback: the same arithmetic as OpenCV (resize, optional crop, swap, normalise) in numpy, on the source
    images (:func:`source_image`)."""
    pixels = [p if p.ndim == 3 else p[..., None] for p in _numpy_blob_pixels(sources, spec)]
    rows = [(_swapped(p) if spec.swap_rb else p).astype(np.float32) for p in pixels]
    batch = spec.normalize(np.stack(rows))
    return np.ascontiguousarray(batch if spec.layout == "nhwc" else np.transpose(batch, (0, 3, 1, 2)))


def _swapped(pixels: np.ndarray) -> np.ndarray:
    """swapRB: the first and third channels exchanged (alpha stays last)."""
    return pixels[..., [2, 1, 0, 3]] if pixels.shape[-1] == 4 else pixels[..., ::-1]


def _tuple(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _exact(values: Sequence[float]) -> str:
    """A tuple of floats printed so that pasting it gives back the same numbers (repr precision)."""
    return "(" + ", ".join(repr(float(v)) for v in values) + ")"


def _version(opencv: str) -> tuple[int, int]:
    try:
        major, minor = (int(v) for v in opencv.split(".")[:2])
    except ValueError:
        return (99, 0)
    return major, minor


def cv2_call(spec: InputSpec, opencv: str | None = None) -> str:
    """The deployment code that builds this blob as ``blob`` from ``img`` (a BGR image from cv2.imread), for
    OpenCV ``opencv`` (default: the installed one).  It runs as printed after ``import cv2, numpy as np``:
    ``blobFromImage`` where it can express the spec, else ``blobFromImageWithParams`` (OpenCV >= 4.8), else
    (older OpenCV, or a resize other than bilinear) the same arithmetic in numpy, saying why."""
    if spec.size is None:
        raise ValueError("the input spec has no size; set InputSpec(size=(w, h)) or let the model supply it")
    if opencv is None:
        from .runners.cv2dnn import opencv_version

        opencv = opencv_version()
    version = _version(opencv)
    source = "".join(line + "\n" for line in _source_lines(spec))
    mean = spec.per_channel("mean")
    if _plain_ok(spec):
        return source + (
            f"blob = cv2.dnn.blobFromImage(img, scalefactor={_plain_scale(spec)!r}, size={tuple(spec.size)}, "
            f"mean={_exact(mean)}, swapRB={spec.swap_rb}, crop={spec.crop == 'center'})"
        )
    if spec.interpolation != "bilinear":
        return (f"# blobFromImage resizes bilinearly only; this spec resizes with {spec.interpolation} interpolation: "
                "the blob in numpy\n" + numpy_code(spec))
    if _params_cannot(spec):
        return f"# {_params_cannot(spec)}: the blob in numpy\n" + numpy_code(spec)
    if version < (4, 8):
        return (f"# OpenCV {opencv} has no blobFromImageWithParams (it arrived in 4.8), which this spec needs: "
                "the same blob in numpy\n" + numpy_code(spec))
    where = "cv2" if version >= (5, 0) else "cv2.dnn"  # DNN_LAYOUT_* moved to the cv2 namespace in OpenCV 5
    layout = f"{where}.DNN_LAYOUT_{spec.layout.upper()}"
    pad = f"cv2.dnn.{_PMODES[spec.crop]}"
    call = source + (
        f"blob = cv2.dnn.blobFromImageWithParams(img, cv2.dnn.Image2BlobParams("
        f"scalefactor={_exact(_effective_scale(spec))}, size={tuple(spec.size)}, mean={_exact(mean)}, "
        f"swapRB={spec.swap_rb}, ddepth=cv2.CV_32F, datalayout={layout}, mode={pad}))"
        "  # OpenCV >= 4.8 (InputSpec.to_numpy_code() for older ones)"
    )
    return call + _dtype_line(spec)


def _dtype_line(spec: InputSpec) -> str:
    if spec.dtype == "float16":
        return "\nblob = blob.astype(np.float16)"
    if spec.dtype == "uint8":
        return "\nblob = np.clip(np.rint(blob), 0, 255).astype(np.uint8)"
    return ""


def numpy_code(spec: InputSpec) -> str:
    """The blob of ``spec`` in numpy (+ ``cv2.resize``): what :func:`make_blob` computes where OpenCV cannot."""
    assert spec.size is not None
    w, h = spec.size
    interp = f"cv2.{_INTERP_NAMES[spec.interpolation]}"
    if spec.crop == "center":  # as OpenCV does it: the factor in float32, the offset truncated
        lines = ["ih, iw = img.shape[:2]", f"r = float(max({w} / np.float32(iw), {h} / np.float32(ih)))",
                 f"x = cv2.resize(img, None, fx=r, fy=r, interpolation={interp})",
                 f"y0, x0 = int(0.5 * (x.shape[0] - {h})), int(0.5 * (x.shape[1] - {w}))  # centre crop",
                 f"x = x[y0 : y0 + {h}, x0 : x0 + {w}]"]
    elif spec.crop == "letterbox":
        lines = ["ih, iw = img.shape[:2]", f"r = np.float32(min({w} / np.float32(iw), {h} / np.float32(ih)))",
                 "rw, rh = int(np.float32(iw) * r), int(np.float32(ih) * r)",
                 f"top, left = ({h} - rh) // 2, ({w} - rw) // 2  # letterbox: zero borders",
                 f"x = cv2.copyMakeBorder(cv2.resize(img, (rw, rh), interpolation={interp}), top, {h} - top - rh, "
                 f"left, {w} - left - rw, cv2.BORDER_CONSTANT, value=0)"]
    else:
        lines = [f"x = cv2.resize(img, ({w}, {h}), interpolation={interp})"]
    lines = _source_lines(spec) + lines
    if spec.n_channels == 1:
        lines.append("x = x.reshape(x.shape[0], x.shape[1], 1)  # cv2.resize drops a gray image's channel axis")
    if spec.swap_rb:
        lines.append("x = x[..., [2, 1, 0, 3]]  # swapRB" if spec.n_channels == 4 else "x = x[..., ::-1]  # swapRB")
    mean, scale, std = (spec.per_channel(k) for k in ("mean", "scale", "std"))
    lines.append(f"x = ((x.astype(np.float64) - {_exact(mean)}) * {_exact(scale)} / {_exact(std)})"
                 ".astype(np.float32)  # (pixel - mean) * scale / std")
    lines.append("blob = np.ascontiguousarray(" + ("x[None])  # NHWC" if spec.layout == "nhwc"
                                                  else "x.transpose(2, 0, 1)[None])  # NCHW"))
    return "\n".join(lines) + _dtype_line(spec)


# -- real photos and the Keras reference pipeline -------------------------------------------------
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee")


def load_photos(folder: Path | None = None, limit: int = 8) -> list[tuple[str, np.ndarray]]:
    """(name, BGR uint8 image) pairs: the user's folder, or the photos scikit-image's wheel ships."""
    import cv2

    if folder is not None:
        from .imageset import read_image_set

        # (class subfolders or flat: the first images of the set, each checked against the budget)
        found = read_image_set(Path(folder), limit=limit, allow_empty=True)
        files = list(found.files)
        photos = [(found.name(k), cv2.imread(str(p), cv2.IMREAD_COLOR)) for k, p in enumerate(files)]
        bad = [name for name, img in photos if img is None]
        if not files or bad:
            raise CvdnnError(
                f"--cvdnn-images={folder} " + (f"has unreadable images: {', '.join(bad)}" if bad else "holds no images"),
                fix="point it at a folder of PNG/JPEG photos",
            )
        return [(name, img) for name, img in photos if img is not None]  # (all of them: none is None)
    from importlib.util import find_spec

    spec = find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise CvdnnError(
            "the preprocessing check needs photos: scikit-image is not installed",
            fix="pip install scikit-image (its wheel ships real photos), or pass --cvdnn-images=DIR",
        )
    # the PNGs in the wheel, read by OpenCV as a deployment would (BGR): identical to skimage.data.<name>()
    # with the channels reversed, without importing skimage.io (0.6 s of plugin loading)
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    photos = [(name, cv2.imread(str(folder / f"{name}.png"), cv2.IMREAD_COLOR)) for name in SKIMAGE_PHOTOS]
    missing = [name for name, img in photos if img is None]
    if missing:
        raise CvdnnError(f"scikit-image's photos {', '.join(missing)} are missing from {folder}",
                         fix="reinstall scikit-image, or pass --cvdnn-images=DIR")
    return [(name, img) for name, img in photos if img is not None]  # (all of them: none is None)


def _numpy_blob_pixels(images: Sequence[np.ndarray], spec: InputSpec) -> list[np.ndarray]:
    import cv2

    assert spec.size is not None
    w, h = spec.size
    interp = getattr(cv2, _INTERP_NAMES[spec.interpolation])
    out = []
    for img in images:
        # OpenCV's own arithmetic (blobFromImage / blobFromImageWithParams, 4.5.5 … 5.1, measured equal to the
        # last bit): the factor in float32; crop: resize by the factor, offset truncated; letterbox: sizes truncated
        ih, iw = img.shape[:2]
        if spec.crop == "center":
            ratio = float(max(w / np.float32(iw), h / np.float32(ih)))
            rs = cv2.resize(img, None, fx=ratio, fy=ratio, interpolation=interp)
            y0, x0 = int(0.5 * (rs.shape[0] - h)), int(0.5 * (rs.shape[1] - w))
            img = rs[y0 : y0 + h, x0 : x0 + w]
        elif spec.crop == "letterbox":
            ratio = float(min(w / np.float32(iw), h / np.float32(ih)))
            rw, rh = int(np.float32(iw) * np.float32(ratio)), int(np.float32(ih) * np.float32(ratio))
            rs = cv2.resize(img, (rw, rh), interpolation=interp)
            top, left = (h - rh) // 2, (w - rw) // 2
            img = cv2.copyMakeBorder(rs, top, h - top - rh, left, w - left - rw, cv2.BORDER_CONSTANT, value=0)
        else:
            img = cv2.resize(img, (w, h), interpolation=interp)
        out.append(img)
    return out


#: how far OpenCV's resize of a uint8 image may be from Keras' float resize, in pixel levels (0..255): OpenCV
#: interpolates in fixed point and rounds to uint8 (measured on scikit-image's photos, 33x77 … 600x400: <= 0.78)
RESIZE_PIXEL_TOL = 1.0
#: a gray source adds the rounding of two gray conversions: OpenCV's COLOR_BGR2GRAY and PIL's convert("L")
#: (Keras' load_img(color_mode="grayscale")) use the same weights but round differently (measured on
#: scikit-image's photos: 1 level on 0 … 0.2 % of the pixels)
GRAY_PIXEL_TOL = 1.0


def pixel_limit(spec: InputSpec) -> float:
    """How far (in pixel levels) the deployment's blob may be from Keras' own pipeline under ``spec``."""
    return RESIZE_PIXEL_TOL + (GRAY_PIXEL_TOL if spec.n_channels == 1 else 0.0)


#: the blob's arithmetic (scale, mean, std, channel order) against Keras' on the same resized pixels, relative
#: to the tensor's magnitude (measured 0 … 2e-8 relative: float32 rounding)
ARITHMETIC_TOL = 1e-6


def pixel_error(blob_nhwc: np.ndarray, reference: np.ndarray, spec: InputSpec) -> float:
    """The largest difference between two tensors of ``spec``, in pixel levels (0..255): the tensor difference
    divided by what one pixel level is worth in each channel (scale / std)."""
    per_level = np.abs(np.asarray(_effective_scale(spec), dtype=np.float64))
    if blob_nhwc.shape != reference.shape or blob_nhwc.shape[-1] != per_level.size:
        return float("inf")
    diff = np.abs(blob_nhwc.astype(np.float64) - reference.astype(np.float64)) / per_level
    return float(diff.max()) if diff.size else 0.0


def to_nhwc(blob: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(blob, (0, 2, 3, 1))) if layout == "nchw" and blob.ndim == 4 else blob


#: PIL's nearest-neighbour resample filter: Image.NEAREST, which Pillow's own type hints no longer declare (they
#: name it Image.Resampling.NEAREST, which Pillow < 9.1 lacks); the value is 0 in every Pillow
_PIL_NEAREST = 0


def pil_nearest_tensor(photos_bgr: Sequence[np.ndarray], expected: InputSpec) -> np.ndarray:
    """The tensor a training pipeline built on ``keras.utils.load_img`` (PIL, nearest) would give."""
    from PIL import Image

    assert expected.size is not None
    rows = []
    channels = expected.n_channels
    pil_mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    for img in photos_bgr:
        pil = Image.fromarray(np.ascontiguousarray(img[..., ::-1])).convert(pil_mode).resize(expected.size,
                                                                                            _PIL_NEAREST)
        rgb = np.asarray(pil, dtype=np.float32).reshape(expected.size[1], expected.size[0], channels)
        rows.append(rgb if expected.swap_rb or channels == 1 else _swapped(rgb))
    return expected.normalize(np.stack(rows))


# -- diagnosing a wrong spec ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Mistake:
    """One way the declared spec differs from what the model expects, with its fix."""

    name: str
    message: str
    corrected: InputSpec


def _scale3(spec: InputSpec) -> np.ndarray:
    return np.array(_effective_scale(spec)[:3])


def _order(spec: InputSpec) -> str:
    """The channel order of the blob: the source order, swapped if swap_rb."""
    src = spec.channel_order.upper()
    return src[::-1] if spec.swap_rb else src


def _mode(expected: InputSpec) -> str:
    return f" ({expected.mode} mode)" if expected.mode and expected.mode != "none" else ""


def _channel_count_mistake(declared: InputSpec, expected: InputSpec, model: str) -> Mistake:
    gray = expected.n_channels == 1
    return Mistake(
        "channel count",
        f"the blob has {declared.n_channels} channel(s) but {model} takes {expected.n_channels}"
        + (": convert the image to gray first (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), or read it with "
           "cv2.IMREAD_GRAYSCALE)" if gray else ""),
        replace(declared, channels=expected.channels, mean=expected.mean, std=expected.std, scale=expected.scale,
                swap_rb=expected.swap_rb),
    )


def _swap_mistake(declared: InputSpec, expected: InputSpec, model: str) -> Mistake | None:
    if expected.n_channels == 1 or _order(declared) == _order(expected):
        return None
    return Mistake(
        "channels swapped",
        f"the blob is {_order(declared)} but {model}{_mode(expected)} expects {_order(expected)}: "
        f"use swapRB={not declared.swap_rb}",
        replace(declared, swap_rb=not declared.swap_rb),
    )


def _size_mistake(declared: InputSpec, expected: InputSpec, model: str) -> Mistake | None:
    if declared.size == expected.size:
        return None
    return Mistake(
        "wrong size",
        f"the blob is {declared.size[0]}x{declared.size[1]} but {model} expects "
        f"{expected.size[0]}x{expected.size[1]}: use size={expected.size}" if declared.size and expected.size
        else "the blob size differs from the model input",
        replace(declared, size=expected.size),
    )


def _layout_mistake(declared: InputSpec, expected: InputSpec, model: str) -> Mistake | None:
    if declared.layout == expected.layout:
        return None
    return Mistake(
        "NHWC vs NCHW",
        f"the blob is {declared.layout.upper()} but the model input is {expected.layout.upper()}: "
        + ("use blobFromImage (NCHW)" if expected.layout == "nchw"
           else "use blobFromImageWithParams with datalayout=DNN_LAYOUT_NHWC"),
        replace(declared, layout=expected.layout),
    )


_CROP_WORDS = {"none": "stretched to size (no crop)", "center": "centre-cropped", "letterbox": "letterboxed"}


def _crop_mistake(declared: InputSpec, expected: InputSpec, model: str) -> Mistake | None:
    if declared.crop == expected.crop:
        return None
    return Mistake(
        "crop vs stretch",
        f"the blob is {_CROP_WORDS[declared.crop]} but the model expects the image {_CROP_WORDS[expected.crop]}: "
        f"use crop={expected.crop == 'center'}" + (" / DNN_PMODE_LETTERBOX" if expected.crop == "letterbox" else ""),
        replace(declared, crop=expected.crop),
    )


def _interpolation_mistake(declared: InputSpec, expected: InputSpec, model: str) -> Mistake | None:
    if declared.interpolation == expected.interpolation:
        return None
    return Mistake(
        "nearest vs bilinear" if {declared.interpolation, expected.interpolation} == {"nearest", "bilinear"}
        else "resize interpolation",
        f"the image is resized with {declared.interpolation} interpolation but the reference pipeline uses "
        f"{expected.interpolation}: resize with cv2.{_INTERP_NAMES[expected.interpolation]} "
        "(blobFromImage resizes bilinearly)",
        replace(declared, interpolation=expected.interpolation),
    )


def _mean_mistake(declared: InputSpec, expected: InputSpec, model: str) -> Mistake | None:
    exp_mean = np.array(expected.mean)
    if np.allclose(declared.mean, exp_mean, atol=1e-3):
        return None
    if expected.n_channels == 3 and np.allclose(declared.mean[::-1], exp_mean, atol=1e-3):
        msg = (f"the mean {_tuple(declared.mean)} is given in the wrong channel order for a "
               f"{_order(expected)} blob: use mean={_tuple(expected.mean)}")
        name = "mean in wrong channel order"
    else:
        msg, name = f"the mean is {_tuple(declared.mean)} but the model expects {_tuple(expected.mean)}", "wrong mean"
    return Mistake(name, msg, replace(declared, mean=expected.mean))


def _std_differs(declared: InputSpec, expected: InputSpec) -> bool:
    return (declared.std is None) != (expected.std is None) or (
        declared.std is not None and expected.std is not None and not np.allclose(declared.std, expected.std)
    )


def _std_mistake(declared: InputSpec, expected: InputSpec, model: str) -> Mistake:
    """The std of ``declared``, which differs from the model's (:func:`_std_differs`)."""
    if declared.std is None:
        return Mistake(
            "std missing",
            f"std is missing: {model}{_mode(expected)} divides by std {_tuple(expected.std or (1, 1, 1))} after the "
            "mean (per-channel scale: blobFromImageWithParams, OpenCV >= 4.8)",
            replace(declared, std=expected.std, scale=expected.scale),
        )
    return Mistake("wrong std", f"std is {_tuple(declared.std)} but the model expects "
                   f"{_tuple(expected.std) if expected.std else 'none'}", replace(declared, std=expected.std))


def _scale_mistake(declared: InputSpec, expected: InputSpec) -> Mistake | None:
    """The scale of ``declared`` against the model's, where the std is the same."""
    ratio = _scale3(declared) / _scale3(expected)
    if np.allclose(ratio, 1.0, rtol=1e-3):
        return None
    r = float(np.median(ratio))
    if r > 1.5:
        name, how = "missing scaling", f"the blob is {r:.4g}x too large: the scaling is missing"
    elif r < 1 / 1.5:
        name, how = "double scaling", f"the blob is {1 / r:.4g}x too small (scaled twice?)"
    else:  # close, but not the same: a rounded or mistyped factor
        name, how = "wrong scale", (f"the blob is {abs(r - 1) * 100:.2g} % too {'large' if r > 1 else 'small'} "
                                    f"(scalefactor off by a factor {r:.4g})")
    exp_scale = expected.scale
    scale_txt = f"{exp_scale:.9g}" if isinstance(exp_scale, (int, float)) else _tuple(exp_scale)
    return Mistake(name, f"{how}; the model expects scalefactor={scale_txt}", replace(declared, scale=expected.scale))


def _std_or_scale_mistake(declared: InputSpec, expected: InputSpec, model: str) -> Mistake | None:
    if _std_differs(declared, expected):
        return _std_mistake(declared, expected, model)
    return _scale_mistake(declared, expected)


#: the checks of one field each, in the order their mistakes are listed
_FIELD_MISTAKES = (_swap_mistake, _size_mistake, _layout_mistake, _crop_mistake, _interpolation_mistake,
                   _mean_mistake, _std_or_scale_mistake)


def candidate_mistakes(declared: InputSpec, expected: InputSpec, model: str) -> list[Mistake]:
    """Every field of ``declared`` that differs from ``expected``, named as the usual mistake (a wrong channel
    count alone: the other fields are then not comparable)."""
    if declared.n_channels != expected.n_channels:
        return [_channel_count_mistake(declared, expected, model)]
    return [m for check in _FIELD_MISTAKES if (m := check(declared, expected, model)) is not None]
