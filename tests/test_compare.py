"""The comparison core is pure numpy: exact semantics and the failure text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_cvdnn import Tolerance, compare, compare_arrays
from pytest_cvdnn.compare import top1_text


def test_element_fails_only_if_it_exceeds_both_tolerances() -> None:
    ref = np.array([1000.0, 1.0, 0.0], dtype=np.float32)
    # 0.5 abs on 1000 is 5e-4 rel (< rtol): ok; 2e-3 on 1.0 exceeds both: bad; 5e-5 on 0.0 is < atol: ok
    out = ref + np.array([0.5, 2e-3, 5e-5], dtype=np.float32)
    stats = compare_arrays(ref, out, Tolerance(atol=1e-4, rtol=1e-3))
    assert stats.mismatches == 1
    assert stats.worst[0][0] == (1,)
    assert not stats.ok
    assert compare_arrays(ref, out, Tolerance(atol=3e-3, rtol=1e-3)).ok


def test_statistics_are_computed() -> None:
    ref = np.linspace(-1, 1, 100, dtype=np.float32).reshape(10, 10)
    out = ref.copy()
    out[3, 4] += 0.25
    stats = compare_arrays(ref, out)
    assert stats.max_abs == pytest.approx(0.25, rel=1e-6)
    assert stats.mean_abs == pytest.approx(0.0025, rel=1e-5)
    assert stats.mismatches == 1 and stats.size == 100
    assert stats.mismatch_pct == pytest.approx(1.0)
    assert stats.worst[0][0] == (3, 4)
    assert 0.99 < stats.cosine < 1.0
    assert stats.required_atol == pytest.approx(0.25, rel=1e-6)


def test_identical_arrays_pass_with_perfect_statistics() -> None:
    ref = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    result = compare([ref], [ref.copy()])
    assert result and result.max_abs == 0.0 and result.min_cosine == pytest.approx(1.0)


def test_shape_mismatch_fails_but_size_one_axes_are_tolerated() -> None:
    ref = np.ones((1, 10), np.float32)
    assert compare_arrays(ref, np.ones((10,), np.float32)).ok
    stats = compare_arrays(ref, np.ones((1, 12), np.float32))
    assert not stats.shape_ok and not stats.ok


def test_nan_in_one_output_is_a_mismatch() -> None:
    ref = np.zeros(4, np.float32)
    out = ref.copy()
    out[2] = np.nan
    stats = compare_arrays(ref, out)
    assert stats.nonfinite == 1 and not stats.ok


def test_near_tie_softmax_does_not_raise_a_false_top1_alarm() -> None:
    # random-weight softmax: the top two classes within 1e-7 of each other; runner 2 flips them by rounding
    ref = np.array([[0.3500001, 0.35, 0.15, 0.1499999]], np.float32)
    out = ref.copy()
    out[0, 0], out[0, 1] = ref[0, 1], ref[0, 0]
    assert ref.argmax() != out.argmax()  # top-1 really flips
    result = compare([ref], [out], softmax=True)
    top1 = result.outputs[0].topk[0]
    assert top1.k == 1 and top1.disagree == 0 and top1.ambiguous == 1
    assert result  # the swap is within tolerance
    # the same flip with a real score gap is a disagreement (the exemption is for near-ties only)
    wide = np.array([[0.45, 0.35, 0.1, 0.1]], np.float32)
    assert compare([wide], [wide[:, [1, 0, 2, 3]]], softmax=True).outputs[0].topk[0].disagree == 1


def test_a_real_top1_flip_is_reported() -> None:
    ref = np.array([[0.05, 0.8, 0.15]], np.float32)
    out = np.array([[0.8, 0.05, 0.15]], np.float32)
    result = compare([ref], [out], softmax=True)
    assert not result
    assert result.outputs[0].topk[0].disagree == 1


def test_output_count_mismatch_fails() -> None:
    result = compare([np.zeros(3)], [np.zeros(3), np.zeros(2)], expected_name="keras", obtained_name="cv2dnn")
    assert not result
    assert "keras returned 1 output(s) but cv2dnn returned 2" in result.notes[0]


def test_failure_message_reads_like_a_regression_table() -> None:
    ref = np.arange(20, dtype=np.float32).reshape(1, 20)
    out = ref.copy()
    out[0, 7] += 3.0
    out[0, 2] -= 0.5
    text = compare([ref], [out], Tolerance(1e-4, 1e-3), expected_name="keras", obtained_name="cv2dnn",
                   output_names=["probs"]).format_failure()
    assert "parity keras-cv2dnn failed (atol=0.0001, rtol=0.001" in text
    assert "output 'probs': MISMATCH" in text
    assert "Number of differences: 2 / 20 (10.00%)" in text
    assert "abs error: max 3," in text
    lines = text.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.strip().startswith("index"))
    assert "cv2dnn" in lines[header] and "keras" in lines[header]
    assert lines[header + 1].split()[0] == "(0," and "(0, 7)" in lines[header + 1]
    assert "minimum tolerance that would pass: atol=3" in text


@pytest.mark.parametrize("atol", [-1.0, float("nan"), float("inf")])
def test_tolerance_is_validated(atol: float) -> None:
    with pytest.raises(ValueError, match="atol must be a finite number >= 0"):
        Tolerance(atol=atol)


def test_align_outputs_transposes_nchw_back_and_says_so() -> None:
    from pytest_cvdnn.compare import align_outputs

    nhwc = np.random.default_rng(0).normal(size=(2, 8, 6, 4)).astype(np.float32)
    aligned, notes = align_outputs([nhwc.shape], [nhwc.transpose(0, 3, 1, 2)], ["mask"])
    np.testing.assert_array_equal(aligned[0], nhwc)
    assert len(notes) == 1 and notes[0].startswith("mask: cv2.dnn returns NCHW (2, 4, 8, 6)")


def test_align_outputs_reorders_by_shape_and_leaves_mismatches_to_the_comparison() -> None:
    from pytest_cvdnn.compare import align_outputs, compare

    probs, box = np.ones((1, 5), np.float32), np.zeros((1, 4), np.float32)
    assert align_outputs([(1, 5), (1, 4)], [box, probs], ["probs", "box"]) == ([box, probs], [])  # ONNX: never
    aligned, notes = align_outputs([(1, 5), (1, 4)], [box, probs], ["probs", "box"], reorder=True)
    assert aligned[0] is probs and aligned[1] is box
    assert notes == ["probs is output 1 of the deployed model, not output 0",
                     "box is output 0 of the deployed model, not output 1"]
    wrong = [np.ones((1, 3), np.float32), box]
    same, notes = align_outputs([(1, 5), (1, 4)], wrong)
    assert same == wrong and notes == []
    assert not compare([probs, box], same)


def test_top5_disagreement_is_judged_on_unambiguous_rows_only() -> None:
    ref = np.array([[0.30, 0.20, 0.15, 0.12, 0.10, 0.08, 0.05], [0.30, 0.20, 0.15, 0.12, 0.10, 0.0999999, 0.05]],
                   np.float32)
    out = ref.copy()
    out[:, [4, 5]] = out[:, [5, 4]]  # the 5th and 6th classes trade places in both rows
    top5 = compare([ref], [out], softmax=True).outputs[0].topk[1]
    assert top5.k == 5
    assert (top5.disagree, top5.ambiguous) == (1, 1)  # row 0 has a real gap (0.02), row 1 a near-tie (1e-7)


def test_signal_rule_fails_tiny_outputs_that_atol_cannot_see() -> None:
    ref = np.array([1e-11, -2e-11, 3e-11], np.float32)
    stats = compare([ref], [ref * 1.5], Tolerance()).outputs[0]
    assert stats.elementwise_blind and stats.mismatches == 0  # every element is within atol
    assert not stats.ok and stats.signal_rel == pytest.approx(0.5, rel=1e-5)
    assert stats.detectable_rel == pytest.approx(1e-3)
    assert compare([ref], [ref * 1.0001], Tolerance()).outputs[0].ok  # 1e-4 of the signal passes
    assert compare([ref], [ref * 1.5], Tolerance(srtol=0.999))  # at its loosest, it is blind again


def test_all_zero_reference_fails_any_difference() -> None:
    zero = np.zeros(4, np.float32)
    assert compare([zero], [zero])
    assert not compare([zero], [np.full(4, 1e-9, np.float32)]).outputs[0].signal_ok


# -- every statistic, checked by hand on a small case (the report's numbers are what users act on) ------
REF = np.array([[0.0, 1.0, -2.0, np.nan], [4.0, np.inf, 0.5, 2.0]], np.float32)
OUT = np.array([[0.0, 1.0005, -2.2, np.nan], [4.0, np.inf, 0.0, np.inf]], np.float32)
TOL = Tolerance(atol=1e-3, rtol=1e-2, srtol=0.1)


def test_every_statistic_of_one_array_by_hand() -> None:
    d = compare_arrays(REF, OUT, TOL, name="x", worst=3).as_dict()
    assert (d["name"], d["shape"], d["expected_shape"], d["dtype"], d["expected_dtype"]) == \
        ("x", [2, 4], [2, 4], "float32", "float32")
    # |Δ| of the finite pairs: 0, 0.0005, 0.2, 0, 0.5 (NaN==NaN and inf==inf are equal; inf vs 2 is non-finite)
    assert d["max_abs"] == pytest.approx(0.5) and d["required_atol"] == pytest.approx(0.5)
    assert d["mean_abs"] == pytest.approx((0.0005 + 0.2 + 0.5) / 8, rel=1e-4) and d["median_abs"] == 0.0
    assert d["max_rel"] == pytest.approx(1.0) and d["required_rtol"] == pytest.approx(1.0)  # 0.5 / 0.5
    # mismatches: 0.2 (> 1e-3 and > 1e-2 x 2), 0.5, and the non-finite pair; 0.0005 is within atol
    assert (d["mismatches"], d["size"], d["nonfinite"], d["mismatch_pct"]) == (3, 8, 1, 37.5)
    assert d["scale"] == 4.0 and d["signal_rel"] == pytest.approx(0.125) and not d["signal_ok"]
    assert d["detectable_rel"] == pytest.approx(0.01)  # max(atol/scale, rtol) = 0.01 < srtol
    assert d["srtol"] == 0.1 and d["elementwise_blind"] is False and d["ok"] is False
    ef = np.array([0.0, 1.0, -2.0, 4.0, 0.5])
    of = np.array([0.0, 1.0005, -2.2, 4.0, 0.0])
    assert d["cosine"] == pytest.approx(ef @ of / np.linalg.norm(ef) / np.linalg.norm(of), rel=1e-6)
    assert d["nrms"] == pytest.approx(np.sqrt(np.mean((ef - of) ** 2)) / np.sqrt(np.mean(ef**2)), rel=1e-5)
    assert [(w["index"], w["abs_diff"]) for w in d["worst"]] == [([1, 2], 0.5), ([0, 2], pytest.approx(0.2)),
                                                                 ([1, 3], 0.0)]  # mismatches first, largest first
    assert d["worst"][0]["obtained"] == 0.0 and d["worst"][0]["expected"] == 0.5 and d["topk"] == []


def test_shape_mismatch_and_squeezable_shapes() -> None:
    bad = compare_arrays(np.zeros((2, 3)), np.zeros((3, 2)), name="y")
    assert not bad.ok and not bad.shape_ok and bad.mismatches == 6 and bad.size == 6
    assert math.isinf(bad.max_abs) and math.isinf(bad.required_atol) and bad.cosine == 0.0 and bad.worst == ()
    assert (bad.shape, bad.expected_shape, bad.dtype, bad.expected_dtype) == ((3, 2), (2, 3), "float64", "float64")
    same = compare_arrays(np.ones((1, 10)), np.ones(10))  # (1, 10) vs (10,): the same data
    assert same.ok and same.shape_ok and same.max_abs == 0.0
    assert compare_arrays(np.zeros(3), np.zeros(3)).cosine == 1.0
    assert compare_arrays(np.zeros(3), np.ones(3)).cosine == 0.0


def test_the_pair_result_its_summary_and_its_report() -> None:
    probs_ref = np.array([[0.1, 0.7, 0.2]], np.float32)
    probs_out = np.array([[0.1, 0.2, 0.7]], np.float32)
    r = compare([probs_ref, REF], [probs_out, OUT], TOL, expected_name="keras", obtained_name="cv2dnn",
                output_names=["probs", "x"], softmax=[True, False])
    d = r.as_dict()
    assert (d["pair"], d["expected"], d["obtained"], d["ok"], d["atol"], d["rtol"], d["srtol"]) == \
        ("keras-cv2dnn", "keras", "cv2dnn", False, 1e-3, 1e-2, 0.1)
    assert d["max_abs"] == pytest.approx(0.5) and d["max_rel"] == pytest.approx(2.5) and d["mismatches"] == 5
    assert d["max_signal_rel"] == pytest.approx(0.5 / 0.7) and d["blind_outputs"] == [] and d["notes"] == []
    assert [o["name"] for o in d["outputs"]] == ["probs", "x"]
    assert d["outputs"][0]["topk"] == [{"k": 1, "agree": 0, "disagree": 1, "ambiguous": 0}]
    assert r.summary_line() == ("keras-cv2dnn: FAIL max|Δ|=0.5 max rel=2.5 max|Δ|/max|ref|=0.714 cos=0.537037 "
                                "mismatch=5 top1=0/1")
    text = r.format_failure(max_rows=2)
    assert text.splitlines()[0] == ("parity keras-cv2dnn failed (atol=0.001, rtol=0.01, srtol=0.1; an element fails "
                                    "only if it exceeds atol and rtol; an output fails if max|Δ| / max|ref| exceeds "
                                    "srtol)")
    for line in ("output 'probs': MISMATCH", "  Number of differences: 2 / 3 (66.67%)",
                 "  top-1: 0 agree, 1 disagree, 0 near-tie (not judged)",
                 "  relative to the signal (max|ref| 4): max|Δ|/max|ref| 0.125 (FAIL: srtol 0.1), RMS(Δ)/RMS(ref) 0.117",
                 "  minimum tolerance that would pass: atol=0.5 (or rtol=1), srtol=0.125",
                 "  1 element(s) are NaN/Inf in one output but not the other"):
        assert line in text.splitlines(), line
    rows = [ln for ln in text.splitlines() if ln.startswith("  (")]
    assert len(rows) == 4 and rows[0].split() == ["(0,", "1)", "0.2", "0.7", "0.5"]  # max_rows per output
    ok = compare([probs_ref], [probs_ref], softmax=True)
    assert ok and ok.summary_line().startswith("expected-obtained: ok ") and "top1=1/1" in ok.summary_line()
    assert top1_text([o.as_dict() for o in r.outputs]) == "0/1"
    assert top1_text([{"topk": [{"k": 1, "agree": 2, "disagree": 1, "ambiguous": 3}]}]) == "2/3 (3 near-tie)"
    assert top1_text([{"topk": []}]) == ""


def test_worst_order_is_the_full_sort_without_sorting_everything() -> None:
    """Mismatches first, largest error first, ties in index order: the same as lexsort over the whole array,
    on arrays with many ties, few or many mismatches, and k larger than a group."""
    from pytest_cvdnn.compare import worst_order

    rng = np.random.default_rng(3)
    for trial in range(300):
        n = int(rng.integers(1, 60))
        diff = rng.integers(0, 4, n).astype(np.float64) * rng.choice([1.0, 0.5])  # heavy ties
        bad = rng.random(n) < rng.choice([0.0, 0.1, 0.5, 1.0])
        k = int(rng.integers(0, n + 3))
        expected = [int(i) for i in np.lexsort((-diff, ~bad))[:k]]
        assert worst_order(diff, bad, k) == expected, (trial, diff, bad, k)


def test_compare_arrays_peak_memory_per_value_is_bounded() -> None:
    """Issue 16: the comparison was the peak of a run on large outputs (~100 bytes per compared value: float64
    temporaries, index arrays as long as the output).  Measured with tracemalloc (numpy reports to it): ≤ 48 where
    every value is finite (the usual case), ≤ 68 where some are not (the finite values are copied then)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    a = rng.random((4, 3, 256, 256), dtype=np.float32)
    b = a + np.float32(1e-6)
    b[0, 0, 0, :3] = (np.nan, np.inf, 5.0)  # the non-finite path too
    for x, y, bound in ((a, a + np.float32(1e-6), 48), (a, b, 68)):
        tracemalloc.start()
        try:
            compare_arrays(x, y)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak / a.size <= bound, peak / a.size


