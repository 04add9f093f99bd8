"""Command-line options and ini keys, validated at parse time, resolved into ModelSettings."""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from .agreement import DEFAULT_MAX_ACCURACY_DROP, DEFAULT_MIN_AGREEMENT
from .compare import DEFAULT_ATOL, DEFAULT_RTOL, DEFAULT_SRTOL, Tolerance, tolerance_problem
from .pipelines import Loader, parse_loader
from .spec import MAX_SIDE, InputSpec, NamedSpecs, SpecError, coerce_specs, parse_specs

__all__ = ["ModelSettings", "OPTIONS", "parse_opset", "parse_layout", "parse_engine", "parse_engines", "parse_devices", "parse_tol", "parse_spec",
           "parse_range", "parse_target", "target_label", "parse_formats", "FORMATS", "PRECISIONS",
           "parse_precisions"]

LAYOUTS = ("nchw", "nhwc")
#: engine names of every OpenCV (5.1: auto/opencv/ort; 5.0: auto/classic/new; 4.x: auto only), checked
#: against the installed OpenCV when the session starts (see plugin.py)
ENGINES = ("auto", "opencv", "ort", "classic", "new")
FORMATS = ("onnx", "tflite", "tf")


def parse_opset(value: str) -> int:
    try:
        opset = int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer opset; use e.g. 11, 13 or 17") from None
    if not 7 <= opset <= 23:
        raise argparse.ArgumentTypeError(f"opset {opset} is out of range; tf2onnx supports 7..18 (13 is the default)")
    return opset


def parse_layout(value: str) -> str:
    v = str(value).strip().lower()
    if v not in LAYOUTS:
        raise argparse.ArgumentTypeError(f"{value!r} is not a layout; use nchw (blobFromImage) or nhwc")
    return v


def parse_engine(value: str) -> str:
    v = str(value).strip().lower()
    if v not in ENGINES:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a cv2.dnn engine; use auto, opencv or ort (OpenCV 5.1), classic or new (OpenCV 5.0)"
        )
    return v


def parse_engines(value: str) -> tuple[str, ...]:
    """``opencv,ort`` -> ("opencv", "ort"): the first is the engine of every item; each other one adds the
    cv2.dnn items again for that engine (``load[engine-ort]``, ``parity[keras-cv2dnn@engine-ort]``)."""
    names = [parse_engine(v) for v in str(value).split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{value!r}: no engine given; use e.g. auto or opencv,ort")
    return tuple(dict.fromkeys(names))


def parse_devices(value: str) -> tuple[str, ...]:
    """``cpu,opencl_fp16``: the first is the device of every item; each other one adds the cv2.dnn items again on
    that device (``load[device-opencl_fp16]``); see :mod:`~pytest_cvdnn.devices`."""
    from .devices import parse_devices as parse

    try:
        return parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_tol(value: str, name: str = "atol") -> float:
    try:
        tol = float(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number; use e.g. 1e-4") from None
    if not math.isfinite(tol) or tol < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number >= 0")
    problem = tolerance_problem(name, tol)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return tol


def _tol(name: str) -> Callable[[str], float]:
    def parse(value: str) -> float:
        return parse_tol(value, name)

    return parse


def _parse_feeds(value: Any) -> Any:
    from .feeds import parse_feeds

    return parse_feeds(value)


def parse_range(value: str) -> tuple[float, float]:
    """``-1,1`` -> (-1.0, 1.0): the range of the values fed to the model's inputs."""
    parts = [p for p in re.split(r"[,:/ ]+", str(value).strip()) if p]
    try:
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a range; write LOW,HIGH, e.g. -1,1 or 0,255") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError(f"{value!r}: the range needs finite LOW < HIGH")
    if max(abs(lo), abs(hi)) > MAX_INPUT_VALUE:
        raise argparse.ArgumentTypeError(
            f"{value!r}: the values fed to the model must lie within ±{MAX_INPUT_VALUE:g} (float32 inputs; larger "
            "ones overflow to inf in the model's first layers)")
    return lo, hi


#: the largest magnitude --cvdnn-input-range accepts
MAX_INPUT_VALUE = 1e9

InputShapes = tuple[tuple[int, ...], ...]


def parse_input_shape(value: Any) -> InputShapes:
    """``64x64x1`` or ``64,64,1`` (one input, no batch) or ``64x64x3;10`` (one per input) → ((64, 64, 1),);
    also a tuple ``(64, 64, 1)`` or a list of tuples (the marker's form)."""
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, int) for v in value):
        parts: list[Any] = [tuple(value)]
    elif isinstance(value, (tuple, list)):
        parts = [tuple(v) if isinstance(v, (tuple, list)) else v for v in value]
    else:
        parts = [p for p in str(value).split(";") if p.strip()]
    shapes = []
    for part in parts:
        try:
            dims = tuple(int(d) for d in (part if isinstance(part, tuple) else re.split(r"[x,* ]+", part.strip())))
        except (TypeError, ValueError):
            dims = ()
        if not dims or any(d < 1 for d in dims):
            raise argparse.ArgumentTypeError(
                f"{value!r} is not an input shape; write the shape without the batch, e.g. 64x64x1 (an image, "
                "NHWC) or 40 (a vector), and one per input separated by ';'")
        shapes.append(dims)
    if not shapes:
        raise argparse.ArgumentTypeError(f"{value!r} is not an input shape; write e.g. 64x64x1")
    return tuple(shapes)


