"""Pure-numpy comparison of model outputs (no pytest, no OpenCV).

Two rules, both must hold for an output to pass:

* element-wise, as Polygraphy: an element *mismatches* only when its absolute error
  exceeds ``atol`` **and** its relative error exceeds ``rtol`` (relative to the
  reference element);
* relative to the signal: ``max|Δ| / max|ref|`` (the largest error over the
  reference's own magnitude) must not exceed ``srtol`` (default 1e-3; correct FP32
  deployments measure 1e-7 … 1.5e-5).  This is scale-free: outputs of 1e-11 (the
  logits of a random-weight model) are judged as strictly as outputs of 1, where the
  element-wise rule alone could never fail (every error is below atol).

Every comparison returns a :class:`ParityResult` carrying the statistics, including the
smallest error (relative to the signal) the check could detect, whatever the verdict;
``bool(result)`` is the verdict.

Classifier awareness:

* top-1 / top-k agreement is judged only where the reference's score gap is larger
  than the tolerance, so near-ties (random-weight softmax) are reported as
  ``ambiguous`` instead of raising a false alarm;
* for Softmax outputs the deployment also passes the Softmax *input* (logits) as an
  extra output, where errors are not squashed (see ``Deployment.parity``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence, TypedDict

import numpy as np

__all__ = [
    "input_insensitive",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "Tolerance",
    "TopKResult",
    "ArrayStats",
    "ParityResult",
    "compare",
    "compare_arrays",
    "COUNT_MISMATCH",
    "top1_text",
    "align_outputs",
    "nchw_shape",
]

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
#: the largest max|Δ| / max|ref| that passes: ~70x the worst correct FP32 deployment measured (1.5e-5)
DEFAULT_SRTOL = 1e-3


#: the relative tolerances must stay below this: at 1 an error as large as the signal itself passes
RELATIVE_LIMIT = 1.0


def tolerance_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be the tolerance ``name`` (atol, rtol, srtol), or None.  A relative tolerance of 1 or
    more accepts an error the size of the signal (an output replaced by its negative or by zeros): no parity
    item could fail, so it is refused; atol is judged against each output's size when compared (a comparison
    whose atol covers the signal relies on srtol alone and says so)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return f"{name} must be a finite number >= 0, got {value!r}"
    if name in ("rtol", "srtol", "tie_rel") and value >= RELATIVE_LIMIT:
        what = "|Δ| / |ref| per element" if name == "rtol" else "max|Δ| / max|ref|"
        return (f"{name} = {value:g} would accept an error as large as the signal itself ({what} up to {value:g}): "
                f"no parity item could fail; use a value below {RELATIVE_LIMIT:g} (default "
                f"{DEFAULT_RTOL if name == 'rtol' else DEFAULT_SRTOL:g})")
    return None


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance (an element fails only if it exceeds both), and the tolerance relative
    to the signal (an output fails if max|Δ| / max|ref| exceeds ``srtol``)."""

    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    srtol: float = DEFAULT_SRTOL
    #: False: judged at task level (a reduced-precision artifact): the top-k classes and the error relative to
    #: the signal decide, no element-wise rule
    elementwise: bool = True
    #: rows whose top-k gap is within this share of the row's largest score are near-ties (not judged)
    tie_rel: float = 0.0

    def __post_init__(self) -> None:
        for name in ("atol", "rtol", "srtol", "tie_rel"):
            problem = tolerance_problem(name, getattr(self, name))
            if problem:
                raise ValueError(problem)

    def __str__(self) -> str:
        if not self.elementwise:
            return (f"task level: the top-k classes (near-ties within {self.tie_rel:g} of the signal not judged) and "
                    f"srtol={self.srtol:g}")
        return f"atol={self.atol:g}, rtol={self.rtol:g}, srtol={self.srtol:g}"


@dataclass(frozen=True)
class TopKResult:
    """Agreement of the top-k classes over the rows whose ranking is unambiguous."""

    k: int
    agree: int
    disagree: int
    ambiguous: int

    @property
    def ok(self) -> bool:
        return self.disagree == 0

    def as_dict(self) -> dict[str, int]:
        return {"k": self.k, "agree": self.agree, "disagree": self.disagree, "ambiguous": self.ambiguous}


