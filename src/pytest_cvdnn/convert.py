"""Keras → ONNX with tf2onnx: explicit input signature, NCHW/NHWC, validation, caching."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from .scratch import prefix
from .cache import Cache, sha256_bytes
from .errors import CvdnnError
from .graph import validate_onnx
from .inputs import fill_spatial

__all__ = ["ConversionOptions", "Conversion", "convert_keras", "conversion_key", "tool_versions", "cached_convert",
           "cached_artifact", "signature_specs"]


def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def tool_versions() -> dict[str, str]:
    """Versions from package metadata (no imports, and TensorFlow stays unloaded); a fresh copy."""
    return dict(_tool_versions())


@functools.lru_cache(maxsize=1)
def _tool_versions() -> dict[str, str]:
    return {
        "tensorflow": _version("tensorflow", "tensorflow-cpu", "tf-nightly"),
        "keras": _version("keras"),
        "tf2onnx": _version("tf2onnx"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "opencv": _version("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
        "numpy": _version("numpy"),
        "onnxslim": _version("onnxslim"),
    }


@dataclass(frozen=True)
class ConversionOptions:
    opset: int = 13
    layout: str = "nchw"
    size: tuple[int, int] | None = None  # (width, height) for None spatial dims

    def as_dict(self) -> dict[str, Any]:
        return {"opset": self.opset, "layout": self.layout, "size": list(self.size) if self.size else None}


@dataclass(frozen=True)
class Conversion:
    onnx_path: Path
    meta: dict[str, Any]
    cached: bool
    seconds: float
    where: str = ""  # "in the TensorFlow helper process" when it was made there

    @property
    def warnings(self) -> list[str]:
        """What tf2onnx warned while converting (none for a provided file or an older cache entry)."""
        return [w for w in self.meta.get("warnings") or [] if isinstance(w, str)]


def conversion_key(model_hash: str, opts: ConversionOptions, artifact: str = "onnx") -> str:
    versions = tool_versions()
    payload = json.dumps(
        {
            "model": model_hash,
            "artifact": artifact,
            "options": opts.as_dict(),
            "tools": {k: versions[k] for k in ("tensorflow", "keras", "tf2onnx", "onnx")},
            # 2: a TFLite/frozen-graph artifact's metadata names each output as the artifact does
            "format": 2 if artifact.startswith("tf") else 1,
        },
        sort_keys=True,
    )
    return sha256_bytes(payload.encode())[:32]


def _signature_shapes(keras_meta: dict[str, Any], opts: ConversionOptions) -> list[list[int | None]]:
    return [[None, *fill_spatial(i["shape"], opts.size, i["name"])[1:]] for i in keras_meta["inputs"]]


def _safe_name(name: str, index: int) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name.split(":")[0])
    return cleaned or f"input_{index}"


def tf2onnx_code(keras_meta: dict[str, Any], opts: ConversionOptions, output_path: str = "model.onnx") -> str:
    """The tf2onnx call that makes this conversion, runnable as printed with ``model`` (the Keras model),
    ``tf`` (tensorflow) and ``tf2onnx`` imported: what "Ship this one" tells a user to run."""
    shapes = _signature_shapes(keras_meta, opts)
    names = [_safe_name(i["name"], n) for n, i in enumerate(keras_meta["inputs"])]
    specs = ", ".join(f"tf.TensorSpec({tuple(shape)!r}, tf.{i['dtype']}, name={name!r})"
                      for shape, i, name in zip(shapes, keras_meta["inputs"], names, strict=True))
    nchw = [name for name, shape in zip(names, shapes, strict=True) if opts.layout == "nchw" and len(shape) == 4]
    return (f"tf2onnx.convert.from_keras(model, input_signature=({specs},), opset={opts.opset}"
            + (f", inputs_as_nchw={nchw!r}" if nchw else "") + f", output_path={output_path!r})")


def signature_specs(keras_meta: dict[str, Any], shapes: list[list[int | None]]) -> tuple[list[str], tuple[Any, ...]]:
    """(input names, tf.TensorSpec per Keras input) for an explicit input signature."""
    import tensorflow as tf

    names = [_safe_name(i["name"], n) for n, i in enumerate(keras_meta["inputs"])]
    specs = tuple(tf.TensorSpec(shape, tf.as_dtype(i["dtype"]), name=name)
                  for shape, i, name in zip(shapes, keras_meta["inputs"], names, strict=True))
    return names, specs


def convert_keras(model: Any, keras_meta: dict[str, Any], opts: ConversionOptions, out_path: Path) -> dict[str, Any]:
    """Convert with tf2onnx; returns metadata.  Raises CvdnnError with the layer at fault."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf2onnx

    shapes = _signature_shapes(keras_meta, opts)
    names, signature = signature_specs(keras_meta, shapes)
    nchw = [name for name, shape in zip(names, shapes, strict=True) if opts.layout == "nchw" and len(shape) == 4]
    log = io.StringIO()
    warned = _Warnings()
    try:
        with contextlib.redirect_stdout(log), warned:
            tf2onnx.convert.from_keras(
                model,
                input_signature=signature,
                opset=opts.opset,
                output_path=str(out_path),
                inputs_as_nchw=nchw or None,
            )
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many types
        raise CvdnnError(
            f"tf2onnx failed to convert the Keras model at opset {opts.opset}: "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}",
            fix="try another --cvdnn-opset (11, 13, 17), or replace custom/unsupported layers",
        ) from exc
    layers = [layer["name"] for layer in keras_meta["layers"]]
    path_used = "from_keras"
    try:
        validate_onnx(out_path, layers)
    except CvdnnError as first:
        # tf2onnx can leave TF-only nodes (ConvNeXtTiny); the tf.function path sometimes avoids them
        try:
            _from_function(model, signature, opts, nchw, out_path, log)
            validate_onnx(out_path, layers)
        except CvdnnError as second:
            same = "the same invalid node" if second.node == first.node else str(second)
            raise CvdnnError(first.message, fix=first.fix, node=first.node,
                             details=f"also tried tf2onnx.convert.from_function: {same}") from first
        except Exception as exc:  # noqa: BLE001
            raise CvdnnError(first.message, fix=first.fix, node=first.node,
                             details=f"also tried tf2onnx.convert.from_function: {type(exc).__name__}: {exc}") from first
        path_used = "from_function"
    return {"input_names": names, "layout": opts.layout, "options": opts.as_dict(), "versions": tool_versions(),
            "converter": path_used, "warnings": warned.messages}


