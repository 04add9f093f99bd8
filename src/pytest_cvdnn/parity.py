"""Parity of two runners of a deployment: their outputs and, for final Softmax outputs, their logits, lined
up (NCHW vs NHWC, an importer's output order) and compared with the deployment's tolerance (see compare.py,
which this feeds: pure numpy)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .compare import DEFAULT_SRTOL, ParityResult, Tolerance, align_outputs, compare
from .errors import CvdnnError, StageSkipped

if TYPE_CHECKING:
    from .core import Deployment

__all__ = ["runner_parity", "judged_tolerance", "PRECISION_SRTOL"]

Arrays = list[np.ndarray]


def runner_parity(dep: Deployment, expected: str, obtained: str, inputs: Sequence[np.ndarray] | None = None,
                  whole_batch: bool = False) -> ParityResult:
    """Compare runner ``obtained`` with ``expected`` on ``inputs`` (the deployment's samples by default).
    cv2.dnn runs one sample at a time (as it is usually deployed), or the whole batch at once with
    ``whole_batch``.  The arrays compared on the deployment's own samples are kept for the report's figures."""
    one = not whole_batch
    exp = dep.run(expected, inputs, per_sample=one and expected == "cv2dnn")
    obt = dep.run(obtained, inputs, per_sample=one and obtained == "cv2dnn")
    names, softmax = list(dep.output_names), list(dep.softmax_outputs)
    obt, notes = align_outputs([e.shape for e in exp], obt, names, dep.reorder_outputs)  # NCHW vs NHWC
    if "keras" in (expected, obtained) and dep.has_keras and dep.outputs_by_position:
        notes.append(BY_POSITION)
    if dep.logit_names and len(exp) == len(obt):
        logits = _logits(dep, expected, obtained, inputs, one, notes)
        if logits is not None:
            exp, obt = exp + logits[0], obt + logits[1]
            names += [f"{dep.output_names[k]} (logits)" for k, _ in dep.softmax_logits]
            softmax += [False] * len(logits[0])
    tolerance, precision = judged_tolerance(dep)
    if precision != "fp32":  # (a quantized graph's final Softmax is behind a Q/DQ pair: every score vector is judged)
        softmax = [flag or (e.ndim == 2 and e.shape[-1] > 1) for flag, e in zip(softmax, exp, strict=False)]
        notes.append(f"a reduced-precision ({precision}) artifact: judged at task level — the top-k classes (near-"
                     f"ties within {tolerance.tie_rel:g} of the signal not judged) and max|Δ|/max|ref| ≤ "
                     f"{tolerance.srtol:g} — not element by element")
    result = compare(exp, obt, tolerance, expected_name=expected, obtained_name=obtained,
                     output_names=names, softmax=softmax)
    if inputs is None and not whole_batch:  # (references: the arrays are the run cache's)
        dep.exhibits[f"parity[{expected}-{obtained}]"] = (exp, obt, names)
    return replace(result, notes=result.notes + tuple(notes)) if notes else result


#: per precision: the error relative to the signal a reduced-precision artifact may have (fp16 weights move
#: outputs by ~0.1 % of the signal, int8 by 1-2 %), and the share of the signal within which two classes are a tie
PRECISION_SRTOL = {"fp16": 0.01, "int8": 0.05}


def judged_tolerance(dep: Deployment) -> tuple[Tolerance, str]:
    """The tolerance a parity item of ``dep`` is judged with, and the artifact's precision: element-wise for a
    float32 artifact; at task level for a reduced-precision one (its srtol the precision's default unless
    --cvdnn-srtol was given)."""
    from .graph import quantized

    tol = dep.settings.tolerance
    precision = "fp32"
    if dep.settings.format == "onnx":
        if quantized(dep.graph.op_types):
            precision = "int8"
        elif dep.settings.bundle is None:  # (a bundle replays where onnx may not be installed: its ops say int8)
            precision = str(dep.graph_summary.get("precision", "fp32"))
    if precision not in PRECISION_SRTOL:
        return tol, "fp32"
    srtol = tol.srtol if tol.srtol != DEFAULT_SRTOL else PRECISION_SRTOL[precision]
    return replace(tol, srtol=srtol, elementwise=False, tie_rel=srtol), precision


#: said where several Keras outputs are paired with the graph's by position
BY_POSITION = ("the outputs are paired by position: no name pairs every Keras output with a graph output (Keras "
               "output names, a SavedModel signature's keys and tensors)")


def _logits(dep: Deployment, expected: str, obtained: str, inputs: Sequence[np.ndarray] | None, one: bool,
            notes: list[str]) -> tuple[Arrays, Arrays] | None:
    """Both runners' logits, lined up (None, with a note saying why, where they cannot be compared)."""
    try:
        exp = dep.run(expected, inputs, per_sample=one and expected == "cv2dnn", logits=True)
        obt = dep.run(obtained, inputs, per_sample=one and obtained == "cv2dnn", logits=True)
    except (CvdnnError, StageSkipped) as exc:
        notes.append(f"logits not compared: {exc}")
        return None
    if not len(exp) == len(obt) == len(dep.logit_names):
        notes.append("logits not compared: the Keras and ONNX softmax outputs do not line up")
        return None
    obt, _ = align_outputs([e.shape for e in exp], obt, reorder=dep.reorder_outputs)
    return exp, obt