@dataclass(frozen=True)
class ArrayStats:
    """Error statistics of one output array."""

    name: str
    shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    dtype: str
    expected_dtype: str
    max_abs: float
    mean_abs: float
    median_abs: float
    max_rel: float
    cosine: float
    mismatches: int
    size: int
    nonfinite: int
    required_atol: float
    required_rtol: float
    worst: tuple[tuple[tuple[int, ...], float, float, float], ...]
    topk: tuple[TopKResult, ...] = ()
    shape_ok: bool = True
    scale: float = 0.0  # max |ref|: the signal's magnitude
    signal_rel: float = 0.0  # max|Δ| / max|ref| (inf where the reference is all zero and the other is not)
    nrms: float = 0.0  # RMS(Δ) / RMS(ref)
    srtol: float = DEFAULT_SRTOL
    detectable_rel: float = DEFAULT_SRTOL  # the smallest max|Δ| / max|ref| this comparison fails on
    elementwise_blind: bool = False  # atol >= the signal: the element-wise rule alone could not fail
    elementwise: bool = True  # False: judged at task level (the mismatches are reported, not a failure)

    @property
    def signal_ok(self) -> bool:
        return self.signal_rel <= self.srtol
    @property
    def mismatch_pct(self) -> float:
        return 100.0 * self.mismatches / self.size if self.size else 0.0

    @property
    def ok(self) -> bool:
        return (self.shape_ok and (self.mismatches == 0 or not self.elementwise) and self.nonfinite == 0
                and self.signal_ok and all(t.ok for t in self.topk))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "expected_shape": list(self.expected_shape),
            "dtype": self.dtype,
            "expected_dtype": self.expected_dtype,
            "shape_ok": self.shape_ok,
            "ok": self.ok,
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "median_abs": self.median_abs,
            "max_rel": self.max_rel,
            "cosine": self.cosine,
            "mismatches": self.mismatches,
            "size": self.size,
            "mismatch_pct": self.mismatch_pct,
            "nonfinite": self.nonfinite,
            "required_atol": self.required_atol,
            "required_rtol": self.required_rtol,
            "scale": self.scale,
            "signal_rel": self.signal_rel,
            "nrms": self.nrms,
            "srtol": self.srtol,
            "signal_ok": self.signal_ok,
            "detectable_rel": self.detectable_rel,
            "elementwise_blind": self.elementwise_blind,
            "elementwise": self.elementwise,
            "worst": [
                {"index": list(i), "obtained": o, "expected": e, "abs_diff": d} for i, o, e, d in self.worst
            ],
            "topk": [t.as_dict() for t in self.topk],
        }


@dataclass(frozen=True)
class ParityResult:
    """The comparison of one runner pair over all outputs (``bool()`` is the verdict)."""

    expected_name: str
    obtained_name: str
    tolerance: Tolerance
    outputs: tuple[ArrayStats, ...]
    notes: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.outputs) and all(o.ok for o in self.outputs)

    @property
    def ok(self) -> bool:
        return bool(self)

    @property
    def pair(self) -> str:
        return f"{self.expected_name}-{self.obtained_name}"

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    @property
    def min_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    @property
    def max_signal_rel(self) -> float:
        return max((o.signal_rel for o in self.outputs), default=0.0)

    @property
    def blind_outputs(self) -> list[str]:
        """Outputs whose signal is below atol: only the rule relative to the signal can fail them."""
        return [o.name for o in self.outputs if o.elementwise_blind]

    @property
    def mismatches(self) -> int:
        return sum(o.mismatches for o in self.outputs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pair": self.pair,
            "expected": self.expected_name,
            "obtained": self.obtained_name,
            "ok": self.ok,
            "atol": self.tolerance.atol,
            "rtol": self.tolerance.rtol,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "srtol": self.tolerance.srtol,
            "max_signal_rel": self.max_signal_rel,
            "min_cosine": self.min_cosine,
            "mismatches": self.mismatches,
            "blind_outputs": self.blind_outputs,
            "outputs": [o.as_dict() for o in self.outputs],
            "notes": list(self.notes),
        }

    def summary_line(self) -> str:
        verdict = "ok" if self else "FAIL"
        parts = [
            f"{self.pair}: {verdict}",
            f"max|Δ|={self.max_abs:.3g}",
            f"max rel={self.max_rel:.3g}",
            f"max|Δ|/max|ref|={self.max_signal_rel:.3g}",
            f"cos={self.min_cosine:.6f}",
            f"mismatch={self.mismatches}",
        ]
        top1 = top1_text([o.as_dict() for o in self.outputs])
        if top1:
            parts.append(f"top1={top1}")
        return " ".join(parts)

    def format_failure(self, max_rows: int = 10) -> str:
        """A readable multi-line report in the spirit of pytest-regressions."""
        lines = [
            f"parity {self.pair} failed ({self.tolerance}; an element fails only if it exceeds atol and rtol; "
            "an output fails if max|Δ| / max|ref| exceeds srtol)",
        ]
        for out in self.outputs:
            lines.extend(_format_stats(out, self.expected_name, self.obtained_name, max_rows))
        lines.extend(self.notes)
        return "\n".join(lines)


