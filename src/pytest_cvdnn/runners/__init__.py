"""Runners: one per framework behind one protocol, created from one registry.

A runner is a typed object with a ``name`` and ``infer(inputs) -> outputs`` (lists of numpy arrays in the
runner's own layout).  Each runner module also holds its :class:`RunnerSpec`: when it applies to a deployment
(and why not), the stages it needs, the identity of its outputs for the on-disk cache, how it gives the logits,
its input layout, and what a disagreement with another runner means.  :data:`REGISTRY` maps a runner's name to
its module: adding a runner is its module plus one line here.  The deployment wraps every runner in one
:class:`~pytest_cvdnn.runners.cached.CachedRunner`; parity pairs and their blame come from the specs.

Every module imports its framework lazily (the registry is read at collection time, which stays light).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:  # (the specs read a deployment; deployment.py imports this package at run time)
    from ..core import Deployment

__all__ = ["Runner", "RunnerSpec", "REGISTRY", "runner_names", "runner_spec", "parity_pairs", "blame",
           "thread_share"]


class Runner(Protocol):
    """One forward pass on a batch of inputs, in the runner's layout; the outputs in model order (for a runner
    whose spec gives ``logits="joint"``, the outputs then the logits: ``output_count`` says where they split)."""

    name: str

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class RunnerSpec:
    """What the deployment needs to know about a runner, without creating it (a warm run creates none)."""

    name: str
    #: (deployment, logits) -> the runner; may raise StageSkipped/CvdnnError (its stages say which)
    factory: Callable[[Deployment, bool], Runner]
    #: why the runner cannot run this deployment ("": it can)
    unavailable: Callable[[Deployment], str]
    #: the identity of its outputs on disk: the model they are a function of (None: it runs every session)
    key: Callable[[Deployment, bool], str | None]
    #: the runner and its version, as the report says it (part of the identity of its cached outputs too)
    version: Callable[[Deployment], str]
    #: the deployment kinds it runs for (see Deployment.kind; "bundle": replayed from stored outputs)
    kinds: frozenset[str] = frozenset({"keras", "onnx", "export", "tflite", "bundle"})
    #: deployment stages it needs: their failure skips the items that use it, with the reason
    needs: tuple[str, ...] = ()
    #: "joint": one forward gives the outputs then the logits; "separate": a second runner (logits=True)
    #: gives them; "none": it has no logits to compare
    logits: Literal["joint", "separate", "none"] = "joint"
    #: "model": the Keras layout (NHWC images), as the deployment holds its inputs; "graph": each graph input's
    layout: Literal["model", "graph"] = "graph"
    #: the TensorFlow helper's phase that writes its cached outputs (None: not the helper's work)
    helper_phase: str | None = None
    #: obtained runner -> what it means when it disagrees with this one (its parity items, in this order)
    compared_with: dict[str, str] = field(default_factory=dict)


#: runner name -> its module in this package (or a dotted module path: a runner shipped elsewhere).  The order is the order of the references a parity item
#: compares an obtained runner with: the nearest stage first (onnxruntime, then Keras, then TFLite for cv2.dnn).
REGISTRY: dict[str, str] = {
    "tflite": "tflite",
    "keras": "keras",
    "onnxruntime": "onnxruntime",
    "cv2dnn": "cv2dnn",
}


def runner_names() -> tuple[str, ...]:
    """The registered runners, in the registry's order."""
    return tuple(REGISTRY)


def runner_spec(name: str) -> RunnerSpec:
    """The spec of runner ``name`` (its module is imported, not its framework); ValueError for an unknown one."""
    if name not in REGISTRY:
        raise ValueError(f"unknown runner {name!r}; use {', '.join(REGISTRY)}")
    module = REGISTRY[name] if "." in REGISTRY[name] else f"{__name__}.{REGISTRY[name]}"
    spec: RunnerSpec = importlib.import_module(module).SPEC
    return spec


def parity_pairs() -> list[tuple[str, str]]:
    """(expected, obtained) of every parity check: per obtained runner, its references nearest first."""
    specs = [runner_spec(name) for name in REGISTRY]
    return [(ref.name, spec.name) for spec in specs for ref in reversed(specs) if spec.name in ref.compared_with]


def blame(expected: str, obtained: str) -> str | None:
    """What it means when ``obtained`` disagrees with ``expected`` (None: not a registered pair)."""
    return runner_spec(expected).compared_with.get(obtained) if expected in REGISTRY else None


def thread_share() -> int | None:
    """Threads per runner when pytest-xdist workers share the cores (set by the plugin), else None."""
    value = os.environ.get("CVDNN_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