def test_relative_error_statistics_leave_out_non_finite_values_and_zero_references() -> None:
    """The relative error is |Δ|/|ref| over finite values: a NaN counts as a mismatch (nonfinite) but not in
    max_rel; where the reference is 0 a nonzero Δ is an infinite relative error (a mismatch beyond atol) that
    max_rel leaves out, and Δ = 0 there is no error at all."""
    e = np.array([1.0, 2.0, 0.0, 4.0, 0.0], np.float32)
    o = e.copy()
    o[1], o[3], o[4] = np.nan, 4.4, 0.5
    s = compare_arrays(e, o)
    assert s.nonfinite == 1 and s.mismatches == 3  # the NaN, 4.4 vs 4 and 0.5 vs 0
    assert s.max_rel == pytest.approx(0.1, rel=1e-5) and s.required_rtol == s.max_rel
    assert s.max_abs == pytest.approx(0.5) and s.median_abs == pytest.approx(0.0)
    same = compare_arrays(np.zeros(3, np.float32), np.zeros(3, np.float32))
    assert same.max_rel == 0.0 and same.mismatches == 0 and same.cosine == 1.0


def test_input_insensitive_outputs_are_named_so_a_pass_that_shows_little_says_so() -> None:
    """The zoo's untrained MobileNetV2 gives 0.001 for every class on every input: a graph that ignores its input
    matches it as well as the right one.  Such outputs are named (spread over the samples within the tolerance);
    an output the inputs move is not; one sample says nothing either way."""
    from pytest_cvdnn.compare import Tolerance, input_insensitive

    tol = Tolerance(atol=1e-4, rtol=1e-3)
    flat = np.full((4, 1000), 0.001, np.float32)
    flat[:, 3] += np.float32(1e-9) * np.arange(4, dtype=np.float32)
    moving = np.random.default_rng(0).random((4, 10), dtype=np.float32)
    found = input_insensitive([flat, moving, flat[:1]], ["probs", "features", "single"], tol)
    assert [f["name"] for f in found] == ["probs"]
    assert found[0]["samples"] == 4 and found[0]["spread"] < 1e-8
    edge = np.zeros((2, 3), np.float32)
    edge[1, 0] = 1e-4 + 1e-3 * 1e-4 * 1.01  # just beyond atol + rtol * scale: it moves (but it is quiet)
    assert [f["kind"] for f in input_insensitive([edge], ["edge"], tol)] == ["quiet"]


