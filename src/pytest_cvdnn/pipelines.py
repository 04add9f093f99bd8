"""The user's images and the two pipelines the agreement check runs over them, stage by stage.

A pipeline turns an image file into the tensor a graph is fed: **decode** (OpenCV's or PIL's decoder), **orientation**
(the EXIF orientation applied, as ``cv2.imread`` does, or ignored, as ``keras.utils.load_img`` does), **resize**
(OpenCV's ``blobFromImage``/``cv2.resize`` interpolation, or PIL's resampling, as ``load_img`` uses), **colour** (the
channel order fed) and **arithmetic** (scale, mean, std).  The deployed pipeline and the training-side one differ in
some of these; replacing one stage at a time says which difference changes the predictions.  Imports OpenCV and
PIL lazily; no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import CvdnnError
from .imageset import ImageSet, read_image_set
from .spec import InputSpec

__all__ = ["ImageSet", "read_image_set", "Pipeline", "STAGES", "deployed_pipeline", "training_pipeline",
           "Loader", "parse_loader", "tensors", "OPENCV_INTERPOLATIONS", "resize_code"]

#: cv2 interpolation flags by name (resize stage "opencv:NAME")
OPENCV_INTERPOLATIONS = ("linear", "nearest", "nearest_exact", "area", "cubic", "lanczos4")
#: PIL resampling by the names keras.utils.load_img takes (resize stage "pil:NAME")
PIL_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "hamming", "box", "lanczos")
#: the stages of a pipeline, in the order they run
STAGES = ("decode", "orientation", "resize", "colour", "arithmetic", "graph")


@dataclass(frozen=True)
class Pipeline:
    """One way from an image file to a tensor and a prediction (see the module's docstring)."""

    decode: str  # "opencv" | "pil"
    orientation: str  # "exif" | "ignore"
    resize: str  # "blob" (the spec's own blobFromImage resize and crop) | "opencv:NAME" | "pil:NAME"
    colour: str  # "rgb" | "bgr": the channel order the tensor carries
    arithmetic: InputSpec  # scale, mean and std (its size, layout, channels are the model's)
    graph: str  # the runner: "cv2dnn" | "keras" | ...

    def describe(self, stage: str) -> str:
        """A stage's value in words ("PIL's nearest resize")."""
        value = getattr(self, stage)
        if stage == "arithmetic":
            return f"scale {value.scale}, mean {value.mean}, std {value.std}"
        if stage == "resize":
            kind, _, name = str(value).partition(":")
            return {"blob": f"blobFromImage's resize ({self.arithmetic.interpolation})",
                    "opencv": f"cv2.resize INTER_{name.upper()}", "pil": f"PIL's {name} resize",
                    "callable": "the loader's own"}[kind]
        return {"opencv": "OpenCV's decoder", "pil": "PIL's decoder", "exif": "EXIF orientation applied",
                "ignore": "EXIF orientation ignored", "rgb": "RGB", "bgr": "BGR", "cv2dnn": "cv2.dnn",
                "keras": "Keras"}.get(str(value), str(value))


def deployed_pipeline(spec: InputSpec, graph: str = "cv2dnn") -> Pipeline:
    """What the printed deployment code does: ``cv2.imread(path, cv2.IMREAD_COLOR)`` (it applies the EXIF
    orientation), then the spec's blob (its resize, channel swap and arithmetic), then cv2.dnn."""
    return Pipeline("opencv", "exif", "blob", "rgb" if spec.swap_rb == (spec.channel_order == "bgr") else "bgr",
                    spec, graph)


@dataclass(frozen=True)
class Loader:
    """How the training side reads an image: ``keras.utils.load_img`` with an interpolation, or the user's own
    callable (``module.py:function``, path → HxWx3 RGB array at the model's size, before its preprocessing)."""

    kind: str  # "load_img" | "callable"
    interpolation: str = "nearest"
    target: str = ""

    def describe(self) -> str:
        if self.kind == "callable":
            return f"{self.target}(path)"
        return f"keras.utils.load_img(path, target_size=…, interpolation={self.interpolation!r})"


def parse_loader(value: str) -> Loader:
    """``load_img`` (its default, nearest), ``load_img:bilinear``, or ``path/to/module.py:function``."""
    import argparse

    text = value.strip()
    if text == "load_img" or text.startswith("load_img:"):
        interpolation = text.partition(":")[2] or "nearest"
        if interpolation not in PIL_INTERPOLATIONS:
            raise argparse.ArgumentTypeError(f"load_img has no interpolation {interpolation!r}; use one of "
                                             f"{', '.join(PIL_INTERPOLATIONS)}")
        return Loader("load_img", interpolation)
    module, _, function = text.rpartition(":")
    if module.endswith(".py") and function.isidentifier():
        return Loader("callable", target=text)
    raise argparse.ArgumentTypeError(f"{value!r} is not a training-side loader: write load_img, load_img:bilinear "
                                     "(any of keras.utils.load_img's interpolations), or path/to/module.py:function")


def training_pipeline(expected: InputSpec, loader: Loader, graph: str = "keras") -> Pipeline:
    """What the training side does: PIL decodes (no EXIF orientation), PIL resizes with the loader's
    interpolation, RGB, the model's own preprocessing, Keras."""
    resize = f"pil:{loader.interpolation}" if loader.kind == "load_img" else "callable"
    return Pipeline("pil", "ignore", resize, "rgb", expected, graph)


def _orientation_tag(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - no EXIF block: upright
        return 1


def _orient(image: np.ndarray, tag: int) -> np.ndarray:
    """The EXIF orientation ``tag`` applied to an HxWxC array (what ``cv2.imread`` and PIL's ``exif_transpose``
    do)."""
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1], 8: lambda a: np.swapaxes(a, 0, 1)[::-1]}
    return np.ascontiguousarray(ops[tag](image)) if tag in ops else image


