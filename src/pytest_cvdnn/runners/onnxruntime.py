"""The onnxruntime runner (the CPU execution provider, or those of --cvdnn-ort-providers)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import CvdnnError
from ..settings import DEFAULT_ORT_PROVIDERS
from . import RunnerSpec, thread_share

if TYPE_CHECKING:
    from ..core import Deployment

__all__ = ["OrtRunner", "SPEC"]


class OrtRunner:
    """An onnxruntime session, created on the first forward (a warm run whose outputs are cached needs none)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, outputs: list[str] | None = None,
                 providers: tuple[str, ...] = DEFAULT_ORT_PROVIDERS, output_count: int | None = None,
                 timeout: float = 600.0) -> None:
        self.onnx_path = Path(onnx_path)
        self.timeout = timeout  # one forward's limit: a watchdog sets onnxruntime's terminate flag
        self.outputs = list(outputs or [])
        self.providers = tuple(providers)
        self.output_count = len(self.outputs) if output_count is None else output_count  # the rest: logits
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            threads = thread_share()
            if threads:
                opts.intra_op_num_threads = threads
            self._session = ort.InferenceSession(str(self.onnx_path), opts, providers=list(self.providers))
        return self._session

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return self.outputs or [o.name for o in self.session.get_outputs()]

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import onnxruntime as ort

        feeds = {name: np.ascontiguousarray(x) for name, x in zip(self.input_names, inputs, strict=True)}
        options = ort.RunOptions()
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            options.terminate = True

        watchdog = threading.Timer(self.timeout, stop)
        watchdog.daemon = True
        watchdog.start()
        try:
            return [np.asarray(o) for o in self.session.run(self.output_names, feeds, options)]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types (InvalidArgument, Fail, …)
            if expired.is_set():
                raise CvdnnError(
                    f"onnxruntime did not finish one forward of {self.onnx_path.name} within {self.timeout:g} s; it "
                    "was stopped (a Loop with a huge trip count, or a graph far too large for this machine)",
                    fix="check the model's Loop/Scan trip counts and sizes; if it is meant to be this slow, raise "
                    "--cvdnn-timeout=SECONDS") from None
            text = " ".join(str(exc).split())[:400]
            shapes = ", ".join(f"{n} {tuple(x.shape)} {x.dtype}" for n, x in feeds.items())
            raise CvdnnError(f"onnxruntime failed to run {self.onnx_path.name} on the inputs {shapes}: {text}",
                             fix="the model's declared inputs do not take what the checks feed, or the model is "
                             "broken: check its input shapes and types (a fixed batch other than 1 needs "
                             "a re-export with a dynamic batch)") from None
        finally:
            watchdog.cancel()


def _for_deployment(dep: Deployment, logits: bool) -> OrtRunner:
    """onnxruntime on the graph that also outputs the logits (outputs and logits in one pass)."""

    def make() -> OrtRunner:
        path = dep.probe_path if dep.logit_names else dep.onnx_path
        return OrtRunner(path, outputs=dep.output_names + dep.logit_names, providers=dep.settings.ort_providers,
                         output_count=len(dep.output_names), timeout=dep.settings.timeout)

    return dep.stage("ort", make)


def _version(dep: Deployment) -> str:
    from ..convert import tool_versions

    return f"onnxruntime {tool_versions()['onnxruntime']} ({', '.join(dep.settings.ort_providers)})"


SPEC = RunnerSpec(
    "onnxruntime", factory=_for_deployment,
    unavailable=lambda dep: "" if dep.settings.format == "onnx" else f"onnxruntime does not run a {dep.format_name}",
    key=lambda dep, logits: dep.onnx_digest, version=_version,
    kinds=frozenset({"keras", "onnx", "bundle"}), needs=("conversion",), logits="joint", layout="graph",
    runs_onnx=True,
    nearness=0, compared_with={"cv2dnn": "OpenCV's importer/runtime computes the ONNX graph differently from onnxruntime"},
)