def test_a_quiet_output_is_named_with_its_magnitude() -> None:
    """A score map whose largest value on noise is 7e-4 (seven atol) moves with the input, yet the inputs hardly
    exercise it: named "quiet"; at eleven atol it is not; an output zero for every input is "flat"."""
    from pytest_cvdnn.compare import QUIET_ATOLS, Tolerance, input_insensitive

    tol = Tolerance(atol=1e-4, rtol=1e-3)
    rng = np.random.default_rng(0)
    score = (rng.random((4, 64, 64)) * 7e-4).astype(np.float32)
    found = input_insensitive([score, score * 11 / 7, np.zeros((4, 8), np.float32)], ["map", "loud", "zeros"], tol)
    assert [(f["name"], f["kind"]) for f in found] == [("map", "quiet"), ("zeros", "flat")]
    assert found[0]["scale"] == pytest.approx(float(score.max())) and QUIET_ATOLS == 10


def test_the_near_tie_margin_is_what_both_runners_may_move_together() -> None:
    """A top-1 gap between one and two tolerances is a near-tie (each runner may move by a tolerance, so the order
    can flip with both in tolerance): not judged.  Beyond two tolerances it is judged."""
    from pytest_cvdnn.compare import _topk

    tol = Tolerance(atol=1e-4, rtol=0.0)
    expected = np.array([[1.0, 1.0 + 1.5e-4, 0.0]])  # gap 1.5 tolerances
    flipped = np.array([[1.0 + 1.5e-4, 1.0, 0.0]])
    result = _topk(expected, flipped, 1, tol)
    assert (result.ambiguous, result.disagree) == (1, 0), result
    wide = np.array([[1.0, 1.0 + 2.5e-4, 0.0]])  # gap 2.5 tolerances: judged, and the flip is a disagreement
    result = _topk(wide, np.array([[1.0 + 2.5e-4, 1.0, 0.0]]), 1, tol)
    assert (result.ambiguous, result.disagree) == (0, 1), result


