"""Runners: one per framework, one protocol (``name``, ``infer(inputs) -> outputs``).

Inputs and outputs are lists of numpy arrays in the runner's own layout; the
deployment converts between layouts.  Each module imports its framework lazily.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

__all__ = ["Runner", "RUNNER_NAMES"]

RUNNER_NAMES = ("keras", "onnxruntime", "cv2dnn")


class Runner(Protocol):
    name: str

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one forward pass on a batch; returns the outputs in model order."""
        ...
