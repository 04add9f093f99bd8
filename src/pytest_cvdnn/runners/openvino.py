"""The OpenVINO runner (``pip install "pytest-cvdnn[openvino]"``): OpenVINO's CPU plugin on the ONNX the deployment
ships, a second independent reference for cv2.dnn (``parity[openvino-cv2dnn]``).

Registered through the public route any package uses — the ``pytest_cvdnn.runners`` entry-point group of this
package's metadata — not through the built-in registry.  The inference precision is set explicitly to f32: on CPUs
with bfloat16 support OpenVINO's default hint runs in bf16 (logits ~0.2 % of the signal apart), which is a
deployment setting, not the model.  Imports OpenVINO on first use only; where it is not installed the runner has no
kinds, so no item is made for it.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import CvdnnError
from . import RunnerSpec, thread_share

if TYPE_CHECKING:
    from pathlib import Path

    from ..core import Deployment

__all__ = ["OpenVinoRunner", "SPEC", "PRECISION"]

#: the inference precision asked of the CPU plugin
PRECISION = "f32"


class OpenVinoRunner:
    """An OpenVINO compiled model of an ONNX file, compiled on the first forward."""

    name = "openvino"

    def __init__(self, onnx_path: Path, outputs: list[str], output_count: int) -> None:
        self.onnx_path = onnx_path
        self.outputs = outputs
        self.output_count = output_count
        self._compiled: Any = None

    @property
    def compiled(self) -> Any:
        if self._compiled is None:
            import openvino as ov

            config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISION}
            threads = thread_share()
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            try:
                core = ov.Core()
                self._compiled = core.compile_model(core.read_model(str(self.onnx_path)), "CPU", config)
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError/GeneralFailure with its text
                first = " ".join(str(exc).split())[:300]
                raise CvdnnError(f"OpenVINO cannot compile {self.onnx_path.name}: {first}",
                                 fix="OpenVINO's ONNX frontend does not take this graph: its parity item is not "
                                 "evidence either way; the onnxruntime and Keras references still are") from None
        return self._compiled

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        compiled = self.compiled
        results = compiled([np.ascontiguousarray(x) for x in inputs])
        by_name = {}
        for port in compiled.outputs:
            for name in port.get_names():
                by_name[name] = np.asarray(results[port])
        missing = [n for n in self.outputs if n not in by_name]
        if missing:
            raise CvdnnError(f"OpenVINO's compiled {self.onnx_path.name} has no output {missing[0]!r}",
                             fix="report it with the model: OpenVINO renamed a graph output")
        return [by_name[n] for n in self.outputs]


def _for_deployment(dep: Deployment, logits: bool) -> OpenVinoRunner:
    def make() -> OpenVinoRunner:
        path = dep.probe_path if dep.logit_names else dep.onnx_path
        return OpenVinoRunner(path, dep.output_names + dep.logit_names, len(dep.output_names))

    return dep.stage("openvino", make)


def _version(dep: Deployment) -> str:
    from importlib.metadata import version

    return f"OpenVINO {version('openvino')} (CPU, inference precision {PRECISION})"


def _unavailable(dep: Deployment) -> str:
    if find_spec("openvino") is None:
        return 'OpenVINO is not installed (pip install "pytest-cvdnn[openvino]")'
    return "" if dep.settings.format == "onnx" else f"OpenVINO does not run a {dep.format_name}"


SPEC = RunnerSpec(
    "openvino", factory=_for_deployment, unavailable=_unavailable,
    key=lambda dep, logits: dep.onnx_digest, version=_version,
    kinds=frozenset({"keras", "onnx"}) if find_spec("openvino") is not None else frozenset(),
    runs_onnx=True,
    needs=("conversion",), logits="joint", layout="graph", nearness=3,
    compared_with={"cv2dnn": "OpenVINO computes the ONNX graph differently from cv2.dnn (an independent second "
                   "runtime: compare with parity[onnxruntime-cv2dnn] to tell whose computation is off)"},
)
