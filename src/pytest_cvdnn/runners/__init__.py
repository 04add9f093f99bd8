"""Runners: one per framework, one protocol (``name``, ``infer(inputs) -> outputs``).

Inputs and outputs are lists of numpy arrays in the runner's own layout; the
deployment converts between layouts.  Each module imports its framework lazily.
"""

from __future__ import annotations

import os
from typing import Protocol, Sequence

import numpy as np

__all__ = ["Runner", "RUNNER_NAMES", "thread_share"]

RUNNER_NAMES = ("keras", "onnxruntime", "cv2dnn")


class Runner(Protocol):
    name: str

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one forward pass on a batch; returns the outputs in model order."""
        ...


def thread_share() -> int | None:
    """Threads per runner when pytest-xdist workers share the cores (set by the plugin), else None."""
    value = os.environ.get("CVDNN_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
