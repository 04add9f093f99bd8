"""The ONNX rewrites the remedy search offers, on graphs built to tell right from wrong: each rewrite changes
exactly the nodes it should, after decoys it must leave alone (so one decoy does not stop the search), and the
rewritten graph computes the same in onnxruntime at batch 1 and 3.  Quick tier: onnx and onnxruntime only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


def _gauntlet() -> Any:
    """x [N,3,8,8] through every construct a rewrite reads, its decoys first.  Outputs: each branch."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    f32, i64 = np.float32, np.int64

    def const(name: str, value: Any, dtype: Any) -> Any:
        return numpy_helper.from_array(np.array(value, dtype), name)

    inits = [const("w", rng.normal(0, 0.3, (4, 3, 3, 3)), f32), const("wt", rng.normal(0, 0.3, (3, 2, 3, 3)), f32),
             const("s0", [0, 1, 1, 0], i64), const("e0", [2**62, 7, 7, 2**62], i64),
             const("ax_sorted", [0, 1, 2, 3], i64), const("ax_neg", [0, -2, -1, 1], i64),
             const("ax_nhwc", [0, 2, 3, 1], i64), const("ax_nhwc2", [0, 3, 2, 1], i64),
             const("sq", [-1, -2], i64), const("un1", [1], i64), const("un_neg", [-1], i64), const("sq13", [1, 3], i64),
             const("lo", 0.0, f32), const("hi", 6.0, f32), const("lo2", -0.5, f32), const("hi2", 0.25, f32),
             const("empty", np.zeros(0), i64)]
    nodes = [
        # Conv: one with kernel_shape (left), one whose weights are computed (left), a ConvTranspose without it
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv_ok", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["w"], ["w_run"], name="w_identity"),
        helper.make_node("Conv", ["x", "w_run"], ["c_run"], name="conv_runtime_w", pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["x", "wt"], ["ct"], name="deconv", pads=[1, 1, 1, 1]),
        # Slice: three inputs (no axes: left), sorted axes (left), negative axes (left), then two to sort
        helper.make_node("Slice", ["c", "s0", "e0"], ["sl_noaxes"], name="slice_noaxes"),
        helper.make_node("Slice", ["c", "s0", "e0", "ax_sorted"], ["sl_sorted"], name="slice_sorted"),
        helper.make_node("Slice", ["c", "s0", "e0", "ax_neg"], ["sl_neg"], name="slice_negative"),
        helper.make_node("Slice", ["c", "s0", "e0", "ax_nhwc"], ["sl_a"], name="crop_a"),
        helper.make_node("Slice", ["c_run", "s0", "e0", "ax_nhwc2"], ["sl_b"], name="crop_b"),
        # Squeeze/Unsqueeze: axes computed at run time (left), then negative axes, Unsqueeze (both signs), Squeeze
        helper.make_node("GlobalAveragePool", ["c"], ["gap"], name="gap"),
        helper.make_node("Identity", ["sq"], ["sq_run"], name="sq_identity"),
        helper.make_node("Squeeze", ["gap", "sq_run"], ["v_run"], name="squeeze_runtime_axes"),
        helper.make_node("Squeeze", ["gap", "sq"], ["v"], name="squeeze_neg"),
        helper.make_node("Unsqueeze", ["v", "un1"], ["u1"], name="unsqueeze_1"),
        helper.make_node("Unsqueeze", ["u1", "un_neg"], ["u2"], name="unsqueeze_neg"),
        helper.make_node("Squeeze", ["u2", "sq13"], ["v2"], name="squeeze_13"),
        # Clip: a bound that is not a constant (ConstantOfShape), lo >= hi, one bound only (all left), then two
        helper.make_node("ConstantOfShape", ["empty"], ["six"], name="six", value=helper.make_tensor("v", 1, [1], [6.0])),
        helper.make_node("Clip", ["c", "lo", "six"], ["cl_run"], name="clip_runtime_bound"),
        helper.make_node("Clip", ["c", "hi", "lo"], ["cl_rev"], name="clip_reversed"),
        helper.make_node("Clip", ["c", "lo"], ["cl_lo"], name="clip_lo_only"),
        helper.make_node("Constant", [], ["hi_node"], name="hi_node", value=numpy_helper.from_array(np.array(6.0, f32))),
        helper.make_node("Clip", ["c", "lo", "hi_node"], ["cl6"], name="relu6"),
        helper.make_node("Clip", ["c", "lo2", "hi2"], ["cl2"], name="clip_band"),
    ]
    full, cropped = [4, 8, 8], [4, 6, 6]
    outs = {"c_run": full, "ct": [2, 8, 8], "sl_noaxes": [3, 6, 8], "sl_sorted": [3, 6, 8], "sl_neg": cropped,
            "sl_a": cropped, "sl_b": cropped, "v_run": [4], "v2": [4], "cl_run": full, "cl_rev": full,
            "cl_lo": full, "cl6": full, "cl2": full}
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *s]) for n, s in outs.items()]
    model = helper.make_model(helper.make_graph(nodes, "gauntlet", [x], outputs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


EXPECTED = {"sort-slice-axes": ["crop_a", "crop_b"], "conv-kernel-shape": ["conv_runtime_w", "deconv"][1:],
            "squeeze-as-reshape": ["squeeze_neg", "unsqueeze_1", "unsqueeze_neg", "squeeze_13"],
            "clip-as-hardsigmoid": ["relu6", "clip_band"]}


def _run(model: Any, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_each_rewrite_changes_exactly_its_nodes_after_the_decoys_and_computes_the_same() -> None:
    import onnx

    from pytest_cvdnn.rewrites import REWRITES, Candidate, apply, candidates

    model = _gauntlet()
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).normal(0, 1, (3, 3, 8, 8)).astype(np.float32)
    before = [_run(model, b) for b in (x[:1], x)]
    for name, rewrite in REWRITES.items():
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        assert rewrite(copy) == EXPECTED[name], name
    fixed, changed = apply(model, Candidate(tuple(REWRITES)))
    assert changed == [n for name in REWRITES for n in EXPECTED[name]]
    onnx.checker.check_model(fixed)
    ops = {n.name: n.op_type for n in fixed.graph.node}
    assert {ops[n] for n in EXPECTED["squeeze-as-reshape"]} == {"Reshape"}
    assert ops["squeeze_runtime_axes"] == "Squeeze" and ops["clip_runtime_bound"] == "Clip"
    kernel = {n.name: [list(a.ints) for a in n.attribute if a.name == "kernel_shape"] for n in fixed.graph.node}
    assert kernel["deconv"] == [[3, 3]] and kernel["conv_runtime_w"] == []
    for b, want in zip((x[:1], x), before, strict=True):
        got = _run(fixed, b)
        for k, (a, c) in enumerate(zip(want, got, strict=True)):
            assert a.shape == c.shape and np.allclose(a, c, rtol=0, atol=1e-5), model.graph.output[k].name
    assert candidates(model)[:len(REWRITES) + 1] == [Candidate((n,)) for n in REWRITES] + [Candidate(tuple(REWRITES))]


def test_the_candidates_come_in_their_order_with_the_opsets_the_model_is_not_at() -> None:
    from onnx_mutants import importer_limits_model

    from pytest_cvdnn.rewrites import Candidate, candidates

    squeeze = ("squeeze-as-reshape",)
    assert candidates(importer_limits_model("squeeze")) == [
        Candidate(squeeze), Candidate(squeeze, simplified=True), Candidate(squeeze, 11), Candidate(squeeze, 10)]
    static = (("x", (None, 3, 8, 8)),)
    relu = importer_limits_model("relu")  # (nothing to rewrite: one rewrite alone is no "all together")
    assert candidates(relu, static) == [Candidate((), simplified=True), Candidate((), 11), Candidate((), 10),
                                        Candidate((), simplified=True, static=static)]
    relu.opset_import[0].domain = "ai.onnx"  # (the default domain's other spelling: still opset 13)
    assert Candidate((), 13) not in candidates(relu)
    relu.opset_import[0].version = 11
    assert [c.opset for c in candidates(relu) if c.opset] == [13, 10]


def test_an_opset_conversion_and_fixed_inputs_are_applied_and_scripted_as_proven(tmp_path: Path) -> None:
    import onnx

    from onnx_mutants import importer_limits_model
    from pytest_cvdnn.rewrites import Candidate, apply, fix_input_shapes, fix_script
    from script_runner import run_script

    model = importer_limits_model("kernel")  # (a Conv without kernel_shape, at opset 11: converted up to 13)
    model.opset_import[0].version = 11
    converted, changed = apply(model, Candidate(("conv-kernel-shape",), 13))
    assert changed == ["(every node: opset 13)", "conv"]
    assert [o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")] == [13]
    x = np.random.default_rng(1).normal(0, 1, (3, 3, 8, 8)).astype(np.float32)
    assert np.allclose(_run(model, x)[0], _run(converted, x)[0], rtol=0, atol=1e-6)
    dynamic = importer_limits_model("relu")
    for dim in dynamic.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.Clear()
        dim.dim_param = "side"
    static = (("x", (None, 3, 8, 8)), ("absent", (1,)))
    fixed, changed = apply(dynamic, Candidate((), static=static))
    assert changed == ["(input x: static size)"]
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, 8, 8]
    assert fix_input_shapes(fixed, static) == []  # (already fixed: nothing changes)
    for candidate, source in ((Candidate(("conv-kernel-shape",), 13), model), (Candidate((), static=static), dynamic)):
        folder = tmp_path / f"fix{candidate.opset}"
        folder.mkdir()
        onnx.save(source, str(folder / "model.onnx"))
        script = fix_script(candidate, str(folder / "model.onnx"))
        assert script.startswith('"""Applies the ONNX rewrite pytest-cvdnn verified: python fix.py [model.onnx]')
        (folder / "fix.py").write_text(script)
        run_script(folder / "fix.py")
        made, _ = apply(source, candidate)
        assert (folder / "fixed.onnx").read_bytes() == made.SerializeToString(), candidate.label


def test_a_rewrite_that_cannot_be_made_says_why_in_one_line() -> None:
    from onnx_mutants import importer_limits_model

    from pytest_cvdnn.rewrites import Candidate, apply

    with pytest.raises(ValueError) as info:  # (opset 13's ReduceMean has no adapter down to 11)
        apply(importer_limits_model("squeeze"), Candidate((), 11))
    head = "onnx.version_converter cannot convert it to opset 11: "
    assert str(info.value).startswith(head) and "No Adapter From Version $13 for ReduceMean" in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) <= len(head) + 200
    model = importer_limits_model("relu")
    with pytest.raises(ValueError) as info:
        apply(model, Candidate((), static=(("x", (None, 3, "8", 8)),)))  # (a size that is not a number)
    assert str(info.value).startswith("the inputs cannot be fixed to the checked sizes: TypeError: 'str' object")


def test_dropping_unused_constants_keeps_those_either_branch_reads() -> None:
    """A constant read only inside an If's else branch (make_node sorts it before then_branch) or only in its
    then branch stays; one read by nothing goes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pytest_cvdnn.rewrites import drop_unused_initializers

    def branch(name: str, const: str) -> Any:
        return helper.make_graph([helper.make_node("Add", ["x", const], [f"{name}_y"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [2])])

    inits = [numpy_helper.from_array(np.full(2, v, np.float32), n) for n, v in (("a", 1), ("b", 2), ("unused", 3))]
    inits.append(numpy_helper.from_array(np.array(True), "cond"))
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "a"), else_branch=branch("else", "b"))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    drop_unused_initializers(model)
    onnx.checker.check_model(model)
    assert sorted(t.name for t in model.graph.initializer) == ["a", "b", "cond"]


def _squeezes() -> tuple[Any, list[str]]:
    """Squeeze/Unsqueeze around dynamic sizes besides the batch: x [N, 1, S, 1] and t [N, S].  Decoys first: a
    Squeeze of S (not known to be 1), one whose Reshape would need two -1s.  Returns (model, nodes rewritten)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("a2", [2]), ("a1", [1]), ("a13", [1, -1]), ("u1", [1]), ("u0", [0]), ("a0", [0]))]
    nodes = [
        helper.make_node("Squeeze", ["x", "a2"], ["bad"], name="squeeze_unknown_size"),
        helper.make_node("Transpose", ["x"], ["xt"], name="to_nsa1", perm=[0, 2, 1, 3]),  # [N, S, 1, 1]
        helper.make_node("Concat", ["xt", "xt"], ["two"], name="two_dynamic", axis=1),  # [N, 2S, 1, 1]
        helper.make_node("Mul", ["xt", "xt"], ["sq"], name="square"),
        helper.make_node("Squeeze", ["x", "a1"], ["y1"], name=""),  # (nameless: [N, S, 1] -> Reshape [0, -1, 1])
        helper.make_node("Squeeze", ["x", "a13"], ["y2"], name="squeeze_both"),  # [N, S] -> [0, -1]
        helper.make_node("Unsqueeze", ["t", "u1"], ["y3"], name="unsqueeze_mid"),  # [N, 1, S] -> [0, 1, -1]
        helper.make_node("Unsqueeze", ["t", "u0"], ["y4"], name="unsqueeze_front"),  # [1, N, S] -> [1, -1, -1]: left
        helper.make_node("ReduceMax", ["t"], ["total"], name="total", keepdims=0, axes=[0, 1]),  # []
        helper.make_node("Unsqueeze", ["total", "a0"], ["one"], name="unsqueeze_scalar"),  # [1]
        helper.make_node("Squeeze", ["one", "a0"], ["y5"], name="squeeze_rank1"),  # [1] -> []
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "S", 1]),
              helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", "S"])]
    outs = {"bad": ["N", 1, 1], "two": ["N", "T", 1, 1], "sq": ["N", "S", 1, 1], "y1": ["N", "S", 1],
            "y2": ["N", "S"], "y3": ["N", 1, "S"], "y4": [1, "N", "S"], "y5": []}
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outs.items()]
    model = helper.make_model(helper.make_graph(nodes, "squeezes", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model, ["", "squeeze_both", "unsqueeze_mid", "unsqueeze_scalar", "squeeze_rank1"]


def test_squeezes_around_dynamic_sizes_become_reshapes_that_compute_the_same() -> None:
    """0 keeps the batch in place, -1 takes the one other unknown size; two unknowns cannot be one Reshape (left);
    a size not known to be 1 is not squeezed (left); rank 1 -> scalar is rewritten too."""
    import onnx
    import onnxruntime as ort

    from pytest_cvdnn.rewrites import squeeze_as_reshape

    model, expected = _squeezes()
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    assert squeeze_as_reshape(fixed) == expected
    shapes = {t.name: list(onnx.numpy_helper.to_array(t)) for t in fixed.graph.initializer if t.name.endswith("__shape")}
    assert shapes == {"y1__shape": [0, -1, 1], "squeeze_both__shape": [0, -1], "unsqueeze_mid__shape": [0, 1, -1],
                      "unsqueeze_scalar__shape": [1], "squeeze_rank1__shape": []}
    for m in (model, fixed):  # (the decoy squeezes S, which is not 1 here: onnxruntime refuses to run it)
        keep = [n for n in m.graph.node if n.name != "squeeze_unknown_size"]
        del m.graph.node[:]
        m.graph.node.extend(keep)
        m.graph.output.remove(next(o for o in m.graph.output if o.name == "bad"))
    rng = np.random.default_rng(0)
    for n, s in ((1, 5), (3, 7)):
        feeds = {"x": rng.normal(size=(n, 1, s, 1)).astype(np.float32), "t": rng.normal(size=(n, s)).astype(np.float32)}
        outputs = [o.name for o in model.graph.output]
        want, got = (ort.InferenceSession(m.SerializeToString()).run(outputs, feeds) for m in (model, fixed))
        for name, a, b in zip(outputs, want, got, strict=True):
            assert a.shape == b.shape and np.array_equal(a, b), name


@pytest.mark.parametrize("axes, rewritten", [([3], True), ([-4], True), ([4], False), ([-5], False), (0, True)])
def test_squeeze_axes_at_the_edges_of_the_rank(axes: Any, rewritten: bool) -> None:
    """Axes -rank and rank-1 are the last valid ones; rank and -rank-1 leave the node alone (an invalid graph is
    not ours to fix); a scalar axes constant counts as one axis."""
    from onnx import TensorProto, helper, numpy_helper

    from pytest_cvdnn.rewrites import squeeze_as_reshape

    node = helper.make_node("Unsqueeze" if axes in ([-5], [4]) else "Squeeze", ["x", "axes"], ["y"], name="n")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 1] if axes != [-4] else [1, 2, 3, 4])
    graph = helper.make_graph([node], "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    if axes in ([-5], [4]):  # (Unsqueeze: rank 5 after it; -6 and 5 are out)
        model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([a - 1 if a < 0 else a + 1
                                                                              for a in axes], np.int64), "axes"))
    assert squeeze_as_reshape(model) == (["n"] if rewritten else [])


