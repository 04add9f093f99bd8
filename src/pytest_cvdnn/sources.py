"""Where a model comes from: a file, a SavedModel folder, an ONNX file or a factory.

Parsing and hashing a source never imports TensorFlow; only :meth:`ModelSource.load_keras`
does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
import signal
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn

from .errors import CvdnnError

__all__ = ["ModelSource", "parse_source", "factory_module_file"]

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class ModelSource:
    """A model reference as the user wrote it, resolved."""

    text: str
    kind: str  # keras | h5 | savedmodel | onnx | tflite | factory
    path: Path | None = None
    factory: str | None = None
    given: Path | None = field(default=None, compare=False)  # the path as spelled (absolute, links not resolved)

    @property
    def label(self) -> str:
        return self.text

    @property
    def is_onnx(self) -> bool:
        return self.kind == "onnx"

    @property
    def has_keras(self) -> bool:
        """Is there a Keras model to load (the reference), or only a deployable file (ONNX, TFLite)?"""
        return self.kind in ("keras", "h5", "savedmodel", "factory")

    def content_hash(self) -> str:
        """SHA-256 of the model's bytes (file or folder); a factory: its module and the project files it imports."""
        from .cache import sha256_bytes, sha256_path

        if self.path is not None:
            return sha256_path(self.path)
        from .factories import factory_digest

        module_name, func = (self.factory or "").split(":")
        try:  # read, never run: the module may import TensorFlow, which a warm run avoids
            return factory_digest(module_name, func)[0]
        except LookupError:  # not a source file (an extension module?): its file, found by importing it
            file = getattr(importlib.import_module(module_name), "__file__", None)
            source = Path(file).read_bytes() if file else b""
            return sha256_bytes(source + f"\0{module_name}:{func}".encode())

    def check_readable(self) -> None:
        """Cheap structural checks that give a precise message before TensorFlow is involved."""
        if self.path is None:
            return
        path = self.path
        if self.kind == "keras":
            if path.stat().st_size == 0:
                raise CvdnnError(f"{path} is empty (0 bytes)", fix="re-save the model with model.save('model.keras')")
            if not zipfile.is_zipfile(path):
                raise CvdnnError(
                    f"{path} is not a valid .keras archive (a .keras file is a zip with config.json and weights; "
                    "this one is truncated, corrupt or another format)",
                    fix="re-save the model with model.save('model.keras'), or pass the right file",
                )
        elif self.kind == "h5":
            with open(path, "rb") as fh:
                head = fh.read(8)
            if head != b"\x89HDF\r\n\x1a\n":
                raise CvdnnError(
                    f"{path} is not an HDF5 file (bad signature {head!r}); it is truncated, corrupt or another format",
                    fix="re-save the model with model.save('model.h5') or use the .keras format",
                )
        elif self.kind == "onnx" and path.stat().st_size == 0:
            raise CvdnnError(f"{path} is empty (0 bytes)", fix="re-export the ONNX model")
        elif self.kind == "tflite":
            with open(path, "rb") as fh:
                head = fh.read(8)
            if head[4:8] != b"TFL3":  # the flatbuffer file identifier of every TFLite model
                raise CvdnnError(
                    f"{path} is not a TFLite model (" + ("empty" if not head else f"no TFL3 identifier: {head!r}")
                    + "); it is truncated, corrupt or another format",
                    fix="re-export it with tf.lite.TFLiteConverter, or pass the right file")

    def load_keras(self, input_shape: Any = None) -> Any:
        """Load the Keras model (imports TensorFlow) with symbolic inputs and outputs (a subclassed model is
        called on inputs of ``input_shape``, else of the shapes it was built with).  Errors become CvdnnError."""
        from .runners.keras import as_functional

        return as_functional(self._load_keras(), input_shape, self.label)

    def _load_keras(self) -> Any:
        from .runners.keras import import_keras

        keras = import_keras()
        if self.kind == "factory":
            module_name, func = (self.factory or "").split(":")
            try:
                model = _without_exits(lambda: getattr(importlib.import_module(module_name), func)())
            except (SystemExit, _HardExit) as exc:  # it runs inside the pytest session: exiting would end it
                how = "sys.exit" if isinstance(exc, SystemExit) else "os._exit"
                raise CvdnnError(
                    f"the model factory {self.text!r} called {how}({exc.code!r}) instead of returning a model",
                    fix="return a keras.Model from the function; a factory runs inside the pytest session, so it must "
                    "not exit the process",
                ) from None
            except _Raised as exc:
                raise CvdnnError(
                    f"the model factory {self.text!r} raised {exc} (not a Ctrl-C: the session goes on)",
                    fix="make the function return a keras.Model without arguments",
                ) from None
            except Exception as exc:  # noqa: BLE001 - the user's code, reported with its type
                raise CvdnnError(
                    f"the model factory {self.text!r} raised {type(exc).__name__}: {exc}",
                    fix="make the function return a keras.Model without arguments",
                ) from exc
            if not isinstance(model, keras.Model):
                raise CvdnnError(
                    f"the model factory {self.text!r} returned {type(model).__name__}, not a keras.Model",
                    fix="return the model object (for example keras.applications.DenseNet121(weights=None))",
                )
            return model
        assert self.path is not None
        self.check_readable()
        try:
            if self.kind == "savedmodel":
                return _load_savedmodel(keras, self.path)
            return keras.models.load_model(self.path, compile=False)
        except ValueError as exc:
            text = str(exc)
            if "Lambda" in text or "safe_mode" in text:
                raise CvdnnError(
                    f"{self.path} contains a Lambda layer, which Keras refuses to deserialize in safe mode "
                    "(it would run arbitrary code from the file)",
                    fix="replace the Lambda by a registered custom layer, or load it yourself with "
                    "keras.models.load_model(path, safe_mode=False) in a factory 'module:function' you trust",
                ) from exc
            raise CvdnnError(
                f"Keras could not load {self.path}: {_first_line(text)}",
                fix="check that the file was saved by Keras 3 (model.save) and that custom layers are importable",
            ) from exc
        except Exception as exc:  # noqa: BLE001
            raise CvdnnError(
                f"Keras could not load {self.path} ({type(exc).__name__}: {_first_line(str(exc))}); "
                "the file is truncated, corrupt or not a Keras model",
                fix="re-save the model with model.save('model.keras')",
            ) from exc


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:300]
    return "(no message)"