def top1_text(outputs: Sequence[dict[str, Any]]) -> str:
    """"agree/judged (n near-tie)" over the top-1 results of output statistics (``ArrayStats.as_dict()``)."""
    tops = [t for o in outputs for t in o.get("topk", []) if t["k"] == 1]
    if not tops:
        return ""
    agree = sum(t["agree"] for t in tops)
    judged = agree + sum(t["disagree"] for t in tops)
    ties = sum(t["ambiguous"] for t in tops)
    return f"{agree}/{judged}" + (f" ({ties} near-tie)" if ties else "")


def _format_stats(out: ArrayStats, expected: str, obtained: str, max_rows: int) -> list[str]:
    status = "ok" if out.ok else "MISMATCH"
    lines = ["", f"output {out.name!r}: {status}"]
    if not out.shape_ok:
        lines.append(
            f"  shape: {obtained} {out.shape} ({out.dtype}) vs {expected} {out.expected_shape} ({out.expected_dtype})"
        )
        return lines
    lines += [
        f"  shape {out.shape}, {out.dtype} vs {out.expected_dtype}",
        f"  Number of differences: {out.mismatches} / {out.size} ({out.mismatch_pct:.2f}%)",
        f"  abs error: max {out.max_abs:.6g}, mean {out.mean_abs:.6g}, median {out.median_abs:.6g}",
        f"  rel error: max {out.max_rel:.6g};  cosine similarity {out.cosine:.8f}",
        f"  relative to the signal (max|ref| {out.scale:.3g}): max|Δ|/max|ref| {out.signal_rel:.3g} "
        f"({'ok' if out.signal_ok else 'FAIL'}: srtol {out.srtol:g}), RMS(Δ)/RMS(ref) {out.nrms:.3g}",
        f"  minimum tolerance that would pass: atol={out.required_atol:.3g} (or rtol={out.required_rtol:.3g}), "
        f"srtol={out.signal_rel:.3g}",
    ]
    if out.elementwise_blind:
        lines.append(f"  the signal ({out.scale:.3g}) is below atol: only the rule relative to the signal can fail "
                     "this output")
    if out.nonfinite:
        lines.append(f"  {out.nonfinite} element(s) are NaN/Inf in one output but not the other")
    for t in out.topk:
        lines.append(
            f"  top-{t.k}: {t.agree} agree, {t.disagree} disagree, {t.ambiguous} near-tie (not judged)"
        )
    if out.worst and out.mismatches:
        width = max(12, max(len(str(i)) for i, *_ in out.worst[:max_rows]))
        lines.append(f"  {'index':<{width}} {obtained:>14} {expected:>14} {'diff':>12}")
        for idx, o, e, d in out.worst[:max_rows]:
            lines.append(f"  {str(idx):<{width}} {o:>14.7g} {e:>14.7g} {d:>12.4g}")
    return lines