def test_input_insensitivity_is_judged_over_the_samples_not_the_classes() -> None:
    """Each sample's row constant over its classes but different between samples: the output depends on the input
    (no caution).  Rows identical between samples but different over the classes: it does not (caution)."""
    from pytest_cvdnn.compare import input_insensitive

    tol = Tolerance()
    moves = np.array([[0.1] * 5, [0.9] * 5, [0.4] * 5], np.float32)
    assert input_insensitive([moves], ["y"], tol) == []
    still = np.array([[0.1, 0.9, 0.3, 0.2, 0.5]] * 3, np.float32)
    found = input_insensitive([still], ["y"], tol)
    assert [f["name"] for f in found] == ["y"] and found[0]["samples"] == 3


@pytest.mark.parametrize("name, value, said", [
    ("rtol", 1.0, "rtol = 1 would accept an error as large as the signal itself (|Δ| / |ref| per element up to 1): "
                  "no parity item could fail; use a value below 1 (default 0.001)"),
    ("srtol", 2.0, "srtol = 2 would accept an error as large as the signal itself (max|Δ| / max|ref| up to 2): no "
                   "parity item could fail; use a value below 1 (default 0.001)"),
    ("rtol", 0.999, None), ("srtol", 0.999, None), ("atol", 5.0, None), ("atol", 0, None), ("rtol", 0, None),
    ("atol", -1, "atol must be a finite number >= 0, got -1"),
    ("rtol", float("nan"), "rtol must be a finite number >= 0, got nan"),
    ("atol", float("inf"), "atol must be a finite number >= 0, got inf"),
    ("srtol", True, "srtol must be a finite number >= 0, got True"),
    ("atol", "x", "atol must be a finite number >= 0, got 'x'"),
])
def test_a_tolerance_is_refused_only_where_no_parity_item_could_fail(name: str, value: object, said: str | None) -> None:
    from pytest_cvdnn.compare import tolerance_problem

    assert tolerance_problem(name, value) == said


