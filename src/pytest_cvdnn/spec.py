"""The deployment input, described as a value object (pure Python + numpy).

An :class:`InputSpec` says how a deployment turns a picture into the tensor a model
receives: size, layout, channel order, scale, mean, std.  The tensor is

    tensor = (pixel - mean) * scale / std

with ``pixel`` the resized image in the *model's* channel order (after ``swap_rb``)
and ``mean``/``std`` given in that same order, exactly as ``cv2.dnn.blobFromImage``
interprets them.
"""

from __future__ import annotations

import math

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, cast

import numpy as np

__all__ = ["InputSpec", "SpecError", "KERAS_MODES", "detect_keras_mode", "parse_specs", "coerce_specs", "NamedSpecs"]

Triple = tuple[float, float, float]


class SpecError(ValueError):
    """An input spec that cannot be understood; the message says which field and how to fix it."""


# Keras `preprocess_input` modes expressed as blob parameters (FIELD.md table).
KERAS_MODES: dict[str, dict[str, Any]] = {
    # RGB->BGR then minus the ImageNet mean (BGR order), no scale: a BGR image as cv2.imread gives.
    "caffe": dict(scale=1.0, mean=(103.939, 116.779, 123.68), std=None, swap_rb=False),
    # x / 127.5 - 1 on RGB
    "tf": dict(scale=1 / 127.5, mean=(127.5, 127.5, 127.5), std=None, swap_rb=True),
    # x / 255, minus mean, divide by std, RGB
    "torch": dict(
        scale=1 / 255.0, mean=(123.675, 116.28, 103.53), std=(0.229, 0.224, 0.225), swap_rb=True
    ),
    # normalisation inside the model: raw 0-255 RGB
    "none": dict(scale=1.0, mean=(0.0, 0.0, 0.0), std=None, swap_rb=True),
}

_LAYOUTS = ("nchw", "nhwc")
_INTERP = ("bilinear", "nearest", "bicubic", "area")
_CROPS = ("none", "center", "letterbox")


def _triple(value: Any, field_name: str) -> Triple:
    """Per-channel values: one number (every channel), three (colour) or four (colour + alpha)."""
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    try:
        items = [float(v) for v in value]
    except (TypeError, ValueError):
        raise SpecError(f"{field_name} must be a number or three numbers, got {value!r}") from None
    if len(items) == 1:
        items *= 3
    if len(items) not in (3, 4):
        raise SpecError(f"{field_name} needs 1, 3 or 4 values (one per channel), got {len(items)}: {value!r}")
    return cast(Triple, tuple(items))  # (3 values, or 4 with alpha: Triple stands for both here)


#: what the 4th (alpha) channel gets when only three values are given: OpenCV's Scalar pads the mean with 0
_ALPHA = {"mean": 0.0, "std": 1.0, "scale": 1.0}
#: bounds of a spec's values: a blob side, the images per forward, and a scale/mean/std's magnitude
MAX_SIDE = 16384
MAX_BATCH = 4096
MAX_VALUE = 1e6


def _per_channel(values: tuple[float, ...], channels: int, field_name: str) -> tuple[float, ...]:
    """``values`` fitted to ``channels``: 1 channel takes one value, 4 channels pad the alpha channel."""
    if channels == 1:
        if len(set(values)) != 1:
            raise SpecError(f"a 1-channel (grayscale) input takes one {field_name} value, got {values!r}; "
                            f"write {field_name}={values[0]:g} (the value for the gray channel)")
        return values[:3]
    if channels == 4:
        return values if len(values) == 4 else (*values, _ALPHA[field_name])
    if len(values) == 4:
        raise SpecError(f"{field_name} has 4 values but the input has {channels} channels; add channels=4 for a "
                        "BGRA/RGBA input, or give 3 values")
    return values


