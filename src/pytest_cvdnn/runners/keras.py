"""The Keras reference runner (inference mode).  Imports TensorFlow on first use."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import RunnerSpec

if TYPE_CHECKING:
    from ..core import Deployment

__all__ = ["KerasRunner", "KerasReference", "import_keras", "keras_metadata", "as_functional", "SPEC"]


def import_keras() -> Any:
    """Import Keras on the TensorFlow backend quietly (no C++ INFO spam in test output)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras


def _shape(tensor: Any) -> list[int | None]:
    return [None if d is None else int(d) for d in tensor.shape]


def _defined(model: Any) -> bool:
    """Has the model a graph of symbolic inputs and outputs (functional, or a built Sequential)?"""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def _built_shapes(model: Any) -> list[tuple[int | None, ...]]:
    """The input shapes (batch included) a subclassed model was built or first called with, if any."""
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    found: list[tuple[int | None, ...]] = []
    for value in shapes.values():
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
            found.extend(tuple(v) for v in value)
        elif isinstance(value, (list, tuple)):
            found.append(tuple(value))
    return found


def _build_default(model: Any) -> list[tuple[int | None, ...]]:
    """The input shape a subclassed model's own ``build(self, input_shape=(None, 24, 24, 3))`` defaults to."""
    import inspect

    try:
        param = inspect.signature(type(model).build).parameters.get("input_shape")
    except (TypeError, ValueError):
        return []
    default = getattr(param, "default", inspect.Parameter.empty)
    if not isinstance(default, (list, tuple)) or not default:
        return []
    if all(isinstance(d, (list, tuple)) for d in default):
        return [tuple(d) for d in default]
    return [tuple(default)] if all(d is None or isinstance(d, int) for d in default) else []


def _first_layer_shape(model: Any) -> list[tuple[int | None, ...]]:
    """The input shape the first sublayer of a built model was built with (one input)."""
    if not getattr(model, "built", False):
        return []
    layers = list(getattr(model, "layers", None) or [])
    shapes = _built_shapes(layers[0]) if layers else []
    return shapes[:1]


def as_functional(model: Any, declared: Sequence[Sequence[int]] | None, label: str) -> Any:
    """``model`` with symbolic inputs and outputs: a subclassed ``keras.Model`` (no ``inputs``/``outputs``) is
    called on ``keras.Input`` of its declared shapes, else of the shapes it was built with.  Raises CvdnnError
    saying what to declare when neither is known."""
    from ..errors import CvdnnError

    if _defined(model):  # a declared shape is for models that have none
        return model
    keras = import_keras()
    shapes = [tuple(s) for s in declared] if declared else [s[1:] for s in _built_shapes(model)]
    if not shapes:  # built by its own build(): the shape its first layer recorded, else its build()'s default
        shapes = [s[1:] for s in _first_layer_shape(model) or _build_default(model)]
    if not shapes:
        raise CvdnnError(
            f"{label} is a {type(model).__name__} (a subclassed keras.Model) whose input shape is not defined: it "
            "has no functional inputs/outputs and was never built or called",
            fix="call model.build((None, H, W, C)) in the factory before returning it, or declare the shape without "
            "the batch: --cvdnn-input-shape=HxWxC (ini cvdnn_input_shape, marker input_shape=(H, W, C))")
    inputs = [keras.Input(shape=s, name="input" if len(shapes) == 1 else f"input_{k}") for k, s in enumerate(shapes)]
    try:
        outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    except Exception as exc:  # noqa: BLE001 - the user's call(), reported with its type
        raise CvdnnError(
            f"{label}: calling the {type(model).__name__} on inputs of shape "
            f"{', '.join(str((None, *s)) for s in shapes)} failed ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''})",
            fix="declare the input shape the model takes with --cvdnn-input-shape (without the batch)") from exc
    if isinstance(outputs, dict):
        outputs = [outputs[k] for k in sorted(outputs)]
    wrapped = keras.Model(inputs, outputs, name=model.name)
    wrapped._cvdnn_inner = model  # its layers tell the preprocessing (see keras_metadata)
    return wrapped