def _load_savedmodel(keras: Any, path: Path) -> Any:
    """A TF SavedModel folder as a Keras model through its serving signature: TensorFlow 2's loader
    (``keras.layers.TFSMLayer``), else the TF1-compatible loader (``tf.compat.v1.saved_model.loader``, which
    loads SavedModels whose TF2 loading fails, e.g. Keras-2 ones with optimizer slot variables).  The outputs
    carry the signature's output names."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
        sig = loaded.signatures["serving_default"]
        specs = sig.structured_input_signature[1]
        out_names = sorted(sig.structured_outputs)
        layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
        call: Any = layer
    except Exception as exc:  # noqa: BLE001 - TF raises many types; the TF1 loader is tried next
        first = exc
        try:
            specs, out_names, call = _tf1_signature(keras, path)
        except CvdnnError:
            raise
        except Exception as exc1:  # noqa: BLE001
            raise CvdnnError(
                f"neither TensorFlow 2's loader ({type(first).__name__}: {_first_line(str(first))}) nor the "
                f"TF1-compatible loader ({type(exc1).__name__}: {_first_line(str(exc1))}) can load the SavedModel "
                f"{path} through a 'serving_default' signature with the tag 'serve'",
                fix="re-export it with tf.saved_model.save(model, path) or model.export(path), or pass the .keras file",
            ) from exc1
    if len(specs) != 1:
        raise CvdnnError(
            f"the SavedModel {path} has {len(specs)} inputs in its serving signature; only one is supported",
            fix="export a single-input model, or pass the Keras model (.keras) instead",
        )
    spec = next(iter(specs.values()))
    inputs = keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name, name=next(iter(specs)))
    out = call(inputs)
    if isinstance(out, dict):
        out = [keras.layers.Identity(name=_safe_layer_name(k))(out[k]) for k in out_names]
    model = keras.Model(inputs, out, name=path.name)
    tensors = _signature_tensors(path)
    # each output's names: the signature's key and the graph tensor it maps to (what an exporter names the
    # ONNX output: "StatefulPartitionedCall:0" ...), so that outputs are matched by name, not by position
    model._cvdnn_output_aliases = [[k, tensors[k]] if k in tensors else [k] for k in out_names]
    return model


def _signature_tensors(path: Path) -> dict[str, str]:
    """The serving signature's output key -> graph tensor name, read from saved_model.pb ({} if unreadable)."""
    try:
        from tensorflow.core.protobuf import saved_model_pb2

        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        for meta in proto.meta_graphs:
            if "serving_default" in meta.signature_def:
                return {k: v.name for k, v in meta.signature_def["serving_default"].outputs.items()}
    except Exception:  # noqa: BLE001 - names are a bonus: outputs are then matched by position, and said so
        return {}
    return {}