def _as_float64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _topk(expected: np.ndarray, obtained: np.ndarray, k: int, tol: Tolerance) -> TopKResult:
    """Top-k set agreement per row; rows whose k-th/(k+1)-th gap is within tolerance are ambiguous."""
    e = expected.reshape(-1, expected.shape[-1]).astype(np.float64)
    o = obtained.reshape(-1, obtained.shape[-1]).astype(np.float64)
    agree = disagree = ambiguous = 0
    for er, orow in zip(e, o, strict=True):  # (the same shape: compare_arrays reshaped obtained)
        order = np.argsort(-er, kind="stable")
        kth = er[order[k - 1]]
        nxt = er[order[k]] if k < er.size else -np.inf
        gap = kth - nxt
        # tolerance of the two runners combined: what either may have moved
        margin = 2 * max(tol.atol, tol.rtol * abs(kth), tol.tie_rel * float(np.max(np.abs(er))))
        if gap <= margin:
            ambiguous += 1
            continue
        if set(order[:k].tolist()) == set(np.argsort(-orow, kind="stable")[:k].tolist()):
            agree += 1
        else:
            disagree += 1
    return TopKResult(k=k, agree=agree, disagree=disagree, ambiguous=ambiguous)


def worst_order(diff: np.ndarray, bad: np.ndarray, k: int) -> list[int]:
    """The ``k`` flat indices to show: mismatches first, then by largest error, ties in index order — what
    ``np.lexsort((-diff, ~bad))[:k]`` gives, without sorting the whole array (outputs have millions of
    elements; the candidates are only the elements at or above the k-th largest error of each group)."""
    chosen: list[int] = []
    for group in (bad, ~bad):
        need = k - len(chosen)
        if need <= 0:
            break
        values = diff[group]  # (one copy of the group's errors, partitioned in place: no index arrays of n)
        if values.size > need:
            values.partition(values.size - need)
            idx = np.flatnonzero(group & (diff >= values[values.size - need]))
        else:
            idx = np.flatnonzero(group)
        del values
        chosen.extend(int(i) for i in idx[np.lexsort((idx, -diff[idx]))][:need])
    return chosen


class _Identity(TypedDict):
    """The fields of :class:`ArrayStats` that describe the two arrays, not their differences."""

    name: str
    shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    dtype: str
    expected_dtype: str


def _identity(name: str, expected: np.ndarray, obtained: np.ndarray) -> _Identity:
    return _Identity(
        name=name,
        shape=tuple(obtained.shape),
        expected_shape=tuple(expected.shape),
        dtype=str(obtained.dtype),
        expected_dtype=str(expected.dtype),
    )


def _shape_mismatch(base: _Identity, size: int) -> ArrayStats:
    """The statistics of arrays whose shapes cannot be compared: everything failed."""
    return ArrayStats(
        **base, max_abs=math.inf, mean_abs=math.inf, median_abs=math.inf, max_rel=math.inf,
        cosine=0.0, mismatches=size, size=size, nonfinite=0, required_atol=math.inf,
        required_rtol=math.inf, worst=(), shape_ok=False,
    )