def keras_metadata(model: Any) -> dict[str, Any]:
    """What the plugin needs to know about a Keras model, as JSON (cached per model hash)."""
    last_layers = []
    for out in model.outputs:
        history = getattr(out, "_keras_history", None)
        layer = history[0] if history else None
        act = getattr(getattr(layer, "activation", None), "__name__", None)
        cls = type(layer).__name__ if layer is not None else ""
        last_layers.append(cls == "Softmax" or act == "softmax")
    from ..spec import detect_keras_mode

    inner = getattr(model, "_cvdnn_inner", None)
    first = list(getattr(inner, "layers", None) or [])[:4] if inner is not None else list(model.layers[:4])
    mode, note, confident = detect_keras_mode(model.name, [type(x).__name__ for x in first])
    return {
        "name": model.name,
        "preprocessing": {"mode": mode, "note": note, "confident": confident},
        "inputs": [{"name": t.name, "shape": _shape(t), "dtype": str(t.dtype)} for t in model.inputs],
        "outputs": [{"name": t.name, "shape": _shape(t), "dtype": str(t.dtype)} for t in model.outputs],
        "output_names": list(getattr(model, "output_names", []) or []),
        "output_aliases": list(getattr(model, "_cvdnn_output_aliases", None) or []),
        "softmax_outputs": last_layers,
        "layers": [{"name": layer.name, "class": type(layer).__name__} for layer in model.layers],
        "index_ranges": _index_ranges(model),
    }


def _index_ranges(model: Any) -> dict[str, list[int]]:
    """Integer inputs that feed an Embedding: input name -> [0, input_dim - 1], the tokens it can look up."""
    by_id = {id(t): t.name for t in model.inputs}
    found: dict[str, list[int]] = {}
    for layer in model.layers:
        dim = getattr(layer, "input_dim", None)
        if type(layer).__name__ != "Embedding" or not isinstance(dim, int):
            continue
        try:
            source = layer.input
        except (AttributeError, ValueError):  # (a layer called on several tensors)
            continue
        name = by_id.get(id(source))
        if name is not None:
            found[name] = [0, min(dim - 1, found.get(name, [0, dim - 1])[1])]
    return found


class KerasRunner:
    """Runs ``model(x, training=False)``: Dropout, BatchNorm etc. in inference mode."""

    name = "keras"

    def __init__(self, model: Any) -> None:
        self.model = model

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        feeds = list(inputs)
        # match the model's input structure (a list for Model([inp], ...), a tensor otherwise)
        structured = isinstance(self.model.input, (list, tuple)) or len(feeds) > 1
        out = self.model(feeds if structured else feeds[0], training=False)
        if isinstance(out, dict):
            out = [out[k] for k in sorted(out)]
        if not isinstance(out, (list, tuple)):
            out = [out]
        return [np.asarray(o) for o in out]


def keras_logits_model(model: Any) -> Any | None:
    """A model returning the input of each final softmax (the logits), or None if there is none.

    Handles a ``Softmax`` layer and a layer with ``activation="softmax"`` (cloned with a
    linear activation and the same weights).
    """
    keras = import_keras()
    logits = []
    for out in model.outputs:
        layer = out._keras_history[0]
        if type(layer).__name__ == "Softmax":
            logits.append(layer.input)
        elif getattr(getattr(layer, "activation", None), "__name__", None) == "softmax":
            config = dict(layer.get_config(), activation="linear", name=f"{layer.name}_logits")
            clone = type(layer).from_config(config)
            tensor = clone(layer.input)
            clone.set_weights(layer.get_weights())
            logits.append(tensor)
    if not logits:
        return None
    return keras.Model(model.inputs, logits)


class KerasReference:
    """The reference of a Keras source: its outputs (in the Keras model's order: Deployment.run lines them up
    with the graph's by name) then the logits of its final softmaxes, from one forward pass of a model that
    returns both."""

    name = "keras"

    def __init__(self, model: Any, output_count: int) -> None:
        self.runner = KerasRunner(model)
        self.output_count = output_count

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.runner.infer(inputs)


def _for_deployment(dep: Deployment, logits: bool) -> KerasReference:
    from ..errors import CvdnnError

    model = dep.require("keras_model")
    try:
        logit_model = dep.stage("keras_logits", lambda: keras_logits_model(model))
    except CvdnnError:
        logit_model = None  # e.g. a subclassed model: its outputs alone
    if logit_model is None:
        return KerasReference(model, len(model.outputs))
    both = dep.stage("keras_both", lambda: import_keras().Model(
        model.inputs, list(model.outputs) + list(logit_model.outputs)))
    return KerasReference(both, len(model.outputs))


def _version(dep: Deployment) -> str:
    from ..convert import tool_versions

    versions = tool_versions()
    return f"Keras {versions['keras']} on TensorFlow {versions['tensorflow']}"


SPEC = RunnerSpec(
    "keras", factory=_for_deployment,
    unavailable=lambda dep: "" if dep.has_keras else f"{dep.label} is an ONNX model: there is no Keras reference",
    key=lambda dep, logits: f"{dep.model_hash}|keras-order", version=_version,  # (outputs stored in Keras' order)
    kinds=frozenset({"keras", "export", "bundle"}), logits="joint", layout="model", helper_phase="done",
    nearness=1, compared_with={"onnxruntime": "the conversion (tf2onnx) changed the model: Keras and onnxruntime disagree",
                   "cv2dnn": "the deployed model does not reproduce Keras"},
)