@dataclass(frozen=True)
class InputSpec:
    """How the deployment builds the input tensor of an image model.

    size: (width, height) of the network input, or None to take it from the model.
    layout: "nchw" (what ``blobFromImage`` produces) or "nhwc".
    channel_order: order of the *source* image: "bgr" (``cv2.imread``) or "rgb".
    swap_rb: swap the first and last channel of the source image (blobFromImage's swapRB).
    scale: scalar or per-channel multiplier; mean: per-channel value subtracted first;
    std: optional per-channel divisor (needs Image2BlobParams or numpy).
    channels: 1 (grayscale: the source is converted with ``cv2.COLOR_BGR2GRAY``, as ``cv2.IMREAD_GRAYSCALE``
    reads it), 3 (colour) or 4 (BGRA, as ``cv2.IMREAD_UNCHANGED`` reads a PNG with alpha); None: the model's.
    """

    size: tuple[int, int] | None = None
    layout: str = "nchw"
    channel_order: str = "bgr"
    swap_rb: bool = True
    scale: float | Triple = 1.0
    mean: Triple = (0.0, 0.0, 0.0)
    std: Triple | None = None
    interpolation: str = "bilinear"
    crop: str = "none"
    dtype: str = "float32"
    batch: int = 1
    channels: int | None = None
    mode: str | None = field(default="none", compare=False)
    note: str = field(default="", compare=False)  # how the spec was found (from_model)

    def __post_init__(self) -> None:
        if self.layout not in _LAYOUTS:
            raise SpecError(f"layout must be one of {', '.join(_LAYOUTS)}, got {self.layout!r}")
        if self.channel_order not in ("bgr", "rgb"):
            raise SpecError(f"channel_order must be 'bgr' or 'rgb', got {self.channel_order!r}")
        if self.interpolation not in _INTERP:
            raise SpecError(f"interpolation must be one of {', '.join(_INTERP)}, got {self.interpolation!r}")
        if self.crop not in _CROPS:
            raise SpecError(f"crop must be one of {', '.join(_CROPS)}, got {self.crop!r}")
        if self.size is not None:
            if len(self.size) != 2 or any(int(v) <= 0 for v in self.size):
                raise SpecError(f"size must be (width, height) with positive values, got {self.size!r}")
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        if self.channels is not None:
            if isinstance(self.channels, bool) or self.channels not in (1, 3, 4):
                raise SpecError(f"channels must be 1 (grayscale), 3 (colour) or 4 (with alpha), got {self.channels!r}")
            object.__setattr__(self, "channels", int(self.channels))
        given = [v for v in (self.mean, self.std, self.scale) if isinstance(v, (tuple, list)) and len(v) == 4]
        if given and self.channels is None:
            object.__setattr__(self, "channels", 4)
        n = self.n_channels
        if not isinstance(self.scale, (int, float)):
            object.__setattr__(self, "scale", _per_channel(_triple(self.scale, "scale"), n, "scale"))
        object.__setattr__(self, "mean", _per_channel(_triple(self.mean, "mean"), n, "mean"))
        if self.std is not None:
            std = _per_channel(_triple(self.std, "std"), n, "std")
            if any(s == 0 for s in std):
                raise SpecError(f"std must not contain 0, got {std!r}")
            object.__setattr__(self, "std", std)
        if n == 1 and self.swap_rb:  # nothing to swap in a gray image (and blobFromImage would swap the mean)
            object.__setattr__(self, "swap_rb", False)
        if not 1 <= int(self.batch) <= MAX_BATCH:
            raise SpecError(f"batch must be between 1 and {MAX_BATCH} (the images a deployment feeds per "
                            f"net.forward()), got {self.batch!r}")
        scales = [self.scale] if isinstance(self.scale, (int, float)) else list(self.scale)
        for name, values in (("scale", scales), ("mean", list(self.mean)), ("std", list(self.std or ()))):
            if any(not math.isfinite(float(v)) or abs(float(v)) > MAX_VALUE for v in values):
                raise SpecError(f"{name} must be finite numbers of magnitude at most {MAX_VALUE:g}, got {values!r}")
        if any(float(v) == 0 for v in scales):
            raise SpecError(f"scale must not be 0 (every pixel would become the same value), got {self.scale!r}; "
                            "e.g. scale=0.00392 for 1/255")
        if self.dtype not in ("float32", "float16", "uint8"):
            raise SpecError(f"dtype must be float32, float16 or uint8, got {self.dtype!r}")

    @property
    def n_channels(self) -> int:
        """The channel count of the blob: ``channels``, or 3 when the spec leaves it to the model."""
        return self.channels or 3

    def with_channels(self, channels: int) -> "InputSpec":
        """The spec for a model input of ``channels`` channels (1: gray, 3, 4); the mean of a colour spec
        becomes the gray channel's only when all three are equal."""
        if self.channels == channels:
            return self
        return replace(self, channels=channels)

    # -- constructors ---------------------------------------------------------------
    @classmethod
    def from_keras_mode(cls, mode: str, size: tuple[int, int] | None = None, **overrides: Any) -> "InputSpec":
        """The spec equivalent to ``keras.applications.*.preprocess_input`` of ``mode``."""
        if mode not in KERAS_MODES:
            raise SpecError(f"unknown Keras preprocessing mode {mode!r}; use one of {', '.join(KERAS_MODES)}")
        params: dict[str, Any] = dict(KERAS_MODES[mode], size=size, mode=mode)
        params.update(overrides)
        return cls(**params)

    @classmethod
    def from_model(cls, model: Any, **overrides: Any) -> "InputSpec":
        """The spec a Keras model expects, detected from what it is; ``spec.note`` says why.

        ``keras.applications`` models are recognised by name (their ``preprocess_input`` mode);
        a ``Rescaling``/``Normalization`` layer right after the input means the model
        normalises itself (feed raw 0..255 RGB).  Otherwise mode "none" is assumed, and the
        note says that it is a guess.
        """
        mode, note, _ = detect_keras_mode(getattr(model, "name", ""), [type(x).__name__ for x in model.layers[:4]])
        shape = list(model.inputs[0].shape) if getattr(model, "inputs", None) else []
        size = (int(shape[2]), int(shape[1])) if len(shape) == 4 and shape[1] and shape[2] else None
        params: dict[str, Any] = dict(size=size, note=note)
        params.update(overrides)
        return cls.from_keras_mode(mode, **params)

    @classmethod
    def parse(cls, text: str) -> "InputSpec":
        """Parse the CLI/ini form: a Keras mode, or ``key=value`` pairs separated by commas.

        Example: ``scale=0.00392,mean=123.7/116.3/103.5,std=58.4/57.1/57.4,swap_rb=1,size=224x224``.
        A pair list may start with a mode (``torch,size=224x224``).
        """
        text = text.strip()
        if not text:
            raise SpecError("empty input spec; use a Keras mode (caffe, tf, torch, none) or key=value pairs")
        parts = [p.strip() for p in text.split(",") if p.strip()]
        base: dict[str, Any] = {}
        if "=" not in parts[0]:
            mode = parts.pop(0)
            if mode not in KERAS_MODES:
                raise SpecError(
                    f"unknown Keras preprocessing mode {mode!r}; use one of {', '.join(KERAS_MODES)} "
                    "or key=value pairs such as scale=0.0039,mean=0/0/0,swap_rb=1,size=224x224"
                )
            base = dict(KERAS_MODES[mode], mode=mode)
        else:
            base["mode"] = None
        for part in parts:
            if "=" not in part:
                raise SpecError(f"{part!r} is not key=value (in input spec {text!r})")
            key, value = (s.strip() for s in part.split("=", 1))
            key = {"swaprb": "swap_rb", "swapRB": "swap_rb"}.get(key, key)
            base[key] = _parse_value(key, value, text)
        return cls(**base)

    @classmethod
    def coerce(cls, value: Any) -> "InputSpec":
        """Accept an InputSpec, a string (see :meth:`parse`) or a mapping of fields."""
        if isinstance(value, InputSpec):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, Mapping):
            data = dict(value)
            mode = data.pop("mode", None)
            if mode:
                return cls.from_keras_mode(mode, **data)
            unknown = set(data) - set(cls.__dataclass_fields__)
            if unknown:
                raise SpecError(f"unknown input spec field(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
            return cls(**data)
        raise SpecError(f"an input spec must be an InputSpec, a string or a dict, got {type(value).__name__}")

    def blob(self, images: Any) -> np.ndarray:
        """The blob OpenCV builds from source images (a list, or one image) under this spec."""
        from .preprocess import make_blob

        return make_blob(images if isinstance(images, (list, tuple)) else [images], self)

    def to_cv2_code(self, opencv: str | None = None) -> str:
        """The deployment code that builds ``blob`` from ``img`` (BGR, from cv2.imread) on OpenCV ``opencv``
        (default: the installed one); it runs as printed after ``import cv2, numpy as np``."""
        from .preprocess import cv2_call

        return cv2_call(self, opencv)

    def to_numpy_code(self) -> str:
        """The same blob in numpy and ``cv2.resize`` (for an OpenCV without blobFromImageWithParams, < 4.8)."""
        from .preprocess import numpy_code

        return numpy_code(self)

    def with_size(self, width: int, height: int) -> "InputSpec":
        return replace(self, size=(int(width), int(height)))

    # -- numbers ---------------------------------------------------------------------
    def per_channel(self, name: str) -> tuple[float, ...]:
        """``mean``, ``std`` or ``scale`` as one value per channel of the blob (1, 3 or 4 values)."""
        n = self.n_channels
        value: Any = getattr(self, name)
        if value is None:
            value = 1.0
        values = (float(value),) * 4 if isinstance(value, (int, float)) else (*value, _ALPHA[name])
        return tuple(float(v) for v in values[:n])

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Apply (pixel - mean) * scale / std to NHWC pixels already in the model's channel order."""
        p = np.asarray(pixels, dtype=np.float64)
        n = p.shape[-1] if p.ndim else 0
        if n not in (1, 3, 4):  # not an image: the scalar scale only
            return (p * self.per_channel("scale")[0] / self.per_channel("std")[0]).astype(np.float32)
        if n == self.n_channels:
            mean, scale, std = (np.array(self.per_channel(k), dtype=np.float64) for k in ("mean", "scale", "std"))
        else:  # pixels of another channel count than the spec's: each channel takes the first channel's values
            mean, scale, std = (np.float64(self.per_channel(k)[0]) for k in ("mean", "scale", "std"))
        return ((p - mean) * scale / std).astype(np.float32)

    def value_range(self) -> tuple[float, float]:
        """The (min, max) tensor value a 0..255 image can produce under this spec."""
        lo = self.normalize(np.zeros((1, 1, 1, self.n_channels)))
        hi = self.normalize(np.full((1, 1, 1, self.n_channels), 255.0))
        both = np.concatenate([lo.ravel(), hi.ravel()])
        return float(both.min()), float(both.max())

    def describe(self) -> str:
        mode = f"{self.mode} mode: " if self.mode else ""
        size = f"{self.size[0]}x{self.size[1]}" if self.size else "model size"
        std = f", std={_fmt(self.per_channel('std'))}" if self.std else ""
        source = {1: "1-channel (gray) source", 4: f"{self.channel_order.upper()}A source"}.get(
            self.n_channels, f"{self.channel_order.upper()} source")
        scale = _fmt(self.scale) if isinstance(self.scale, (int, float)) else _fmt(self.per_channel("scale"))
        return (
            f"{mode}{size} {self.layout.upper()} {self.dtype}, {source}, "
            f"swap_rb={int(self.swap_rb)}, scale={scale}, mean={_fmt(self.per_channel('mean'))}{std}, "
            f"{self.interpolation} resize, crop={self.crop}"
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("size", "mean", "std", "scale"):
            if isinstance(data[key], tuple):
                data[key] = list(data[key])
        return data


# keras.applications model names (model.name) -> preprocess_input mode
_APPLICATIONS: tuple[tuple[str, str, str], ...] = (
    (r"^vgg(16|19)$", "caffe", "VGG"),
    (r"^resnet(50|101|152)$", "caffe", "ResNet"),
    (r"^resnet(50|101|152)v2$", "tf", "ResNetV2"),
    (r"^mobilenet_[\d.]+_\d+$", "tf", "MobileNet"),
    (r"^mobilenetv2_[\d.]+_\d+$", "tf", "MobileNetV2"),
    (r"^inception_v3$", "tf", "InceptionV3"),
    (r"^inception_resnet_v2$", "tf", "InceptionResNetV2"),
    (r"^xception$", "tf", "Xception"),
    (r"^nasnet", "tf", "NASNet"),
    (r"^densenet(121|169|201)$", "torch", "DenseNet"),
    (r"^efficientnetb\d$", "none", "EfficientNet"),
    (r"^efficientnetv2-", "none", "EfficientNetV2"),
    (r"^mobilenetv3", "none", "MobileNetV3"),
    (r"^convnext_", "none", "ConvNeXt"),
    (r"^reg(net|x|y)", "none", "RegNet"),
)


def detect_keras_mode(name: str, first_layers: list[str]) -> tuple[str, str, bool]:
    """(mode, why, confident) from a Keras model's name and its first layer classes."""
    for pattern, mode, family in _APPLICATIONS:
        if re.search(pattern, name, re.IGNORECASE):
            inside = " (normalisation inside the model: raw 0..255 RGB)" if mode == "none" else ""
            why = f"model {name!r} is keras.applications {family}, whose preprocess_input uses mode {mode!r}{inside}"
            return mode, why, True
    norm = [c for c in first_layers if c in ("Rescaling", "Normalization")]
    if norm:
        why = (f"model {name!r} starts with {', '.join(norm)}: it normalises its input itself, "
               "so the blob carries raw 0..255 RGB pixels")
        return "none", why, True
    why = (f"model {name!r} is not a known keras.applications model and has no Rescaling/Normalization "
           "layer at its input: assuming raw 0..255 RGB input (declare the real spec with --cvdnn-preprocess)")
    return "none", why, False


def _fmt(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.6g}"
    return "(" + ", ".join(f"{v:.6g}" for v in value) + ")"


_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _parse_value(key: str, value: str, text: str) -> Any:
    try:
        if key in ("scale",):
            nums = [float(v) for v in re.split(r"[/:]", value)]
            return nums[0] if len(nums) == 1 else tuple(nums)
        if key in ("mean", "std"):
            return tuple(float(v) for v in re.split(r"[/:]", value))
        if key == "size":
            w, h = re.split(r"[xX*]", value)
            return (int(w), int(h))
        if key == "swap_rb":
            return _BOOL[value.lower()]
        if key == "crop":
            return {"0": "none", "1": "center", "false": "none", "true": "center"}.get(value.lower(), value.lower())
        if key in ("batch", "channels"):
            return {"gray": 1, "grayscale": 1}.get(value.lower(), None) or int(value)
        if key in ("layout", "channel_order", "interpolation", "dtype"):
            return value.lower()
    except (ValueError, KeyError):
        raise SpecError(f"bad value {value!r} for {key!r} in input spec {text!r}") from None
    raise SpecError(
        f"unknown key {key!r} in input spec {text!r}; known keys: scale, mean, std, swap_rb, size, "
        "crop, layout, channel_order, interpolation, dtype, batch, channels"
    )


#: ``(input name, spec)`` pairs: the spec of each named input of a multi-input model
NamedSpecs = tuple[tuple[str, InputSpec], ...]

_NAMED = re.compile(r"^\s*([A-Za-z_][\w./-]*)\s*:(.*)$", re.S)


def parse_specs(text: str) -> tuple[InputSpec | None, NamedSpecs]:
    """A default spec and/or one spec per input name: ``caffe``, ``image:caffe;thumb:tf,size=64x64``.

    Parts are separated by ``;``; a part ``NAME:SPEC`` applies to the model input NAME, a part
    without a name to every image input that has none.
    """
    default: InputSpec | None = None
    named: list[tuple[str, InputSpec]] = []
    for part in (p for p in str(text).split(";") if p.strip()):
        m = _NAMED.match(part)
        if m and "=" not in m.group(1):
            try:
                named.append((m.group(1), InputSpec.parse(m.group(2))))
            except SpecError as exc:
                raise SpecError(f"input {m.group(1)!r}: {exc}") from None
        elif default is not None:
            raise SpecError(f"{text!r} has two specs without an input name; write NAME:SPEC for each input")
        else:
            default = InputSpec.parse(part)
    if default is None and not named:
        raise SpecError("empty input spec; use a Keras mode (caffe, tf, torch, none) or key=value pairs")
    return default, tuple(named)


def coerce_specs(value: Any) -> tuple[InputSpec | None, NamedSpecs]:
    """The marker's ``input_spec=``: one spec (InputSpec, string, dict of fields) or ``{input name: spec}``."""
    if isinstance(value, str):
        return parse_specs(value)
    if isinstance(value, Mapping) and value and not set(value) & (set(InputSpec.__dataclass_fields__) | {"mode"}):
        return None, tuple((str(k), InputSpec.coerce(v)) for k, v in value.items())
    return InputSpec.coerce(value), ()