def _safe_layer_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "output"


def _tf1_signature(keras: Any, path: Path) -> tuple[dict[str, Any], list[str], Any]:
    """The serving signature of a SavedModel loaded with the TF1-compatible loader, frozen: (input specs by
    name, output names, a Keras layer computing the outputs as a dict)."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as sess:
        meta = tf1.saved_model.loader.load(sess, ["serve"], str(path))
        if "serving_default" not in meta.signature_def:
            raise CvdnnError(f"the SavedModel {path} has no 'serving_default' signature (it has "
                             f"{', '.join(meta.signature_def) or 'none'})",
                             fix="export it with a serving_default signature, or pass the .keras file")
        sig = meta.signature_def["serving_default"]
        ins = {k: v.name for k, v in sig.inputs.items()}
        outs = {k: v.name for k, v in sig.outputs.items()}
        specs = {k: tf.TensorSpec(tf.TensorShape(graph.get_tensor_by_name(n).shape),
                                  graph.get_tensor_by_name(n).dtype, name=k) for k, n in ins.items()}
        frozen = tf1.graph_util.convert_variables_to_constants(
            sess, graph.as_graph_def(), sorted({n.split(":")[0] for n in outs.values()}))
    wrapped = tf1.wrap_function(lambda: tf1.import_graph_def(frozen, name=""), [])
    names = sorted(outs)
    pruned = wrapped.prune(feeds=[wrapped.graph.get_tensor_by_name(n) for n in ins.values()],
                           fetches=[wrapped.graph.get_tensor_by_name(outs[k]) for k in names])

    class SignatureLayer(keras.layers.Layer):  # type: ignore[misc]  # (keras is untyped: a base class of type Any)
        """The frozen serving signature, called like a layer."""

        def call(self, x: Any) -> Any:
            return dict(zip(names, pruned(x), strict=True))

    return specs, names, SignatureLayer(name="serving_default")


class _HardExit(BaseException):
    """``os._exit(code)`` called by a factory (caught instead of ending the session)."""

    def __init__(self, code: Any) -> None:
        super().__init__(code)
        self.code = code


def _without_exits(fn: Callable[[], Any]) -> Any:
    """``fn()`` with ``os._exit`` turned into an exception while it runs: a factory (the user's code, imported and
    called in the pytest session or its helper) that hard-exits must fail its ``convert`` item, not end the
    session without a summary.  (``sys.exit`` raises SystemExit, caught by the caller.)"""
    real = os._exit

    def refuse(status: Any = 0) -> NoReturn:  # (os._exit's own parameter name)
        raise _HardExit(status)

    os._exit = refuse
    interrupted: list[int] = []  # a real Ctrl-C while the factory runs (its KeyboardInterrupt is let through)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    if main and previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        return fn()
    except (KeyboardInterrupt, GeneratorExit) as exc:
        if interrupted:
            raise
        raise _Raised(exc) from None
    finally:
        os._exit = real
        if main and previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous)


class _Raised(Exception):
    """A factory raised KeyboardInterrupt or GeneratorExit itself (no Ctrl-C): its item fails, the session goes on."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__name__}{': ' + str(exc) if str(exc) else ''}")
        self.original = exc


