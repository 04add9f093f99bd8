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

from typing import Any, Sequence

import numpy as np

from .spec import InputSpec

__all__ = ["make_blob", "cv2_call", "blob_method"]

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


def _pad_const(spec: InputSpec) -> tuple[str, int]:
    return _const({"none": "DNN_PMODE_NULL", "center": "DNN_PMODE_CROP_CENTER", "letterbox": "DNN_PMODE_LETTERBOX"}[spec.crop])


def blob_method(spec: InputSpec) -> str:
    """Which implementation :func:`make_blob` uses for ``spec`` on the installed OpenCV."""
    if _plain_ok(spec):
        return "blobFromImage"
    if _has_params() and spec.interpolation == "bilinear":
        return "blobFromImageWithParams"
    return "numpy"


def _effective_scale(spec: InputSpec) -> tuple[float, float, float]:
    s = spec.scale
    scale = (s, s, s) if isinstance(s, (int, float)) else tuple(s)
    std = spec.std or (1.0, 1.0, 1.0)
    return tuple(float(a) / float(b) for a, b in zip(scale, std))  # type: ignore[return-value]


def make_blob(images: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """A blob from source images (``spec.channel_order``), in ``spec.layout``."""
    import cv2

    if spec.size is None:
        raise ValueError("the input spec has no size; set InputSpec(size=(w, h)) or let the model supply it")
    imgs = [np.ascontiguousarray(img) for img in images]
    method = blob_method(spec)
    if method == "blobFromImage":
        return cv2.dnn.blobFromImages(
            imgs, float(spec.scale), spec.size, spec.mean, spec.swap_rb, spec.crop == "center", cv2.CV_32F
        )
    if method == "blobFromImageWithParams":
        scale = _effective_scale(spec)
        params = cv2.dnn.Image2BlobParams()
        params.scalefactor = (*scale, 0.0)
        params.size = spec.size
        params.mean = (*spec.mean, 0.0)
        params.swapRB = spec.swap_rb
        params.ddepth = cv2.CV_32F
        params.datalayout = _layout_const(spec)[1]
        params.paddingmode = _pad_const(spec)[1]
        return cv2.dnn.blobFromImagesWithParams(imgs, params)
    return _numpy_blob(imgs, spec)


def _numpy_blob(images: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Fallback: same arithmetic as OpenCV (resize, optional centre crop, swap, normalise)."""
    import cv2

    assert spec.size is not None
    w, h = spec.size
    interp = getattr(cv2, _INTERP_NAMES[spec.interpolation])
    rows = []
    for img in images:
        if spec.crop == "center":
            ih, iw = img.shape[:2]
            ratio = max(w / iw, h / ih)
            rs = cv2.resize(img, (round(iw * ratio), round(ih * ratio)), interpolation=interp)
            y0, x0 = (rs.shape[0] - h) // 2, (rs.shape[1] - w) // 2
            img = rs[y0 : y0 + h, x0 : x0 + w]
        elif spec.crop == "letterbox":
            ih, iw = img.shape[:2]
            ratio = min(w / iw, h / ih)
            rw, rh = round(iw * ratio), round(ih * ratio)
            rs = cv2.resize(img, (rw, rh), interpolation=interp)
            canvas = np.zeros((h, w, img.shape[2]), dtype=img.dtype)
            y0, x0 = (h - rh) // 2, (w - rw) // 2
            canvas[y0 : y0 + rh, x0 : x0 + rw] = rs
            img = canvas
        else:
            img = cv2.resize(img, (w, h), interpolation=interp)
        if spec.swap_rb:
            img = img[..., ::-1]
        rows.append(img.astype(np.float32))
    batch = spec.normalize(np.stack(rows))
    return np.ascontiguousarray(batch if spec.layout == "nhwc" else np.transpose(batch, (0, 3, 1, 2)))


def _tuple(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def cv2_call(spec: InputSpec) -> str:
    """The OpenCV line that builds this blob from ``img`` (a BGR image from cv2.imread)."""
    size = spec.size or ("W", "H")
    method = blob_method(spec)
    if method == "blobFromImage":
        return (
            f"blob = cv2.dnn.blobFromImage(img, scalefactor={float(spec.scale):.9g}, size={tuple(size)}, "
            f"mean={_tuple(spec.mean)}, swapRB={spec.swap_rb}, crop={spec.crop == 'center'})"
        )
    scale = _effective_scale(spec)
    if method == "numpy":  # names as OpenCV >= 4.8 spells them
        layout = "cv2.dnn.DNN_LAYOUT_" + spec.layout.upper()
        pad = "cv2.dnn.DNN_PMODE_" + {"none": "NULL", "center": "CROP_CENTER", "letterbox": "LETTERBOX"}[spec.crop]
    else:
        layout, pad = _layout_const(spec)[0], _pad_const(spec)[0]
    call = (
        f"blob = cv2.dnn.blobFromImageWithParams(img, cv2.dnn.Image2BlobParams("
        f"scalefactor={_tuple(scale)}, size={tuple(size)}, mean={_tuple(spec.mean)}, swapRB={spec.swap_rb}, "
        f"ddepth=cv2.CV_32F, datalayout={layout}, paddingmode={pad}))"
    )
    if method == "numpy":
        call += "  # needs OpenCV >= 4.8; this OpenCV cannot express the spec (numpy equivalent used)"
    return call


def describe_blob_call(spec: InputSpec) -> dict[str, Any]:
    return {"method": blob_method(spec), "code": cv2_call(spec)}