class _Warnings(logging.Handler):
    """tf2onnx's warnings while it converts (``Failed to apply optimize_transpose``: the graph keeps the
    transposes and NHWC ops the optimizer meant to remove; an importer may then fail on a node that a clean
    conversion does not have).  Kept in the conversion's metadata and reported by the convert item."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())[:200]
        if text and text not in self.messages and len(self.messages) < 20:
            self.messages.append(text)

    def __enter__(self) -> "_Warnings":
        logging.getLogger("tf2onnx").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("tf2onnx").removeHandler(self)


def _from_function(model: Any, signature: Any, opts: ConversionOptions, nchw: list[str], out_path: Path,
                   log: Any) -> None:
    import tensorflow as tf
    import tf2onnx

    def serve(*args: Any) -> Any:
        return model(list(args) if len(args) > 1 else args[0], training=False)

    traced = tf.function(serve, input_signature=signature)  # (a call, not @: tf.function is untyped)
    with contextlib.redirect_stdout(log):
        tf2onnx.convert.from_function(traced, input_signature=signature, opset=opts.opset,
                                      output_path=str(out_path), inputs_as_nchw=nchw or None)


def cached_convert(
    cache: Cache,
    model_hash: str,
    opts: ConversionOptions,
    load: Callable[[], tuple[Any, dict[str, Any]]],
) -> Conversion:
    """Return the cached ONNX conversion, or convert once (under a file lock) and cache it.

    ``load`` returns ``(keras_model, keras_meta)``; it is called only on a cache miss.
    """
    return cached_artifact(cache, model_hash, conversion_key(model_hash, opts), "model.onnx", load,
                           lambda model, meta, out: convert_keras(model, meta, opts, out), opts.as_dict())


def cached_artifact(
    cache: Cache,
    model_hash: str,
    key: str,
    filename: str,
    load: Callable[[], tuple[Any, dict[str, Any]]],
    produce: Callable[[Any, dict[str, Any], Path], dict[str, Any]],
    options: dict[str, Any],
) -> Conversion:
    """The cached artifact ``key``, or ``produce(model, keras_meta, out_path)`` once under a lock, cached atomically."""
    hit = cache.get_onnx(key, filename)
    if hit is not None:
        return Conversion(hit[0], hit[1], cached=True, seconds=0.0)
    with cache.lock(key):
        hit = cache.get_onnx(key, filename)  # another worker may have finished meanwhile
        if hit is not None:
            return Conversion(hit[0], hit[1], cached=True, seconds=0.0)
        model, keras_meta = load()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=prefix("convert")) as tmp:
            produced = Path(tmp) / filename
            meta = produce(model, keras_meta, produced)
            seconds = time.perf_counter() - start
            meta["convert_seconds"] = seconds
            path, meta = cache.put_onnx(key, produced, meta, filename)
        cache.log_event({"event": "converted", "key": key, "model": model_hash[:16], "artifact": filename,
                         "seconds": round(seconds, 3), "pid": os.getpid(), "ppid": os.getppid(), "options": options})
        return Conversion(path, meta, cached=False, seconds=seconds)