def _abs_error(e: np.ndarray, o: np.ndarray, finite: np.ndarray,
               all_finite: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """|Δ| (0 where a value is not finite) and, where some value is not finite, the mask of the elements that are
    not finite in one array the same way as in the other (None where every value is finite)."""
    if all_finite:
        diff = np.subtract(e, o)
        np.abs(diff, out=diff)
        return diff, None
    diff = np.zeros(e.shape)
    same_nonfinite = ~finite & ((e == o) | (np.isnan(e) & np.isnan(o)))  # (a finite side is never equal)
    odd = ~finite & ~same_nonfinite
    with np.errstate(invalid="ignore", over="ignore"):
        np.abs(np.subtract(e, o, where=finite, out=diff), out=diff)
    return diff, odd


def _mismatches(e: np.ndarray, diff: np.ndarray, finite: np.ndarray | None, odd: np.ndarray | None,
                tol: Tolerance) -> tuple[np.ndarray, float]:
    """The mask of the elements beyond atol and rtol (or not finite the same way), and the largest finite
    relative error; ``finite`` is None where every value is finite."""
    rel = np.abs(e)  # |Δ| / |ref|: inf where the reference is 0 and Δ is not, 0 where both are
    zero = rel == 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(diff, rel, out=rel, where=~zero)
    rel[zero] = np.where(diff[zero] > 0, np.inf, 0.0)
    del zero
    if finite is not None:
        rel[~finite] = 0.0
    bad = (diff > tol.atol) & (rel > tol.rtol)
    if odd is not None:
        bad |= odd
    max_rel = float(np.max(rel, where=np.isfinite(rel), initial=0.0)) if rel.size else 0.0
    return bad, max_rel


def _cosine(ef: np.ndarray, of: np.ndarray, ne: float, no: float) -> float:
    """The cosine similarity of two flat arrays of norms ``ne`` and ``no`` (1 for two zero arrays)."""
    if ne == 0.0 and no == 0.0:
        return 1.0
    if ne == 0.0 or no == 0.0:
        return 0.0
    return float(np.dot(ef, of) / (ne * no))


_Worst = tuple[tuple[int, ...], float, float, float]


def _worst_rows(e: np.ndarray, o: np.ndarray, diff: np.ndarray, bad: np.ndarray, k: int) -> tuple[_Worst, ...]:
    """(index, obtained, expected, |Δ|) of the ``k`` elements to show (:func:`worst_order`)."""
    return tuple(
        (
            tuple(int(i) for i in np.unravel_index(int(flat), e.shape)),
            float(o.ravel()[flat]),
            float(e.ravel()[flat]),
            float(diff.ravel()[flat]),
        )
        for flat in worst_order(diff.ravel(), bad.ravel(), k)
    )


def _topk_results(e: np.ndarray, o: np.ndarray, tol: Tolerance, topk: Sequence[int]) -> tuple[TopKResult, ...]:
    """The top-k agreements of a classifier output (none for a scalar or a single class)."""
    if e.ndim >= 1 and e.shape[-1] > 1 and e.size:
        return tuple(_topk(e, o, k, tol) for k in topk if k < e.shape[-1])
    return ()


def _signal_error(ef: np.ndarray, diff: np.ndarray, ne: float) -> tuple[float, float, float, float]:
    """max|ref| (of the finite reference values ``ef``, of norm ``ne``), max|Δ|, max|Δ| / max|ref| and
    RMS(Δ) / RMS(ref)."""
    scale = max(float(ef.max()), -float(ef.min())) if ef.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    if scale > 0:
        signal_rel = max_abs / scale
        flat_diff = diff.ravel()  # (Δ is 0 where a value is not finite: the sum runs over the finite ones)
        nrms = float(np.sqrt(np.dot(flat_diff, flat_diff)) / ne)
    else:  # an all-zero reference: any difference is an error the size of the signal
        signal_rel = nrms = 0.0 if max_abs == 0.0 else math.inf
    return scale, max_abs, signal_rel, nrms


def compare_arrays(
    expected: np.ndarray,
    obtained: np.ndarray,
    tol: Tolerance = Tolerance(),
    *,
    name: str = "output",
    classifier: bool = False,
    topk: Sequence[int] = (1, 5),
    worst: int = 10,
) -> ArrayStats:
    """Compare one array against its reference and return the statistics."""
    expected = np.asarray(expected)
    obtained = np.asarray(obtained)
    size = int(expected.size)
    base = _identity(name, expected, obtained)
    if expected.shape != obtained.shape:
        if expected.size == obtained.size and expected.squeeze().shape == obtained.squeeze().shape:
            obtained = obtained.reshape(expected.shape)  # e.g. (1, 10) vs (10,): same data
        else:
            return _shape_mismatch(base, size)
    # (memory: float64 copies of both arrays, |Δ| and the relative error, a few masks — ~40 bytes per value;
    # the masks and copies of the finite values are made only where something is not finite)
    e = _as_float64(expected)
    o = _as_float64(obtained)
    finite = np.isfinite(e) & np.isfinite(o)
    all_finite = bool(finite.all())
    diff, odd = _abs_error(e, o, finite, all_finite)
    nonfinite = 0 if odd is None else int(np.count_nonzero(odd))
    bad, max_rel = _mismatches(e, diff, None if all_finite else finite, odd, tol)
    mismatches = int(np.count_nonzero(bad))
    ef, of = (e.ravel(), o.ravel()) if all_finite else (e[finite].ravel(), o[finite].ravel())
    ne, no = float(np.linalg.norm(ef)), float(np.linalg.norm(of))
    cosine = _cosine(ef, of, ne, no)
    worst_rows = _worst_rows(e, o, diff, bad, worst)
    tops = _topk_results(e, o, tol, topk) if classifier else ()
    del bad
    scale, max_abs, signal_rel, nrms = _signal_error(ef, diff, ne)
    mean_abs = float(diff.mean()) if diff.size else 0.0
    median_abs = float(np.median(diff, overwrite_input=True)) if diff.size else 0.0  # (diff is not used after)
    # the smallest max|Δ| / max|ref| that fails: the element-wise rule's, or the rule relative to the signal
    elementwise = max(tol.atol / scale, tol.rtol) if scale > 0 else math.inf
    return ArrayStats(
        **base, max_abs=max_abs, mean_abs=mean_abs, median_abs=median_abs, max_rel=max_rel, cosine=cosine,
        mismatches=mismatches, size=size, nonfinite=nonfinite, required_atol=max_abs, required_rtol=max_rel,
        worst=worst_rows, topk=tops, scale=scale, signal_rel=signal_rel, nrms=nrms, srtol=tol.srtol,
        detectable_rel=min(elementwise, tol.srtol) if tol.elementwise else tol.srtol,
        elementwise_blind=scale > 0 and tol.atol >= scale, elementwise=tol.elementwise,
    )


def compare(
    expected: Sequence[np.ndarray] | np.ndarray,
    obtained: Sequence[np.ndarray] | np.ndarray,
    tol: Tolerance = Tolerance(),
    *,
    expected_name: str = "expected",
    obtained_name: str = "obtained",
    output_names: Sequence[str] | None = None,
    softmax: Sequence[bool] | bool = False,
) -> ParityResult:
    """Compare lists of outputs pairwise (by position) and return a :class:`ParityResult`.

    ``softmax`` marks outputs produced by a final Softmax: they also get a top-k
    agreement verdict that ignores near-ties.
    """
    exp = [expected] if isinstance(expected, np.ndarray) else list(expected)
    obt = [obtained] if isinstance(obtained, np.ndarray) else list(obtained)
    names = list(output_names) if output_names else [f"output{i}" for i in range(len(exp))]
    flags = [softmax] * len(exp) if isinstance(softmax, bool) else list(softmax)
    notes: list[str] = []
    if len(exp) != len(obt):
        notes.append(
            f"{expected_name} returned {len(exp)} output(s) but {obtained_name} returned {len(obt)}"
        )
        missing = ArrayStats(
            name=COUNT_MISMATCH, shape=(len(obt),), expected_shape=(len(exp),), dtype="-",
            expected_dtype="-", max_abs=math.inf, mean_abs=math.inf, median_abs=math.inf,
            max_rel=math.inf, cosine=0.0, mismatches=1, size=1, nonfinite=0,
            required_atol=math.inf, required_rtol=math.inf, worst=(), shape_ok=False,
        )
        return ParityResult(expected_name, obtained_name, tol, (missing,), tuple(notes))
    stats: list[ArrayStats] = []
    # exp and obt have the same length (checked above) and the flags are padded with False to outlast them;
    # names are the caller's and may be fewer (zip stops at the last name, as it always has)
    for e, o, name, is_softmax in zip(exp, obt, names, flags + [False] * len(exp), strict=False):
        stats.append(compare_arrays(e, o, tol, name=name, classifier=is_softmax))
    return ParityResult(expected_name, obtained_name, tol, tuple(stats), tuple(notes))


#: the name of the one "output" a comparison of output lists of different lengths reports
COUNT_MISMATCH = "(output count)"


def nchw_shape(shape: Sequence[int]) -> tuple[int, ...] | None:
    """The NCHW shape of an NHWC 4-D shape (None for other ranks)."""
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else None


def align_outputs(expected_shapes: Sequence[Sequence[int]], obtained: Sequence[np.ndarray],
                  names: Sequence[str] = (), reorder: bool = False) -> tuple[list[np.ndarray], list[str]]:
    """Obtained outputs lined up with the expected (Keras, NHWC) ones, and what had to be done.

    cv2.dnn may return a 4-D output in NCHW where Keras has NHWC (an importer that works in NCHW,
    a converter run with ``outputs_as_nchw``); with ``reorder`` (TFLite/TensorFlow importers, which
    list outputs in their own order) each expected output takes the first unused obtained output of
    the same shape, else of its NCHW shape.  A transposition comes with a note (the deployed code
    must transpose too).  Without ``reorder`` an output is only ever compared with the output at its
    own index (an ONNX whose outputs are swapped is a fault, not something to smooth over).
    Outputs that match neither are left where they are, for the comparison to report.
    """
    obtained = list(obtained)
    if len(obtained) != len(expected_shapes):
        return obtained, []
    label = [names[k] if k < len(names) else f"output {k}" for k in range(len(expected_shapes))]
    used: set[int] = set()
    result: list[np.ndarray | None] = [None] * len(obtained)
    notes: list[str] = []
    for k, shape in enumerate(expected_shapes):
        shape = tuple(shape)
        candidates = [j for j in range(len(obtained)) if j not in used and (reorder or j == k)]
        same = [j for j in candidates if obtained[j].shape == shape]
        pick = k if k in same else (same[0] if same else None)
        if pick is None and shape != nchw_shape(shape):
            nchw = [j for j in candidates if obtained[j].shape == nchw_shape(shape)]
            if nchw:
                pick = k if k in nchw else nchw[0]
                notes.append(f"{label[k]}: cv2.dnn returns NCHW {obtained[pick].shape} where Keras has NHWC "
                             f"{shape}; compared after transposing (0, 2, 3, 1), which your post-processing "
                             "must do too")
        if pick is None:
            continue
        if pick != k:
            notes.append(f"{label[k]} is output {pick} of the deployed model, not output {k}")
        used.add(pick)
        result[k] = obtained[pick] if obtained[pick].shape == shape else obtained[pick].transpose(0, 2, 3, 1)
    if any(r is None for r in result):  # could not line everything up: compare as given
        return obtained, []
    return [r for r in result if r is not None], notes


def input_insensitive(expected: Sequence[np.ndarray], names: Sequence[str], tol: Tolerance) -> list[dict[str, Any]]:
    """Outputs whose reference hardly changes from one input to the next: the largest spread of an element over
    the samples is within the tolerance, so a graph that ignores its input (or computes something else that is as
    flat) would match too.  Untrained models do this (random weights and a softmax: 0.001 for every class)."""
    found = []
    for name, ref in zip(names, expected, strict=False):  # (names are the caller's: an unnamed output is left out)
        if ref.ndim == 0 or len(ref) < 2 or not np.issubdtype(ref.dtype, np.floating) or ref.size == 0:
            continue
        spread = float(np.max(ref.max(axis=0) - ref.min(axis=0)))
        scale = float(np.max(np.abs(ref)))
        if not np.isfinite(spread):
            continue
        if spread <= tol.atol + tol.rtol * scale:
            found.append({"name": name, "spread": spread, "samples": int(len(ref)), "scale": scale, "kind": "flat"})
        elif 0 < scale <= QUIET_ATOLS * tol.atol:
            found.append({"name": name, "spread": spread, "samples": int(len(ref)), "scale": scale, "kind": "quiet"})
    return found


#: an output whose largest value on the checks' inputs is within this many atol is "quiet": random inputs hardly
#: exercise it (a detector's score map on noise), so a pass says little about real inputs
QUIET_ATOLS = 10