def test_clip_bounds_that_are_not_finite_are_left_and_the_nodes_keep_their_names() -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pytest_cvdnn.rewrites import clip_as_hardsigmoid

    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
             (("ninf", -np.inf), ("six", 6.0), ("lo", -1.0), ("hi", 2.0))]
    nodes = [helper.make_node("Clip", ["x", "ninf", "six"], ["a"], name="clip_inf"),
             helper.make_node("Clip", ["x", "lo", "hi"], ["b"], name=""),
             helper.make_node("Clip", ["x", "lo", "hi"], ["c"], name="band")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in "xabc"]
    model = helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    assert clip_as_hardsigmoid(model) == ["", "band"]
    onnx.checker.check_model(model)
    names = [(n.op_type, n.name) for n in model.graph.node]
    assert names == [("Clip", "clip_inf"), ("HardSigmoid", "b__hardsigmoid"), ("Mul", "b__scale"), ("Add", ""),
                     ("HardSigmoid", "band__hardsigmoid"), ("Mul", "band__scale"), ("Add", "band")]


def test_conversion_fixed_inputs_and_the_simplifier_each_say_what_they_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from onnx import helper
    from onnx_mutants import importer_limits_model

    from pytest_cvdnn import rewrites
    from pytest_cvdnn.rewrites import Candidate, apply, candidates

    model = importer_limits_model("relu")
    model.opset_import[0].version = 11
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.Clear()
        dim.dim_param = "side"
    static = (("x", (None, 3, 8, 8)),)
    _, changed = apply(model, Candidate((), 13, simplified=True, static=static))
    assert changed[:2] == ["(every node: opset 13)", "(input x: static size)"]
    # a rewrite that raises on this graph does not stop the ones after it; two that apply are tried together
    gauntlet = _gauntlet()

    def broken(m: Any) -> list[str]:
        raise RuntimeError("cannot read this graph")

    monkeypatch.setattr(rewrites, "REWRITES", {"broken": broken, "sort-slice-axes": rewrites.sort_slice_axes,
                                               "conv-kernel-shape": rewrites.conv_kernel_shape})
    both = ("sort-slice-axes", "conv-kernel-shape")
    assert candidates(gauntlet)[:3] == [Candidate(both[:1]), Candidate(both[1:]), Candidate(both)]
    del gauntlet.opset_import[:]  # (no default-domain opset: every conversion is a candidate)
    gauntlet.opset_import.append(helper.make_opsetid("com.example", 1))
    assert [c.opset for c in candidates(gauntlet) if c.opset] == [13, 11, 10]

