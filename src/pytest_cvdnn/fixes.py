"""The ONNX-level remedy search: rewrites of the shipped graph (rewrites.py), each proven before it is offered.

A candidate is offered only when (1) onnxruntime computes the same on the rewritten graph as on the original
(max |Δ| <= 1e-6 of the largest output value, every output, the check inputs), and (2) the target's cv2.dnn
loads it and matches the reference (Keras, or onnxruntime on the original for an ONNX source) within the
deployment's tolerance, one sample at a time and on the whole check batch.  cv2.dnn runs in a child process
(a crash fails one candidate, not the session).  The verified graph is written as ``fixed.onnx`` beside a
``fix.py`` that makes it with the onnx API.  No TensorFlow is imported: it serves ONNX sources and
``--cvdnn-onnx`` artifacts as well as converted models, before any Keras-level re-conversion.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .devices import net_key
from .errors import CvdnnError, StageSkipped
from .feeds import static_shapes
from .scratch import prefix
from .verdicts import EQUIVALENCE, rewrite_difference

if TYPE_CHECKING:
    from .core import Deployment

__all__ = ["OnnxRemedy", "onnx_remedies", "EQUIVALENCE"]

#: onnxruntime on the rewritten graph vs the original: max |Δ| / max |original output|


@dataclass(frozen=True)
class OnnxRemedy:
    candidate: str  # what was done, e.g. "sort-slice-axes" or "convert to opset 11 + sort-slice-axes"
    outcome: str  # "works" | "cannot apply" | "not equivalent" | "load failed" | "forward crashed" | "parity failed"
    detail: str = ""
    nodes: tuple[str, ...] = ()
    folder: str | None = None  # where fixed.onnx and fix.py are (for the one that works)

    @property
    def works(self) -> bool:
        return self.outcome == "works"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nodes": list(self.nodes)}


def _key(dep: "Deployment") -> str | None:
    """What decides the search (:func:`~pytest_cvdnn.diagnose.search_key`): the graph, the engine, the tolerance,
    the reference, and the rewrites themselves (their module's source)."""
    from . import rewrites
    from .cache import sha256_file
    from .diagnose import search_key

    return search_key(dep, dep.onnx_digest, net_key(dep.settings.engine, dep.settings.device),
                      repr(dep.settings.tolerance), str(dep.has_keras), sha256_file(Path(rewrites.__file__)))


#: protobuf's limit for one serialized message: a model this large only exists with external data
PROTOBUF_LIMIT = 2 ** 31 - 1


def onnx_remedies(dep: "Deployment", folder: Path) -> list[OnnxRemedy]:
    """Try the candidates in order until one works (remembered per graph and target); the working one's
    ``fixed.onnx`` and ``fix.py`` are (re)written to ``folder``."""
    from .graph import load_model
    from .rewrites import apply, candidates

    import onnx

    from .graph import external_bytes

    key = _key(dep)
    found = dep.cache.get_json("rewrites", f"{key}.json") if key else None
    model = load_model(dep.onnx_path)  # (checked: external data only inside the model's folder)
    size = dep.onnx_path.stat().st_size + external_bytes(dep.onnx_path, model)
    if size >= PROTOBUF_LIMIT:  # a rewrite is proven on a copy of the whole graph, weights included
        return [OnnxRemedy("every rewrite", "cannot apply",
                           f"the model holds {size / (1 << 30):.2f} GiB, more than a single ONNX file can hold "
                           "(protobuf's 2 GiB): rewrites are not tried on models this large")]
    onnx.load_external_data_for_model(model, str(dep.onnx_path.parent))  # fixed.onnx holds its weights
    try:
        results = [OnnxRemedy(r["candidate"], r["outcome"], r["detail"], tuple(r["nodes"]), r["folder"])
                   for r in (found or {})["results"]]  # (a cache miss: the KeyError below)
        by_label = {c.label: c for c in candidates(model, static_shapes(dep))}
        for r in results:  # a warm run writes the files again (cheap), it does not verify again
            if r.works:
                _write(dep, folder, by_label[r.candidate], apply(model, by_label[r.candidate])[0])
        return [_moved(r, folder) for r in results]
    except (TypeError, KeyError, ValueError):
        pass
    results = []
    with tempfile.TemporaryDirectory(prefix=prefix("fix")) as tmp:
        for n, candidate in enumerate(candidates(model, static_shapes(dep))):
            result, fixed = _prove(dep, model, candidate, Path(tmp) / f"candidate{n}.onnx")
            if result.works:
                _write(dep, folder, candidate, fixed)
                result = _moved(result, folder)
            results.append(result)
            if result.works:
                break
    if key:
        dep.cache.put_json({"results": [r.as_dict() for r in results]}, "rewrites", f"{key}.json")
    return results


def _moved(result: OnnxRemedy, folder: Path) -> OnnxRemedy:
    return OnnxRemedy(result.candidate, result.outcome, result.detail, result.nodes,
                      str(folder) if result.works else None)


def _write(dep: "Deployment", folder: Path, candidate: Any, model: Any) -> None:
    import onnx

    from .ownership import publish_folder
    from .rewrites import fix_script

    def fill(staging: Path) -> None:
        onnx.save(model, str(staging / "fixed.onnx"))
        (staging / "fix.py").write_text(fix_script(candidate, str(dep.onnx_path)))

    publish_folder(folder, fill, "--cvdnn-repro", dep.settings.protected_paths())


def _prove(dep: "Deployment", model: Any, candidate: Any, path: Path) -> tuple[OnnxRemedy, Any]:
    """One candidate, written to ``path`` and checked: onnxruntime equivalence, then the target's cv2.dnn; with
    the rewritten model (None where it cannot be made)."""
    import onnx

    from .rewrites import apply

    try:
        fixed, nodes = apply(model, candidate)
        onnx.save(fixed, str(path))
    except ValueError as exc:
        return OnnxRemedy(candidate.label, "cannot apply", str(exc)), None
    except Exception as exc:  # noqa: BLE001 - a rewrite that fails on this graph: the next candidate is tried
        return OnnxRemedy(candidate.label, "cannot apply", f"{type(exc).__name__}: {exc}"[:300]), None
    changed = tuple(n for n in nodes if n)
    samples = dep.inputs
    problem = _equivalent(dep, path, samples) or _same_tensors(dep, model, fixed, path, changed, samples)
    if problem:
        return OnnxRemedy(candidate.label, "not equivalent", problem, changed), fixed
    return _on_target(dep, candidate.label, path, samples, changed), fixed


def _equivalent(dep: "Deployment", path: Path, samples: Sequence[np.ndarray]) -> str | None:
    """Why onnxruntime computes something else on the rewritten graph (None: the same, within the tolerance
    relative to the signal)."""
    from .runners.cached import stacked
    from .runners.onnxruntime import OrtRunner

    try:
        original = dep.run("onnxruntime")  # (cached: the outputs the parity items compare)
        runner = OrtRunner(path, outputs=dep.output_names)

        def run(part: Sequence[np.ndarray]) -> list[np.ndarray]:
            return dep.from_onnx_outputs(runner.infer(dep.to_onnx_inputs(list(part))))

        rewritten = (stacked([run([x[i : i + 1] for x in samples]) for i in range(len(samples[0]))])
                     if dep.fixed_batch_of_one else run(samples))
    except (CvdnnError, StageSkipped) as exc:
        return f"onnxruntime cannot run it: {str(exc)[:200]}"
    return rewrite_difference("output", list(zip(dep.output_names, original, rewritten, strict=True)),
                    _relative(dep))


def _relative(dep: "Deployment") -> float:
    """How far a rewritten graph may compute from the original, relative to each tensor's scale: the srtol the
    parity items use (a rewrite moves float32 rounding, as a runtime does), never less than EQUIVALENCE."""
    return max(EQUIVALENCE, float(dep.settings.tolerance.srtol))


#: rewritten nodes whose own outputs are compared (the first ones; a graph-wide rewrite touches hundreds)
TENSORS_COMPARED = 32


def _same_tensors(dep: "Deployment", model: Any, fixed: Any, path: Path, changed: Sequence[str],
                  samples: Sequence[np.ndarray]) -> str | None:
    """The rewritten nodes' own outputs against the original graph's tensors of the same name, in onnxruntime,
    within EQUIVALENCE of each tensor's scale: the final outputs alone prove little when they hardly depend on
    the input (an untrained model's softmax is 0.001 everywhere).  None: the same (or nothing to compare)."""
    from .diagnose import _ort_tensors

    made = {o for n in model.graph.node for o in n.output}
    names = [o for n in fixed.graph.node if n.name in set(changed) for o in n.output if o in made]
    names = names[:TENSORS_COMPARED]
    if not names:
        return None
    inputs = [i.name for i in dep.graph.inputs]
    count = 1 if dep.fixed_batch_of_one else 2
    feed = dict(zip(inputs, dep.to_onnx_inputs([x[:count] for x in samples]), strict=True))
    with tempfile.TemporaryDirectory(prefix=prefix("fix-tensors")) as tmp:
        try:
            before = _ort_tensors(dep.onnx_path, names, feed, Path(tmp))
            after = _ort_tensors(path, names, feed, Path(tmp))
        except Exception as exc:  # noqa: BLE001 - onnxruntime on the probes: not proven
            return f"the rewritten tensors could not be compared in onnxruntime: {type(exc).__name__}: {exc}"[:300]
    return rewrite_difference("tensor", [(n, before[n], after[n]) for n in names if n in before and n in after],
                    _relative(dep))


def _on_target(dep: "Deployment", label: str, path: Path, samples: Sequence[np.ndarray],
               nodes: tuple[str, ...]) -> OnnxRemedy:
    """The target's cv2.dnn, in a child: load, each sample alone, then the whole batch, against the reference."""
    from .compare import align_outputs, compare
    from .runners.cached import stacked
    from .runners.cv2dnn import opencv_error_line
    from .runners.isolated import ChildError, ChildRun

    count = len(samples[0])
    runs = [dep.to_onnx_inputs([x[i : i + 1] for x in samples]) for i in range(count)]
    batched = count > 1 and not dep.fixed_batch_of_one
    if batched:
        runs.append(dep.to_onnx_inputs(list(samples)))
    names = [i.name for i in dep.graph.inputs]
    child = ChildRun(dep.target, path, dep.settings.engine, names, dep.output_names, runs, device=dep.settings.device)
    try:
        rows = [dep.from_onnx_outputs(child.outputs(r)) for r in range(count)]
        whole = dep.from_onnx_outputs(child.outputs(count)) if batched else None
    except ChildError as exc:
        outcome = "load failed" if exc.stage == "load" else "forward crashed" if "crashed" in exc.message \
            else "forward failed"
        return OnnxRemedy(label, outcome, opencv_error_line(Exception(exc.raw or exc.message))[:300], nodes)
    except CvdnnError as exc:
        return OnnxRemedy(label, "forward failed", exc.message[:300], nodes)
    finally:
        child.close()
    reference_name = "keras" if dep.has_keras else "onnxruntime"
    try:
        reference = dep.run(reference_name)
    except (CvdnnError, StageSkipped) as exc:
        return OnnxRemedy(label, "parity failed", f"no {reference_name} reference: {exc}"[:300], nodes)
    shapes = [r.shape for r in reference]
    checks = [("one sample at a time", stacked(rows))]
    if whole is not None:
        checks.append((f"a batch of {count}", whole))
    worst = 0.0
    for how, outs in checks:
        aligned, _ = align_outputs(shapes, outs, list(dep.output_names), dep.reorder_outputs)
        result = compare(reference, aligned, dep.settings.tolerance, expected_name=reference_name,
                         obtained_name="cv2dnn", output_names=list(dep.output_names),
                         softmax=list(dep.softmax_outputs))
        if not result:
            return OnnxRemedy(label, "parity failed", f"{how}: max abs error {result.max_abs:.3g} against "
                              f"{reference_name}", nodes)
        worst = max(worst, result.max_abs)
    sizes = "batch 1" + (f" and {count}" if whole is not None else "")
    return OnnxRemedy(label, "works", f"loads; matches {reference_name} at {sizes} (max abs error {worst:.3g})",
                      nodes)