def _read(path: Path, pipeline: Pipeline) -> np.ndarray:
    """The decoded BGR uint8 image, oriented as the pipeline orients it: OpenCV's ``cv2.imread`` applies the EXIF
    orientation itself (as the deployment code reads it) unless told to ignore it; PIL's decoder never does, so
    the orientation is applied here where the pipeline asks for it."""
    import cv2

    if pipeline.decode == "opencv":
        flags = cv2.IMREAD_COLOR | (cv2.IMREAD_IGNORE_ORIENTATION if pipeline.orientation == "ignore" else 0)
        image = cv2.imread(str(path), flags)
        if image is None:
            raise CvdnnError(f"{path} could not be read as an image by OpenCV",
                             fix="remove it from --cvdnn-images or convert it to PNG/JPEG")
        return np.asarray(image)
    from PIL import Image

    with Image.open(path) as img:
        image = np.ascontiguousarray(np.asarray(img.convert("RGB"))[..., ::-1])
    return _orient(image, _orientation_tag(path)) if pipeline.orientation == "exif" else image


def _resize(image_bgr: np.ndarray, how: str, size: tuple[int, int]) -> np.ndarray:
    import cv2

    kind, _, name = how.partition(":")
    if kind == "opencv":
        flag = getattr(cv2, f"INTER_{name.upper()}")
        return np.asarray(cv2.resize(image_bgr, size, interpolation=flag))
    from PIL import Image

    resample = getattr(Image.Resampling, name.upper())
    rgb = Image.fromarray(np.ascontiguousarray(image_bgr[..., ::-1])).resize(size, resample)
    return np.ascontiguousarray(np.asarray(rgb)[..., ::-1])


def tensors(paths: Sequence[Path], pipeline: Pipeline, size: tuple[int, int],
            loader_fn: Callable[[str], Any] | None = None) -> np.ndarray:
    """The NHWC float32 tensors ``pipeline`` feeds its graph for ``paths`` (``size``: (width, height))."""
    spec = pipeline.arithmetic
    coloured = replace(spec, swap_rb=pipeline.colour == "rgb", channel_order="bgr")  # (the decoded image is BGR)
    flat = replace(coloured, crop="none")  # (an image already at the model's size)
    out = []
    for path in paths:
        if pipeline.resize == "callable":
            if loader_fn is None:
                raise CvdnnError("the training-side loader was not given", fix="pass --cvdnn-training-loader")
            rgb = np.asarray(loader_fn(str(path)))
            if rgb.shape[:2] != (size[1], size[0]) or rgb.ndim != 3:
                raise CvdnnError(f"the training-side loader returned shape {rgb.shape} for {path.name}; the model "
                                 f"takes {size[1]}x{size[0]}x3", fix="return an HxWx3 RGB array at the model's size")
            sized = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8)[..., ::-1])
        else:
            image = _read(path, pipeline)
            if pipeline.resize == "blob":
                out.append(_blob(image, coloured))
                continue
            sized = _resize(image, pipeline.resize, size)
        out.append(_blob(sized, flat))
    return np.concatenate(out) if out else np.zeros((0, size[1], size[0], spec.n_channels), np.float32)


def _blob(image_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One NHWC sample: the spec's blob of ``image_bgr`` (its resize is a no-op when the image has its size)."""
    from .preprocess import to_nhwc

    return to_nhwc(spec.blob([image_bgr]), spec.layout).astype(np.float32)


def resize_code(spec: InputSpec, interpolation: str) -> str:
    """The deployment code with the image resized by ``cv2.resize`` first (the blob's own resize is then a no-op);
    runs as printed after ``import cv2, numpy as np`` with ``img`` a BGR image."""
    from .preprocess import cv2_call

    w, h = spec.size or (0, 0)
    return (f"img = cv2.resize(img, ({w}, {h}), interpolation=cv2.INTER_{interpolation.upper()})\n"
            + cv2_call(spec))
