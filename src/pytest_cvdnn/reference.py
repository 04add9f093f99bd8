"""Keras' own input pipeline: the independent reference the deployment's blob is compared with.

Kept apart from :mod:`pytest_cvdnn.preprocess` (the blob, pure numpy/OpenCV): this imports Keras.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import CvdnnError
from .preprocess import _INTERP_NAMES
from .spec import InputSpec

__all__ = ["keras_reference"]

_KERAS_INTERP = {"bilinear": "bilinear", "nearest": "nearest", "bicubic": "bicubic", "area": "area"}


def keras_reference(photos_bgr: Sequence[np.ndarray], expected: InputSpec, resize: str = "opencv") -> np.ndarray:
    """What Keras feeds the model, NHWC float32, computed without the plugin's blob code: the photos resized
    (``resize="opencv"``: ``cv2.resize``, the pixels a deployment has; ``"keras"``: Keras' own
    ``keras.ops.image.resize``), converted to RGB with ``cv2.cvtColor``, then Keras'
    ``imagenet_utils.preprocess_input`` of the mode (caffe/tf/torch), or the RGB array as is for in-model
    normalisation ("none").  A 1-channel spec takes the photos gray: ``cv2.COLOR_BGR2GRAY`` on the OpenCV
    route, PIL's ``convert("L")`` (what ``keras.utils.load_img(color_mode="grayscale")`` does) on the Keras
    route; a 4-channel spec RGBA (opaque).  Imports Keras.  Only the Keras modes have a reference: a custom
    spec has nothing independent to be compared with."""
    import cv2

    from .runners.keras import import_keras

    if expected.mode not in ("caffe", "tf", "torch", "none") or expected.size is None:
        raise CvdnnError(f"no Keras reference for the input spec {expected.describe()}",
                         fix="declare a Keras mode (caffe, tf, torch, none) or let the model's be detected")
    if expected.crop != "none":
        raise CvdnnError("Keras' preprocess_input pipeline does not crop", fix="use crop=none for a Keras mode")
    channels = expected.n_channels
    if channels != 3 and expected.mode in ("caffe", "torch"):
        raise CvdnnError(f"Keras' preprocess_input mode {expected.mode!r} is defined for 3-channel RGB images, "
                         f"not {channels} channels", fix="declare the spec of the gray/RGBA input with key=value pairs")
    keras = import_keras()
    w, h = expected.size
    if resize == "keras":
        from PIL import Image

        pil_mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
        sources = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., ::-1])).convert(pil_mode),
                              dtype=np.float32).reshape(img.shape[0], img.shape[1], channels) for img in photos_bgr]
        arrays = [np.asarray(keras.ops.image.resize(img[None], (h, w), antialias=False,
                                                    interpolation=_KERAS_INTERP[expected.interpolation]))[0]
                  for img in sources]
    else:
        code = {1: cv2.COLOR_BGR2GRAY, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGR2RGBA}[channels]
        interp = getattr(cv2, _INTERP_NAMES[expected.interpolation])
        arrays = [cv2.resize(cv2.cvtColor(np.ascontiguousarray(img), code), (w, h), interpolation=interp)
                  .astype(np.float32).reshape(h, w, channels) for img in photos_bgr]
    batch = np.stack(arrays).astype(np.float32)
    if expected.mode == "none":
        return batch
    return np.asarray(keras.applications.imagenet_utils.preprocess_input(batch, mode=expected.mode),
                      dtype=np.float32)
