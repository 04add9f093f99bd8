"""What a check returns (CheckResult) or raises (CheckFailed), and the decisions the output checks make on
arrays and tables (pure numpy, free of pytest and of the deployment: mutation-tested with the quick tier)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import CvdnnError

__all__ = ["CheckResult", "CheckFailed", "shape_text", "not_finite", "output_table_problems", "first_difference",
           "softmax_only_failures", "rewrite_difference", "EQUIVALENCE"]

#: the least a rewritten graph may differ from the original, relative to each tensor's scale (float32 rounding)
EQUIVALENCE = 1e-6


@dataclass
class CheckResult:
    """A check that passed: what it found, and its data for the report."""

    message: str
    data: dict[str, Any] = field(default_factory=dict)


class CheckFailed(CvdnnError):
    """A check that found the deployment wrong: the message, the fix and the data for the report."""

    def __init__(self, message: str, *, fix: str | None = None, details: str | None = None,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(message, fix=fix, details=details)
        self.data = data or {}


def shape_text(a: Any) -> str:
    """A tensor shape with unknown dimensions as "?"."""
    return "(" + ", ".join("?" if d is None else str(d) for d in a) + ")"


def not_finite(outputs: Mapping[str, Sequence[np.ndarray]], names: Sequence[str]) -> list[str]:
    """Each runner's floating outputs that hold NaN or Inf, described ("onnxruntime output 'probs': 2 NaN, 0 Inf
    of 10"); empty when every value is finite (an integer output cannot be NaN)."""
    bad = []
    for runner, outs in outputs.items():
        for k, out in enumerate(outs):
            if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
                name = names[k] if k < len(names) else str(k)
                bad.append(f"{runner} output {name!r}: {int(np.isnan(out).sum())} NaN, {int(np.isinf(out).sum())} Inf "
                           f"of {out.size}")
    return bad


def output_table_problems(table: Mapping[str, Sequence[tuple[tuple[int, ...], str]]], ref_name: str,
                          names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(problems, notes) of each runner's (shape, dtype) per output against ``ref_name``'s: another output count,
    shape or dtype is a problem; a shape that differs only in size-1 axes (the same data) is a note."""
    ref = table[ref_name]
    problems: list[str] = []
    notes: list[str] = []
    for name, rows in table.items():
        if len(rows) != len(ref):
            problems.append(f"{name} returns {len(rows)} output(s), {ref_name} {len(ref)}")
            continue
        for k, ((shape, dtype), (rshape, rdtype)) in enumerate(zip(rows, ref, strict=True)):
            if shape != rshape:
                same_data = int(np.prod(shape)) == int(np.prod(rshape)) and \
                    tuple(d for d in shape if d != 1) == tuple(d for d in rshape if d != 1)
                msg = f"output {k} ({names[k] if k < len(names) else k}): {name} {shape} vs {ref_name} {rshape}"
                (notes if same_data else problems).append(msg + (" (only size-1 axes differ)" if same_data else ""))
            if dtype != rdtype:
                problems.append(f"output {k}: {name} dtype {dtype} vs {ref_name} {rdtype}")
    return problems, notes


def first_difference(first: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> tuple[int, float] | None:
    """(output index, max abs difference) of the first output of ``other`` that is not bit-identical to
    ``first``'s (NaN equal to NaN; another shape: an infinite difference), (-1, inf) for another output count,
    None when every output is bit-identical."""
    if len(other) != len(first):
        return -1, float("inf")
    for k, (a, b) in enumerate(zip(first, other, strict=True)):
        if a.shape != b.shape:
            return k, float("inf")
        if not np.array_equal(a, b, equal_nan=True):
            return k, float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
    return None


def softmax_only_failures(outputs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The failing outputs, when each of them is a final Softmax whose logits (the output named "NAME (logits)")
    agree: the importer applies the softmax differently, the rest of the graph is right.  Empty otherwise (no
    failure, or one that the logits do not explain)."""
    by_name = {str(o["name"]): o for o in outputs}
    failing = [n for n, o in by_name.items() if not o["ok"]]
    explained = [n for n in failing if by_name.get(f"{n} (logits)", {}).get("ok")]
    return explained if failing and explained == failing else []


def rewrite_difference(kind: str, pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
                       relative: float = EQUIVALENCE) -> str | None:
    """The first (name, original, rewritten) whose shapes differ or whose values differ by more than ``relative``
    of the original's scale, said; None if all agree."""
    for name, a, b in pairs:
        if a.shape != b.shape:
            return f"{kind} {name!r} has the shape {b.shape}, the original {a.shape}"
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        worst = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        if worst > relative * max(scale, 1e-30):
            return f"{kind} {name!r} differs by {worst:.3g} (max |{kind}| {scale:.3g}) in onnxruntime"
    return None
