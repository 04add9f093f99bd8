"""Decision points a wrong verdict hangs on, each pinned by a test that fails when the decision is made wrong
(tests/decision_mutations.py names the mutations these tests kill; the zoo tier applies each one and checks).
Quick tier: onnx, onnxruntime and cv2 only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import mvn_onnx


def test_rewrite_equivalence_judges_tiny_outputs_on_their_own_scale() -> None:
    """Outputs of 1e-9 that a rewrite doubles differ (relative to their own scale); a floor of 1 would hide it."""
    from pytest_cvdnn.verdicts import rewrite_difference as _differs

    tiny = np.full((2, 4), 1e-9, np.float32)
    assert _differs("output", [("y", tiny, tiny)]) is None
    found = _differs("output", [("y", tiny, 2 * tiny)])
    assert found is not None and "output 'y' differs" in found
    assert _differs("output", [("y", np.zeros(3, np.float32), np.zeros(3, np.float32))]) is None


def test_a_link_inside_a_bundle_is_refused_even_to_a_file_of_the_bundle(tmp_path: Path) -> None:
    """A bundle holds regular files only: a symbolic link is refused wherever it points (inside the bundle too)."""
    from pytest_cvdnn.errors import CvdnnError
    from pytest_cvdnn.manifest import bundle_file

    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "inputs.npz").write_bytes(b"x")
    (bundle / "model.onnx").symlink_to(bundle / "inputs.npz")
    assert bundle_file(bundle, "inputs.npz") == bundle / "inputs.npz"
    with pytest.raises(CvdnnError, match="symbolic link"):
        bundle_file(bundle, "model.onnx")


def test_a_child_that_cannot_load_says_load_and_one_that_cannot_run_says_forward(tmp_path: Path) -> None:
    """The stage a target's child process failed in decides what is blamed (the importer or the runtime)."""
    from onnx import TensorProto, helper

    import onnx

    from pytest_cvdnn.runners.isolated import LOCAL, ChildError, RemoteCv2Runner, child_call

    unloadable = mvn_onnx(tmp_path / "mvn.onnx")
    resp, _ = child_call(LOCAL, unloadable, "auto", ["x"], [], [])
    if resp.get("ok"):
        pytest.skip("this OpenCV imports MeanVarianceNormalization")
    assert resp["stage"] == "load", resp
    # a graph that loads and fails at run time: a Reshape to a size the input cannot have
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [3, 7])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 7])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "bad_run.onnx"))
    runner = RemoteCv2Runner(tmp_path / "bad_run.onnx", ["x"], ["y"], "auto", LOCAL)
    with pytest.raises(ChildError) as info:
        runner.infer([np.ones((1, 4), np.float32)])
    assert info.value.stage == "forward", info.value


def test_a_rewrite_that_changes_a_tensor_behind_a_flat_output_is_not_offered(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The remedy proof compares the rewritten nodes' own tensors, not only the final outputs: a Clip whose bound
    a (faulty) rewrite moves from 0.5 to 0.7, in a graph whose output is 0 whatever the input, is "not equivalent"
    (the outputs alone would offer it, and write fixed.onnx).  The faulty rewrite is planted: none of ours is."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnx_mutants import importer_limits_model
    from pytest_cvdnn import rewrites
    from pytest_cvdnn.cache import Cache
    from pytest_cvdnn.deployment import build_deployment
    from pytest_cvdnn.fixes import _prove
    from pytest_cvdnn.settings import ModelSettings

    model = importer_limits_model("clip")
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    model.graph.node.append(helper.make_node("Mul", ["y", "zero"], ["flat"], name="flatten_out"))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 4, 8, 8]))
    onnx.save(model, str(tmp_path / "model.onnx"))

    def wrong_bound(m: object) -> list[str]:
        for t in m.graph.initializer:  # type: ignore[attr-defined]
            if t.name == "hi":
                t.CopyFrom(numpy_helper.from_array(np.array(0.7, np.float32), "hi"))
        return ["relu6"]

    monkeypatch.setitem(rewrites.REWRITES, "wrong-bound", wrong_bound)
    dep = build_deployment(ModelSettings(model=str(tmp_path / "model.onnx")), Cache(tmp_path / "cache"))
    result, _ = _prove(dep, onnx.load(str(tmp_path / "model.onnx")), rewrites.Candidate(("wrong-bound",)),
                       tmp_path / "fixed.onnx")
    assert result.outcome == "not equivalent" and "tensor 'y' differs" in result.detail, result
    assert not result.works