def test_outputs_that_differ_in_number_fail_as_one_count_mismatch() -> None:
    from pytest_cvdnn.compare import compare

    result = compare([np.ones(3), np.ones(2)], [np.ones(3)], Tolerance(), expected_name="keras",
                     obtained_name="cv2dnn")
    assert not result.ok and result.notes == ("keras returned 2 output(s) but cv2dnn returned 1",)
    assert result.as_dict() == {
        "pair": "keras-cv2dnn", "expected": "keras", "obtained": "cv2dnn", "ok": False, "atol": 0.0001, "rtol": 0.001,
        "max_abs": math.inf, "max_rel": math.inf, "srtol": 0.001, "max_signal_rel": 0.0, "min_cosine": 0.0,
        "mismatches": 1, "blind_outputs": [], "notes": ["keras returned 2 output(s) but cv2dnn returned 1"],
        "outputs": [{"name": "(output count)", "shape": [1], "expected_shape": [2], "dtype": "-",
                     "expected_dtype": "-", "shape_ok": False, "ok": False, "max_abs": math.inf, "mean_abs": math.inf,
                     "median_abs": math.inf, "max_rel": math.inf, "cosine": 0.0, "mismatches": 1, "size": 1,
                     "mismatch_pct": 100.0, "nonfinite": 0, "required_atol": math.inf, "required_rtol": math.inf,
                     "scale": 0.0, "signal_rel": 0.0, "nrms": 0.0, "srtol": 0.001, "signal_ok": True,
                     "detectable_rel": 0.001, "elementwise_blind": False, "elementwise": True, "worst": [], "topk": []}]}
    # one array each side: compared as one output (an array is not a list of outputs)
    single = compare(np.ones((2, 3)), np.ones((2, 3)) + 1, Tolerance())
    assert [o.name for o in single.outputs] == ["output0"] and single.outputs[0].max_abs == 1.0
    # a softmax flag shorter than the outputs: the rest are not softmaxes (no top-k judged)
    flagged = compare([np.eye(3), np.eye(3)], [np.eye(3), np.eye(3)[::-1]], Tolerance(), softmax=[True])
    assert flagged.outputs[0].topk and not flagged.outputs[1].topk


