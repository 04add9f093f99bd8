"""The Keras reference runner (inference mode).  Imports TensorFlow on first use."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

__all__ = ["KerasRunner", "import_keras", "keras_metadata"]


def import_keras() -> Any:
    """Import Keras on the TensorFlow backend quietly (no C++ INFO spam in test output)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras


def _shape(tensor: Any) -> list[int | None]:
    return [None if d is None else int(d) for d in tensor.shape]


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

    mode, note, confident = detect_keras_mode(model.name, [type(x).__name__ for x in model.layers[:4]])
    return {
        "name": model.name,
        "preprocessing": {"mode": mode, "note": note, "confident": confident},
        "inputs": [{"name": t.name, "shape": _shape(t), "dtype": str(t.dtype)} for t in model.inputs],
        "outputs": [{"name": t.name, "shape": _shape(t), "dtype": str(t.dtype)} for t in model.outputs],
        "output_names": list(getattr(model, "output_names", []) or []),
        "softmax_outputs": last_layers,
        "layers": [{"name": layer.name, "class": type(layer).__name__} for layer in model.layers],
    }


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
