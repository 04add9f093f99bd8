"""Model factories for ``--cvdnn-model=examples.models:<function>`` (no weight downloads)."""

from __future__ import annotations

import os
from typing import Any


def densenet121() -> Any:
    """The seed case: DenseNet121 with random (seeded) weights, 224x224 RGB, torch preprocessing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(121)
    return keras.applications.DenseNet121(weights=None)


def tiny_cnn() -> Any:
    """The shipped example model, built (untrained) from its script."""
    from examples.build_tiny_cnn import build_model

    return build_model()