def test_task_level_judgement_ignores_elements_but_not_classes_or_the_signal() -> None:
    """A reduced-precision artifact: 1 % noise on every score passes (mismatches reported, not failing); a
    clear top-1 flip fails; a near-tie within tie_rel of the signal is not judged; an error beyond srtol fails."""
    task = Tolerance(atol=1e-4, rtol=1e-3, srtol=0.05, elementwise=False, tie_rel=0.05)
    rng = np.random.default_rng(0)
    ref = np.array([[10.0, 2.0, 1.0], [1.0, 9.0, 3.0], [5.0, 4.9, 0.0]])
    noisy = ref * (1 + rng.uniform(-0.01, 0.01, ref.shape))
    stats = compare_arrays(ref, noisy, task, classifier=True, topk=(1,))
    assert stats.ok and stats.mismatches > 0 and stats.topk[0].ambiguous == 1  # (row 3: 5.0 vs 4.9)
    assert not compare_arrays(ref, noisy, Tolerance(), classifier=True, topk=(1,)).ok  # (element-wise: fails)
    clear = np.array([[10.0, 2.0, 1.0], [5.0, 4.4, 0.0]])  # (row 2: a gap of 0.6, beyond the tie margin of 0.5)
    flipped = np.array([[10.0, 2.0, 1.0], [4.69, 4.71, 0.0]])  # (its classes swap for 3.1 % of the signal)
    stats = compare_arrays(clear, flipped, task, classifier=True, topk=(1,))
    assert stats.signal_ok and stats.topk[0].disagree == 1 and not stats.ok  # (the classes decide)
    far = ref * 1.08
    assert not compare_arrays(ref, far, task, classifier=True, topk=(1,)).ok  # (8 % of the signal > srtol 5 %)
    assert str(task).startswith("task level: the top-k classes (near-ties within 0.05 of the signal not judged)")
    with pytest.raises(ValueError, match="tie_rel = 1 would accept an error as large as the signal"):
        Tolerance(tie_rel=1.0)


def test_the_precision_of_a_graph_is_read_from_its_ops_and_weights() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from pytest_cvdnn.graph import precision_of

    def model(nodes: list, inits: list) -> object:
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
        return helper.make_model(graph)

    relu = helper.make_node("Relu", ["x"], ["y"])
    assert precision_of(model([relu], [])) == "fp32"
    half = numpy_helper.from_array(np.ones(4, np.float16), "w")
    assert precision_of(model([relu], [half])) == "fp16"
    cast = helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16)
    assert precision_of(model([cast, relu], [])) == "fp16"
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    qdq = [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s"], ["y"])]
    assert precision_of(model(qdq, [scale])) == "int8"
