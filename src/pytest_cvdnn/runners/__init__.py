"""Runners: one per framework behind one protocol, created from one registry.

A runner is a typed object with a ``name`` and ``infer(inputs) -> outputs`` (lists of numpy arrays in the
runner's own layout).  Each runner module also holds its :class:`RunnerSpec`: when it applies to a deployment
(and why not), the stages it needs, the identity of its outputs for the on-disk cache, how it gives the logits,
its input layout, and what a disagreement with another runner means.  :data:`REGISTRY` maps a runner's name to
its module: the built-in ones, and every runner an installed package registers in the ``pytest_cvdnn.runners``
entry-point group (``[project.entry-points."pytest_cvdnn.runners"] name = "package.module"``) — adding a runner
needs no edit here.  The deployment wraps every runner in one
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

__all__ = ["Runner", "RunnerSpec", "REGISTRY", "BUILT_IN", "ENTRY_POINT_GROUP", "runner_names", "runner_spec",
           "parity_pairs", "blame", "thread_share"]


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
    #: how near this runner is, as a reference, to what it is compared with (lower: nearer; the nearest
    #: reference's pair is the one blame and localisation start from), declared rather than read from an order
    nearness: int = 10
    #: it runs the deployment's ONNX graph itself (onnxruntime, OpenVINO): where it disagrees with cv2.dnn,
    #: onnxruntime says which of the two computes the graph differently, and cv2.dnn's side is localised node by node
    runs_onnx: bool = False


#: the built-in runners: name -> its module in this package.  Other runners (OpenVINO's included) are registered
#: through the ``pytest_cvdnn.runners`` entry-point group: name -> the module that holds its ``SPEC``.
BUILT_IN: dict[str, str] = {
    "tflite": "tflite",
    "keras": "keras",
    "onnxruntime": "onnxruntime",
    "cv2dnn": "cv2dnn",
}
#: the entry-point group an installed package registers its runners in (``name = "package.module"``)
ENTRY_POINT_GROUP = "pytest_cvdnn.runners"


def _registry() -> dict[str, str]:
    """The built-in runners, then those installed packages register (by entry point), each by a module path."""
    from importlib.metadata import entry_points

    found = {name: f"{__name__}.{module}" for name, module in BUILT_IN.items()}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        if ep.name in BUILT_IN:
            continue  # (a built-in runner is not replaced from outside)
        found.setdefault(ep.name, ep.value.split(":")[0])
    return found


REGISTRY: dict[str, str] = _registry()


def runner_names() -> tuple[str, ...]:
    """The registered runners: the built-in ones, then the entry points'."""
    return tuple(REGISTRY)


def runner_spec(name: str) -> RunnerSpec:
    """The spec of runner ``name`` (its module is imported, not its framework); ValueError for an unknown one, and
    a CvdnnError naming the module for a registered runner that cannot be imported or holds no RunnerSpec."""
    from ..errors import CvdnnError

    if name not in REGISTRY:
        raise ValueError(f"unknown runner {name!r}; use {', '.join(REGISTRY)}")
    module = REGISTRY[name]
    try:
        spec = importlib.import_module(module).SPEC
    except Exception as exc:  # noqa: BLE001 - a third-party runner's module: said with where it came from
        raise CvdnnError(f"the runner {name!r} (module {module}, entry-point group {ENTRY_POINT_GROUP}) cannot be "
                         f"loaded: {type(exc).__name__}: {str(exc)[:200]}",
                         fix="fix or uninstall the package that registers it; its module must define SPEC, a "
                         "pytest_cvdnn.runners.RunnerSpec") from None
    if not isinstance(spec, RunnerSpec) or spec.name != name:
        raise CvdnnError(f"the runner {name!r} (module {module}) holds no RunnerSpec named {name!r}",
                         fix="define SPEC = RunnerSpec(name, ...) in that module, named as its entry point")
    return spec


def parity_pairs() -> list[tuple[str, str]]:
    """(expected, obtained) of every parity check: per obtained runner, its references nearest first (by their
    declared ``nearness``, then name)."""
    specs = [runner_spec(name) for name in REGISTRY]
    by_nearness = sorted(specs, key=lambda s: (s.nearness, s.name))
    return [(ref.name, spec.name) for spec in specs for ref in by_nearness if spec.name in ref.compared_with]


def blame(expected: str, obtained: str) -> str | None:
    """What it means when ``obtained`` disagrees with ``expected`` (None: not a registered pair)."""
    return runner_spec(expected).compared_with.get(obtained) if expected in REGISTRY else None


def thread_share() -> int | None:
    """Threads per runner when pytest-xdist workers share the cores (set by the plugin), else None."""
    value = os.environ.get("CVDNN_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