def factory_module_file(source: ModelSource) -> Path:
    """The file of a factory's module (found without running it), where its checks are collected."""
    from .factories import locate_module

    module_name = str(source.factory).split(":")[0]
    file = locate_module(module_name, sys.path)  # (find_spec would import its parent packages)
    if file is None:
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
        file = Path(spec.origin) if spec is not None and spec.origin and Path(spec.origin).is_file() else None
    if file is None:
        raise CvdnnError(
            f"the module {module_name!r} of the model factory {source.text!r} cannot be found",
            fix="make it importable (installed, or relative to the rootdir) and spell it 'package.module:function'",
        )
    return file


def parse_source(text: str, rootdir: Path | None = None) -> ModelSource:
    """Resolve what the user wrote; raise CvdnnError with the fix when it cannot be a model."""
    raw = text.strip()
    if not raw:
        raise CvdnnError("an empty model path was given", fix="pass --cvdnn-model=path/to/model.keras")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        shown = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise CvdnnError(f"the model path '{shown}' is not valid UTF-8; onnx, onnxruntime and OpenCV's Python "
                         "bindings cannot open such a name (your deployment could not either)",
                         fix="rename the file or folder to a UTF-8 name (e.g. with mv on the command line)") from None
    candidate = Path(os.path.expanduser(raw))
    if not candidate.is_absolute() and rootdir is not None and not candidate.exists():
        alt = rootdir / candidate
        if alt.exists():
            candidate = alt
    if candidate.exists():
        if candidate.is_dir():
            if (candidate / "saved_model.pb").is_file():
                return ModelSource(raw, "savedmodel", candidate.resolve(), given=Path(os.path.abspath(candidate)))
            raise CvdnnError(
                f"{candidate} is a folder but not a TensorFlow SavedModel (no saved_model.pb in it)",
                fix="pass a .keras/.h5/.onnx file, or the SavedModel folder itself",
            )
        suffix = candidate.suffix.lower()
        kinds = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".onnx": "onnx", ".tflite": "tflite"}
        if suffix in kinds:
            return ModelSource(raw, kinds[suffix], candidate.resolve(), given=Path(os.path.abspath(candidate)))
        if candidate.name == "saved_model.pb":
            raise CvdnnError(
                f"{candidate} is a SavedModel's graph file, not a model on its own (and not a frozen graph: "
                "cv2.dnn.readNetFromTensorflow cannot read it either, whatever blog posts say)",
                fix=f"pass the folder {candidate.parent} instead; for readNetFromTensorflow, add --cvdnn-format=tf "
                "(a frozen graph made with convert_variables_to_constants_v2, checked in cv2.dnn)",
            )
        raise CvdnnError(
            f"{candidate} has an unknown model extension {suffix!r}",
            fix="use a .keras, .h5, .onnx, .tflite file, a SavedModel folder, or a factory 'package.module:function'",
        )
    if _FACTORY.match(raw):
        if rootdir is not None and str(rootdir) not in sys.path:
            sys.path.insert(0, str(rootdir))
        return ModelSource(raw, "factory", None, raw)
    raise CvdnnError(
        f"model file {raw!r} does not exist",
        fix="check the path (relative paths are taken from the current directory or the rootdir), "
        "or give a factory as 'package.module:function'",
    )

