"""How each input is fed (feeds.py, inputs.load_named_inputs, graph.index_ranges): dtype, batch axis, values
(quick tier: numpy and onnx only)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from pytest_cvdnn.errors import CvdnnError
from pytest_cvdnn.feeds import (Feed, FeedDecl, batch_axes, check_declared, feed_values, from_graph,
                                output_batch_axes, parse_feeds, to_graph)


def test_declarations_parse_constants_ranges_and_batch_axes() -> None:
    parsed = dict(parse_feeds("sr=16000; state:batch_axis=1,range=-2..3 ;tokens:range=0..999;flag:batch_axis=none"))
    assert parsed["sr"] == FeedDecl(constant=16000.0)
    assert parsed["state"] == FeedDecl(low=-2.0, high=3.0, batch_axis=1)
    assert parsed["tokens"] == FeedDecl(low=0.0, high=999.0)
    assert parsed["flag"] == FeedDecl(batch_axis=None)
    assert dict(parse_feeds({"sr": 8000, "state": {"batch_axis": 1, "range": (-1, 1)}})) == {
        "sr": FeedDecl(constant=8000.0), "state": FeedDecl(low=-1.0, high=1.0, batch_axis=1)}
    assert parse_feeds("") == ()


_FORMS = ("write NAME=VALUE (a constant) or NAME:key=value,... with range=LOW..HIGH, batch_axis=K or batch_axis=none, "
          "value=X")


@pytest.mark.parametrize("bad, said", [
    ("sr", f"'sr': {_FORMS}"), (":x=1", f"':x=1': {_FORMS}"), ("a:", f"'a:': {_FORMS}"),
    ("sr=x", "sr: 'x' is not a number"), ("s:value=abc", "s: 'abc' is not a number"),
    ("state:range=a..2", "state range: 'a' is not a number"), ("state:range=1..b", "state range: 'b' is not a number"),
    ("state:range=3..1", "'state:range=3..1': the range needs LOW < HIGH"),
    ("state:range=3..3", "'state:range=3..3': the range needs LOW < HIGH"),
    ("state:batch_axis=-1", "'state:batch_axis=-1': batch_axis is an axis number or none"),
    ("state:speed=2", "'state:speed=2': unknown key 'speed' (range, value, batch_axis)"),
    ("sr=1e12", "sr: '1e12' must be finite and within ±1e+09"), ("sr=nan", "sr: 'nan' must be finite and within ±1e+09"),
    ("state:range", "'state:range': 'range' is not key=value"),
])
def test_a_bad_declaration_says_what_is_wrong(bad: str, said: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_feeds(bad)
    assert str(info.value) == said


def test_a_feed_describes_its_dtype_values_batch_axis_and_why() -> None:
    assert Feed("a", "int64", None, 16000, 16000, 16000.0, "declared").describe() == \
        "'a' int64 = 16000 (no batch axis; declared)"
    assert Feed("b", "float32", 1, -1, 1).describe() == "'b' float32 in [-1, 1] (batch axis 1)"
    assert dict(parse_feeds("a:range=-2..3,batch_axis=2;b:value=4;c:batch_axis=NONE")) == {
        "a": FeedDecl(low=-2.0, high=3.0, batch_axis=2), "b": FeedDecl(constant=4.0),
        "c": FeedDecl(batch_axis=None)}


def test_the_batch_axis_is_where_the_shared_dynamic_dimension_sits() -> None:
    # a voice-activity model: audio (N, 576), a recurrent state (2, N, 128), a scalar sample rate
    assert batch_axes([(None, 576), (2, None, 128), ()], [("N", None), (None, "N", None), ()]) == [0, 1, None]
    # the symbol most inputs share wins over one another input has alone
    assert batch_axes([(None, None), (None, 3)], [("batch", "time"), ("batch", None)]) == [0, 0]
    assert batch_axes([(None, None), (3, None)], [("time", "batch"), (None, "batch")]) == [1, 1]
    # one input, or no names: axis 0 (a scalar has none)
    assert batch_axes([(None, 3, 8, 8)], [("N", None, None, None)]) == [0]
    assert batch_axes([(None, 4), ()], [(None, None), ()]) == [0, None]
    # outputs: where the inputs' symbol sits, else 0
    assert output_batch_axes([(None, 8), (2, None, 8), (3,)], [("N", None), (None, "N", None), (None,)], "N") == [0, 1, 0]


def test_arrays_go_to_the_graph_and_outputs_come_back_sample_major() -> None:
    state = Feed("state", "float32", 1, -1, 1)
    x = np.arange(3 * 2 * 4, dtype=np.float64).reshape(3, 2, 4)  # 3 samples of (2, 4)
    fed = to_graph(x, state)
    assert fed.shape == (2, 3, 4) and fed.dtype == np.float32 and fed.flags.c_contiguous
    assert np.array_equal(fed[:, 1], x[1])
    assert np.array_equal(from_graph(fed, 1), x)
    sr = Feed("sr", "int64", None, 16000, 16000, 16000.0)
    assert to_graph(np.full((3,), 16000.0), sr).shape == () and to_graph(np.full((3,), 16000.0), sr).dtype == np.int64
    assert from_graph(np.ones((2, 5)), 0).shape == (2, 5)


def test_values_follow_the_dtype_the_range_and_the_batch_axis() -> None:
    rng = np.random.default_rng(0)
    tokens = feed_values(Feed("tokens", "int32", 0, 0, 99), (16,), 50, rng)
    assert tokens.dtype == np.int32 and tokens.shape == (50, 16)
    assert tokens.min() == 0 and tokens.max() == 99  # both ends reachable, nothing beyond
    flags = feed_values(Feed("mask", "bool", 0, 0, 1), (8,), 20, rng)
    assert flags.dtype == np.bool_ and flags.any() and not flags.all()
    sr = feed_values(Feed("sr", "int64", None, 16000, 16000, 16000.0), (), 4, rng)
    assert sr.shape == (4,) and (sr == 16000).all()
    rate = feed_values(Feed("k", "float32", None, -1, 1), (3,), 4, rng)  # no batch axis: one draw for all
    assert rate.shape == (4, 3) and (rate == rate[0]).all() and rate.std() > 0
    state = feed_values(Feed("state", "float32", 1, -2, 3), (2, 8), 4, rng)
    assert state.dtype == np.float32 and state.min() >= -2 and state.max() < 3 and not (state == state[0]).all()
    assert np.array_equal(feed_values(Feed("x", "float32", 0, -1, 1), (4,), 2, np.random.default_rng(1)),
                          np.random.default_rng(1).uniform(-1, 1, (2, 4)).astype(np.float32))


def test_a_declared_input_the_model_lacks_is_named_with_the_closest() -> None:
    check_declared((("state", FeedDecl()),), ["x", "state"], "--cvdnn-feed")
    with pytest.raises(CvdnnError, match=r"--cvdnn-feed: the model has no input 'stat' \(did you mean 'state'\?\)"):
        check_declared((("stat", FeedDecl()),), ["x", "state"], "--cvdnn-feed")


def _gather_graph(path: Path, wrapped: bool) -> Path:
    """tokens (N, 6) int32 -> [Keras 3's where(x < 0, x + rows, x)] -> Gather(table (50, 4)) -> ReduceMean."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32), "table")
    zero, rows = (numpy_helper.from_array(np.array(v, np.int32), n) for v, n in ((0, "zero"), (50, "rows")))
    nodes = [helper.make_node("ReduceMean", ["emb"], ["y"], axes=[1], keepdims=0)]
    if wrapped:
        nodes[:0] = [helper.make_node("Less", ["tokens", "zero"], ["neg"]),
                     helper.make_node("Add", ["tokens", "rows"], ["wrapped"]),
                     helper.make_node("Where", ["neg", "wrapped", "tokens"], ["index"]),
                     helper.make_node("Gather", ["table", "index"], ["emb"])]
    else:
        nodes[:0] = [helper.make_node("Cast", ["tokens"], ["t64"], to=TensorProto.INT64),
                     helper.make_node("Gather", ["table", "t64"], ["emb"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("tokens", TensorProto.INT32, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [table, zero, rows])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("wrapped", [False, True], ids=["cast", "keras-where"])
def test_integer_inputs_that_index_a_table_get_its_rows(tmp_path: Path, wrapped: bool) -> None:
    import onnx

    from pytest_cvdnn.graph import index_ranges

    graph = onnx.load(str(_gather_graph(tmp_path / "g.onnx", wrapped))).graph
    assert index_ranges(graph) == {"tokens": [0, 49]}
    del graph.node[-2]  # (the Gather gone: no table, no range)
    assert index_ranges(graph) == {}


def test_named_arrays_are_read_by_input_name_and_checked(tmp_path: Path) -> None:
    from pytest_cvdnn.inputs import load_named_inputs

    feeds = [Feed("x", "float32", 0, -1, 1), Feed("state", "float32", 1, -1, 1), Feed("sr", "int64", None, 0, 0)]
    shapes, layouts = [[1, 16], [1, 2, 8], [1]], ["nchw"] * 3
    rng = np.random.default_rng(0)
    x, state = rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=(2, 3, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, state=state, sr=np.array(16000))
    got = load_named_inputs(tmp_path / "in.npz", feeds, shapes, layouts)
    assert [a.shape for a in got] == [(3, 16), (3, 2, 8), (3,)]
    assert np.array_equal(got[1][2], state[:, 2]) and got[2].dtype == np.int64 and (got[2] == 16000).all()
    for arrays, why in (({"x": x, "state": state}, "no array for input\\(s\\) 'sr'"),
                        ({"x": x, "state": state, "sr": 1, "extra": x}, "'extra' name no input"),
                        ({"x": x[:2], "state": state, "sr": 1}, "different numbers of samples"),
                        ({"x": x, "state": state[:, :, :4], "sr": 1}, "array 'state' has shape \\(2, 3, 4\\)"),
                        ({"x": x, "state": state, "sr": 0.5}, "'sr' holds fractions")):
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(CvdnnError, match=why):
            load_named_inputs(tmp_path / "bad.npz", feeds, shapes, layouts)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CvdnnError, match="cannot be read as an .npz"):
        load_named_inputs(tmp_path / "junk.npz", feeds, shapes, layouts)


def test_a_folder_by_input_name_stacks_samples_on_each_batch_axis(tmp_path: Path) -> None:
    """NAME/ holds one sample per file, stacked on the input's own batch axis; NAME.npy the whole array; a tensor
    name's ':' is written '_' in the file name; a folder for an input without a batch axis is refused."""
    from pytest_cvdnn.inputs import load_named_inputs, named_entries

    feeds = [Feed("serving_default_x:0", "float32", 0, -1, 1), Feed("state", "float32", 1, -1, 1),
             Feed("sr", "int64", None, 0, 0)]
    (tmp_path / "serving_default_x_0").mkdir()
    (tmp_path / "state").mkdir()
    for k in range(2):
        np.save(tmp_path / "serving_default_x_0" / f"{k}.npy", np.full(3, k, np.float32))
        np.save(tmp_path / "state" / f"{k}.npy", np.full((2, 3), 10 + k, np.float32))
    np.save(tmp_path / "sr.npy", np.array(8000))
    assert set(named_entries(tmp_path, [f.name for f in feeds])) == {"serving_default_x:0", "state", "sr"}
    x, state, sr = load_named_inputs(tmp_path, feeds, [(1, 3), (1, 2, 3), (1,)], ["", "", ""])
    assert x[:, 0].tolist() == [0, 1] and state.shape == (2, 2, 3) and state[:, 0, 0].tolist() == [10, 11]
    assert (state[1] == 11).all()  # (sample 1 is the second file: stacked on axis 1, then made sample-major)
    assert sr.tolist() == [8000, 8000] and sr.dtype == np.int64
    (tmp_path / "sr.npy").unlink()
    (tmp_path / "sr").mkdir()
    np.save(tmp_path / "sr" / "0.npy", np.array(8000))
    with pytest.raises(CvdnnError, match=r"input 'sr' has no batch axis, so its folder sr/ cannot hold one sample"):
        load_named_inputs(tmp_path, feeds, [(1, 3), (1, 2, 3), (1,)], ["", "", ""])


def test_a_size_0_input_is_refused_with_a_fix_that_works_when_pasted(tmp_path: Path) -> None:
    """A 0 in an input's shape is not dynamic (onnxruntime holds the input to an empty tensor): refused, and the
    printed fix — mark the axis dynamic in a copy — run as printed makes a file onnxruntime runs with a batch of 2."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from pytest_cvdnn.sanity import check_structure

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [0, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [0, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with pytest.raises(CvdnnError) as info:
        check_structure(tmp_path / "z.onnx", model)
    assert "declares the size 0 at axis 0 (shape (0, 3))" in str(info.value)
    fix = info.value.fix
    assert fix.startswith("re-export the model with a named (dynamic) size for that axis, or mark it dynamic in a "
                          "copy: "), fix
    code = fix.split("copy: ", 1)[1]
    exec(code.replace("'fixed.onnx'", repr(str(tmp_path / "fixed.onnx"))), {"onnx": onnx, "model": model})
    session = ort.InferenceSession(str(tmp_path / "fixed.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": -np.ones((2, 3), np.float32)})[0].tolist() == [[0.0] * 3] * 2
    check_structure(tmp_path / "fixed.onnx", onnx.load(str(tmp_path / "fixed.onnx")))  # (accepted now)