def parse_positive(value: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 1")
    return n


def _number(value: str, not_a_number: str) -> float:
    """``value`` as a float, or the option's own "is not a number" error."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} {not_a_number}") from None


def parse_gib(value: str) -> float:
    """A memory size in GiB (> 0)."""
    gib = _number(value, "is not a number of GiB")
    if not gib > 0 or gib != gib or gib == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number of GiB")
    return gib


def parse_seconds(value: str) -> float:
    """A time limit in seconds (> 0, at most a day)."""
    seconds = _number(value, "is not a number of seconds")
    if not 0 < seconds <= 86400:
        raise argparse.ArgumentTypeError(f"{value!r} must be a number of seconds in (0, 86400]")
    return seconds


def parse_seed(value: str) -> int:
    try:
        seed = int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer seed") from None
    if not 0 <= seed < 2 ** 32:
        raise argparse.ArgumentTypeError(f"{value!r}: a seed is an integer from 0 to 2**32-1")
    return seed


def parse_fraction(value: str) -> float:
    """A share in (0, 1]."""
    x = _number(value, "is not a number; use e.g. 0.99")
    if not 0.0 < x <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a share in (0, 1]; use e.g. 0.99 (99 % of the images)")
    return x


def parse_drop(value: str) -> float:
    """An accuracy change in [0, 1)."""
    x = _number(value, "is not a number; use e.g. 0.01 (one point)")
    if not 0.0 <= x < 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a fraction in [0, 1): use e.g. 0.01 for one point; 1 or "
                                         "more would let any drop pass")
    return x


def parse_target(value: str) -> str:
    """A target: ``opencv==X.Y.Z`` (installed side by side) or the path of a Python that has cv2."""
    text = str(value).strip()
    if text.startswith("opencv=="):
        version = text.split("==", 1)[1]
        if not re.fullmatch(r"\d+\.\d+\.\d+(\.\d+)?", version):
            raise argparse.ArgumentTypeError(f"{value!r}: write the OpenCV version like opencv==4.5.5")
        return text
    path = Path(text).expanduser()
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a target; use opencv==X.Y.Z or the path of a Python interpreter that has cv2"
    )


def _known_names(value: str, known: tuple[str, ...], kind: str, hint: str) -> list[str]:
    """A comma list of names from ``known`` (case and spaces ignored), or an error naming the unknown ones."""
    names = [v.strip().lower() for v in str(value).split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{value!r}: unknown {kind} {', '.join(unknown) or '(empty)'}; use a comma list of {hint}")
    return names


def parse_formats(value: str) -> tuple[str, ...]:
    """``onnx,tflite,tf`` → ("onnx", "tflite", "tf"); ONNX is always checked (it comes first)."""
    names = _known_names(value, FORMATS, "format", "onnx, tflite (cv2.dnn.readNetFromTFLite, OpenCV >= 4.8) and tf "
                         "(a frozen graph for cv2.dnn.readNetFromTensorflow)")
    return tuple(dict.fromkeys(["onnx", *names]))


#: the reduced precisions --cvdnn-quantize makes (see quantize.py)
PRECISIONS = ("fp16", "int8")


def parse_precisions(value: str) -> tuple[str, ...]:
    """``fp16,int8`` → ("fp16", "int8"): the reduced-precision variants of the model to make and check."""
    names = _known_names(value, PRECISIONS, "precision", "fp16 (float16 weights, float32 arithmetic) and int8 "
                         "(onnxruntime static quantization, QDQ)")
    return tuple(dict.fromkeys(names))


#: the onnxruntime runner's execution providers unless --cvdnn-ort-providers says otherwise
DEFAULT_ORT_PROVIDERS = ("CPUExecutionProvider",)


def parse_providers(value: str) -> tuple[str, ...]:
    """``CUDAExecutionProvider,CPUExecutionProvider`` → the onnxruntime execution providers, in order of
    preference, each one this onnxruntime has (``onnxruntime.get_available_providers()``)."""
    names = tuple(dict.fromkeys(v.strip() for v in str(value).split(",") if v.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"{value!r}: no execution provider; e.g. CPUExecutionProvider")
    import onnxruntime

    available = onnxruntime.get_available_providers()
    missing = [n for n in names if n not in available]
    if missing:
        raise argparse.ArgumentTypeError(
            f"{', '.join(missing)} not available in this onnxruntime {onnxruntime.__version__} (it has "
            f"{', '.join(available)}); install the onnxruntime build that has it (e.g. onnxruntime-gpu for "
            "CUDAExecutionProvider, onnxruntime-openvino for OpenVINOExecutionProvider), or drop it")
    return names


def target_label(target: str | None) -> str:
    if target is None:
        return "local"
    return target.replace("==", "-") if target.startswith("opencv==") else target


def parse_spec(value: str) -> tuple[InputSpec | None, NamedSpecs]:
    """A default spec and/or ``NAME:SPEC`` parts per input (see :func:`~pytest_cvdnn.spec.parse_specs`)."""
    try:
        default, named = parse_specs(value)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    for spec in (default, *(s for _, s in named)):  # (a model may declare any size; a typed one is bounded)
        if spec is not None and spec.size is not None and max(spec.size) > MAX_SIDE:
            raise argparse.ArgumentTypeError(
                f"size {spec.size[0]}x{spec.size[1]} is larger than {MAX_SIDE} pixels on a side; no cv2.dnn image "
                "model takes such a blob (write the model's input size, e.g. size=224x224)")
    return default, named


@dataclass(frozen=True)
class Option:
    """One setting: CLI flag, ini key, parser, default, help."""

    dest: str
    flag: str
    ini: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str = "VALUE"


OPTIONS: tuple[Option, ...] = (
    Option("opset", "--cvdnn-opset", "cvdnn_opset", parse_opset, 13, "ONNX opset for tf2onnx (default 13)", "N"),
    Option("layout", "--cvdnn-layout", "cvdnn_layout", parse_layout, "nchw",
           "input layout of the converted model: nchw (what blobFromImage gives, default) or nhwc", "nchw|nhwc"),
    Option("engine", "--cvdnn-engine", "cvdnn_engine", parse_engines, ("auto",),
           "cv2.dnn engine on OpenCV 5: auto (default), opencv or ort on 5.1 (classic or new on 5.0); a comma list "
           "checks several engines in one session (items per engine)", "ENGINE[,ENGINE]"),
    Option("device", "--cvdnn-device", "cvdnn_device", parse_devices, ("cpu",),
           "where cv2.dnn computes (net.setPreferableBackend/Target): cpu (default), cpu_fp16, opencl, opencl_fp16, "
           "cuda, cuda_fp16, openvino, openvino_gpu, vulkan, timvx_npu, cann_npu; a comma list checks several in "
           "one session (items per device; one this machine lacks is skipped with why)", "DEVICE[,DEVICE]"),
    Option("atol", "--cvdnn-atol", "cvdnn_atol", _tol("atol"), DEFAULT_ATOL,
           f"absolute tolerance (default {DEFAULT_ATOL:g}); an element fails only if it exceeds atol and rtol", "X"),
    Option("rtol", "--cvdnn-rtol", "cvdnn_rtol", _tol("rtol"), DEFAULT_RTOL, f"relative tolerance (default {DEFAULT_RTOL:g})", "X"),
    Option("srtol", "--cvdnn-srtol", "cvdnn_srtol", _tol("srtol"), DEFAULT_SRTOL,
           f"tolerance relative to the signal (default {DEFAULT_SRTOL:g}): an output fails if max|Δ| / max|ref| exceeds "
           "it, however small its values (random-weight logits of 1e-11 included)", "X"),
    Option("preprocess", "--cvdnn-preprocess", "cvdnn_preprocess", parse_spec, None,
           "input spec: a Keras mode (caffe, tf, torch, none) or key=value pairs, "
           "e.g. 'scale=0.00392,mean=0/0/0,swap_rb=1,size=224x224'; one per input of a multi-input model: "
           "'image:caffe;thumb:tf,size=64x64'", "SPEC"),
    Option("formats", "--cvdnn-format", "cvdnn_format", parse_formats, ("onnx",),
           "artifacts to check besides the ONNX: tflite (readNetFromTFLite), tf (frozen graph for "
           "readNetFromTensorflow); e.g. onnx,tflite,tf", "LIST"),
    Option("quantize", "--cvdnn-quantize", "cvdnn_quantize", parse_precisions, (),
           "reduced-precision variants of the model's ONNX to make and check as deployments of their own (items "
           "fp16:… and int8:…, judged by the classes and the error relative to the signal): fp16 (float16 "
           "weights) and int8 (onnxruntime static QDQ, calibrated on the checks' inputs); e.g. fp16,int8", "LIST"),
    Option("inputs", "--cvdnn-inputs", "cvdnn_inputs", str, None,
           "folder of images or .npy tensors to use instead of seeded random inputs", "DIR"),
    Option("images", "--cvdnn-images", "cvdnn_images", str, None,
           "folder of your own photos for the preprocessing check (default: scikit-image's photos)", "DIR"),
    Option("input_range", "--cvdnn-input-range", "cvdnn_input_range", parse_range, None,
           "range of the values the checks feed the model, e.g. -1,1 (default: what the input spec gives a 0..255 "
           "image; set it when the model's preprocessing is not known and not declared)", "LOW,HIGH"),
    Option("feeds", "--cvdnn-feed", "cvdnn_feed", _parse_feeds, (),
           "how non-image inputs are fed, per input name: a constant (sr=16000), a range (tokens:range=0..999), "
           "the axis holding the samples (state:batch_axis=1, or none); ';' between inputs (default: the dtype and "
           "batch axis the graph declares, integer inputs within the table they index, else 0..255)", "SPEC"),
    Option("input_shape", "--cvdnn-input-shape", "cvdnn_input_shape", parse_input_shape, None,
           "input shape(s) without the batch for a model that does not define them (a subclassed keras.Model "
           "never called): 64x64x1, or one per input separated by ';'", "SHAPE"),
    Option("samples", "--cvdnn-samples", "cvdnn_samples", parse_positive, 4,
           "number of seeded random inputs per check (default 4; also the batch size of the batch check)", "N"),
    Option("seed", "--cvdnn-seed", "cvdnn_seed", parse_seed, 0, "seed of the random inputs (default 0)", "N"),
    Option("memory_budget", "--cvdnn-memory-budget", "cvdnn_memory_budget", parse_gib, None,
           "largest memory (GiB) the checks of one model may need for their inputs; a model whose inputs need "
           "more is refused before anything is allocated (default: half of this machine's RAM)", "GIB"),
    Option("ort_providers", "--cvdnn-ort-providers", "cvdnn_ort_providers", parse_providers,
           DEFAULT_ORT_PROVIDERS, "onnxruntime execution providers for the onnxruntime runner, in order of "
           "preference, each checked against onnxruntime.get_available_providers() (default CPUExecutionProvider)",
           "PROVIDER[,PROVIDER]"),
    Option("timeout", "--cvdnn-timeout", "cvdnn_timeout", parse_seconds, 600.0,
           "the longest one forward of the model may take in onnxruntime or cv2.dnn (a target's child process) "
           "before its item fails (default 600 s): a graph that runs for ever never hangs the session", "SECONDS"),
    Option("min_agreement", "--cvdnn-min-agreement", "cvdnn_min_agreement", parse_fraction,
           DEFAULT_MIN_AGREEMENT, "the share of --cvdnn-images whose deployed prediction must be the training "
           f"side's (default {DEFAULT_MIN_AGREEMENT:g})", "RATE"),
    Option("max_accuracy_drop", "--cvdnn-max-accuracy-drop", "cvdnn_max_accuracy_drop", parse_drop,
           DEFAULT_MAX_ACCURACY_DROP, "with labelled --cvdnn-images, the accuracy the deployed pipeline may lose "
           f"against the training side, as a fraction (default {DEFAULT_MAX_ACCURACY_DROP:g}: one point)", "FRACTION"),
    Option("training_loader", "--cvdnn-training-loader", "cvdnn_training_loader", parse_loader, Loader("load_img"),
           "how the training side reads --cvdnn-images: load_img (keras.utils.load_img, its default nearest "
           "resize), load_img:bilinear (any of its interpolations), or path/to/module.py:function (path -> HxWx3 RGB "
           "array at the model's size)", "LOADER"),
    Option("cache_dir", "--cvdnn-cache-dir", "cvdnn_cache_dir", str, None,
           "where converted models and reference outputs are cached (default: pytest's cache dir)", "DIR"),
)

#: marker keywords and what they set
MARKER_KEYS = ("model", "onnx", "input_spec", "atol", "rtol", "srtol", "input_range", "input_shape", "opset", "layout",
               "engine", "device", "seed", "samples", "feed", "images", "min_agreement", "max_accuracy_drop", "training_loader")


@dataclass(frozen=True)
class ModelSettings:
    """Everything that decides what is checked for one model."""

    model: str
    onnx: str | None = None
    spec: InputSpec | None = None  # the default spec (every image input without a named one)
    input_specs: NamedSpecs = ()  # (input name, spec) for named inputs
    tolerance: Tolerance = field(default_factory=Tolerance)
    opset: int = 13
    layout: str = "nchw"
    engine: str = "auto"
    device: str = "cpu"  # --cvdnn-device: the backend + target pair cv2.dnn computes on (devices.py)
    inputs: str | None = None
    input_range: tuple[float, float] | None = None  # --cvdnn-input-range: values fed to the model
    input_shape: InputShapes | None = None  # --cvdnn-input-shape: for models that do not define theirs
    feeds: tuple[tuple[str, Any], ...] = ()  # --cvdnn-feed: (input name, feeds.FeedDecl)
    images: str | None = None
    samples: int = 4
    seed: int = 0
    target: str | None = None  # None: the cv2 installed here
    formats: tuple[str, ...] = ("onnx",)  # --cvdnn-format: the artifacts checked
    format: str = "onnx"  # the artifact of this deployment
    quantize: tuple[str, ...] = ()  # --cvdnn-quantize: the reduced-precision variants checked
    precision: str | None = None  # this deployment's reduced precision (fp16/int8), made from the float ONNX
    fix: bool = False  # always run the remedy search (--cvdnn-fix)
    repro: str | None = None  # where repro folders go (--cvdnn-repro)
    save_bundle: str | None = None  # --cvdnn-save-bundle DIR
    bundle: str | None = None  # this "model" is a bundle folder (--cvdnn-bundle)
    tf_helper: bool = False  # a cold cache's TensorFlow work in a helper process (the plugin turns it on)
    memory_budget: float | None = None  # --cvdnn-memory-budget (GiB); None: half of the RAM
    ort_providers: tuple[str, ...] = DEFAULT_ORT_PROVIDERS  # --cvdnn-ort-providers
    timeout: float = 600.0  # --cvdnn-timeout: one forward's time limit (s)
    protected: Any = None  # ownership.Protected: what this session must never replace (the plugin sets it)
    min_agreement: float = DEFAULT_MIN_AGREEMENT  # --cvdnn-min-agreement
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP  # --cvdnn-max-accuracy-drop
    training_loader: Loader = Loader("load_img")  # --cvdnn-training-loader

    def protected_paths(self) -> Any:
        """The session's ownership.Protected (this model's own paths where the plugin did not set one)."""
        from .ownership import Protected

        if self.protected is not None:
            return self.protected
        return Protected.of([self.model if Path(self.model).exists() else None, self.onnx, self.inputs, self.images,
                             self.bundle])

    @property
    def effective_spec(self) -> InputSpec:
        return self.spec if self.spec is not None else InputSpec(layout=self.layout)

    def key(self) -> tuple[Any, ...]:
        return (self.model, self.onnx, self.spec, self.input_specs, self.tolerance, self.opset, self.layout, self.engine, self.device,
                self.inputs, self.input_range, self.input_shape, self.feeds, self.images, self.samples, self.seed, self.target, self.format,
                self.precision, self.ort_providers, self.min_agreement, self.max_accuracy_drop, self.training_loader)

    def with_marker(self, kwargs: Mapping[str, Any], rootdir: Path | None = None) -> "ModelSettings":
        """Apply ``@pytest.mark.cvdnn(...)`` keywords (validated, with a precise error)."""
        unknown = set(kwargs) - set(MARKER_KEYS)
        if unknown:
            import difflib

            close = difflib.get_close_matches(sorted(unknown)[0], MARKER_KEYS, n=1, cutoff=0.6)
            raise ValueError(
                f"unknown @pytest.mark.cvdnn keyword(s) {sorted(unknown)}"
                + (f" (did you mean {close[0]!r}?)" if close else "") + f"; known: {', '.join(MARKER_KEYS)}"
            )
        changes: dict[str, Any] = {}
        for key, value in kwargs.items():
            if value is None and key != "onnx":
                continue
            if key in ("model", "onnx"):
                changes[key] = None if value is None else str(value)
            elif key == "input_spec":
                default, named = coerce_specs(value)
                changes["spec"], changes["input_specs"] = default, named
            elif key in ("atol", "rtol", "srtol"):
                changes["tolerance"] = replace(changes.get("tolerance", self.tolerance), **{key: float(value)})
            elif key == "opset":
                changes["opset"] = parse_opset(str(value))
            elif key == "layout":
                changes["layout"] = parse_layout(str(value))
            elif key == "engine":
                changes["engine"] = parse_engine(str(value))
            elif key == "device":
                devices = parse_devices(str(value))
                if len(devices) != 1:
                    raise ValueError(f"device={value!r}: a test runs on one device; parametrize the test to check "
                                     "several")
                changes["device"] = devices[0]
            elif key == "input_range":
                changes["input_range"] = parse_range(",".join(map(str, value)) if isinstance(value, (tuple, list))
                                                     else str(value))
            elif key == "input_shape":
                changes["input_shape"] = parse_input_shape(value)
            elif key == "feed":
                changes["feeds"] = _parse_feeds(value)
            elif key == "seed":
                changes[key] = parse_seed(str(value))
            elif key == "samples":
                changes[key] = parse_positive(str(value))
            elif key == "images":
                changes[key] = str(value)
            elif key == "min_agreement":
                changes[key] = parse_fraction(str(value))
            elif key == "max_accuracy_drop":
                changes[key] = parse_drop(str(value))
            elif key == "training_loader":
                changes[key] = parse_loader(str(value))
        result = replace(self, **changes)
        if result.onnx and Path(result.model).suffix.lower() in (".onnx", ".tflite"):
            raise ValueError(f"onnx={result.onnx!r} is given with the model {result.model!r}, which is not a Keras "
                             "model: it would never be checked; pass the file you will ship as model=")
        return result
