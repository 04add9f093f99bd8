"""ONNX-level remedies (issue 15): rewrites proven with onnxruntime and the target's cv2.dnn, shipped as a file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from onnx_mutants import as_constant_nodes, importer_limits_model  # noqa: E402

#: the rewrite each model needs on OpenCV 4.5.5, and the node it changes
NEEDS = {"slice": ("sort-slice-axes", "crop"), "squeeze": ("squeeze-as-reshape", "squeeze"),
         "kernel": ("conv-kernel-shape", "conv"), "flatten": ("onnxslim", "gather"),
         "clip": ("clip-as-hardsigmoid", "relu6"), "reduce": ("convert to opset 13", "mean"),
         "clip-pytorch": ("clip-as-hardsigmoid", "relu6")}  # (bounds in Constant nodes, as PyTorch exports)
#: the nodes each rewrite names (onnxslim: those it folds away)
CHANGED = {"flatten": "'shape', 'gather', 'to_int32'", "reduce": "'(every node: opset 13)'"}

_NO_TF = """
import json, sys
def pytest_unconfigure(config):
    open("modules.json", "w").write(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                                                      ("tensorflow", "keras", "tf2onnx"))))
"""


@pytest.mark.zoo  # (the remedy search of five graphs on OpenCV 4.5.5: ~130 s)
def test_onnx_models_that_4_5_5_rejects_get_a_verified_fixed_file(run_cvdnn: Callable[..., Any],
                                                                   pytester: pytest.Pytester,
                                                                   opencv_4_5_5: Path) -> None:
    """A Slice with axes [0, 2, 3, 1], Squeeze axes as an input, a Conv without kernel_shape and a run-time Flatten
    shape (Shape -> Gather, VGG16): OpenCV 4.5.5
    cannot import them (the load item said only "try another --cvdnn-opset", which an ONNX has none of).  Now
    the load item names the rewrite that makes each load and match at batch 1 and 4, with fixed.onnx and the
    fix.py that makes it; no TensorFlow is imported.  The fixed files pass the gate on 4.5.5, and fix.py writes
    them byte for byte."""
    import onnx

    for kind in NEEDS:
        made = (as_constant_nodes(importer_limits_model(kind.split("-")[0])) if kind.endswith("-pytorch")
                else importer_limits_model(kind))
        onnx.save(made, str(pytester.path / f"{kind}.onnx"))
    pytester.makeconftest(_NO_TF)
    run = run_cvdnn(*(f"--cvdnn-model={kind}.onnx" for kind in NEEDS), "--cvdnn-target=opencv==4.5.5",
                    "--cvdnn-repro=rep", "-k", "load or ops", cache=pytester.path / "cache")
    assert run.ret == 1, run.text
    assert json.loads((pytester.path / "modules.json").read_text()) == []
    fixed = []
    for n, (kind, (rewrite, node)) in enumerate(NEEDS.items()):
        load = run.checks(n)["load[opencv-4.5.5]"]
        assert load["outcome"] == "failed", kind
        assert (f"remedy: the ONNX rewrite '{rewrite}' on node(s) {CHANGED.get(kind, repr(node))} loads; matches "
                "onnxruntime at batch 1 and 4") in load["message"], load["message"]
        assert "Fix: ship " in load["message"] and "--cvdnn-opset" not in load["message"]
        assert run.checks(n)["load"]["outcome"] == "passed"  # (this process's OpenCV 5 takes them)
        diagnosis = run.report["models"][n]["diagnosis"]  # (it was empty: taken from the ops item, no node data)
        assert diagnosis["failing_stage"] == "ops[opencv-4.5.5]" and diagnosis["node"] == node, diagnosis
        assert diagnosis["fixed_onnx"] == load["data"]["fixed_onnx"] and diagnosis["repro"], diagnosis
        path = Path(load["data"]["fixed_onnx"])
        path = path if path.is_absolute() else pytester.path / path
        made = subprocess.run([sys.executable, str(path.with_name("fix.py"))], capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        fixed.append(path)
    again = run_cvdnn(*(f"--cvdnn-model={p}" for p in fixed), "--cvdnn-target=opencv==4.5.5", "-k", "4.5.5",
                      cache=pytester.path / "cache")
    assert again.ret == 0, again.text
    for n in range(len(fixed)):
        assert again.checks(n)["load[opencv-4.5.5]"]["outcome"] == "passed"
        assert again.checks(n)["parity[onnxruntime-cv2dnn@opencv-4.5.5]"]["outcome"] == "passed"


@pytest.mark.zoo  # (TensorFlow conversions: the heavier tier, which CI runs too)
def test_a_keras_cropping2d_is_fixed_without_converting_again(run_cvdnn: Callable[..., Any], pytester: pytest.Pytester,
                                                              opencv_4_5_5: Path) -> None:
    """tf2onnx writes an NHWC Cropping2D as a Slice with axes [0, 2, 3, 1]; 4.5.5 rejects it and the plugin said
    no variant loads.  The ONNX rewrite matches Keras at batch 1 and 4, and the eight re-conversions of the
    Keras-level search are not needed."""
    pytester.makepyfile(cropper="""
        def make():
            import keras

            keras.utils.set_random_seed(0)
            inp = keras.Input((16, 16, 3))
            x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
            x = keras.layers.Cropping2D(((1, 2), (2, 1)))(x)
            return keras.Model(inp, keras.layers.Conv2D(4, 3, padding="same")(x))
    """)
    run = run_cvdnn("--cvdnn-model=cropper:make", "--cvdnn-target=opencv==4.5.5", "-k", "load",
                    cache=pytester.path / "cache")
    load = run.checks()["load[opencv-4.5.5]"]
    assert load["outcome"] == "failed", run.text
    assert "(op Slice) cannot be imported: axes[i - 1] == axes[i] - 1" in load["message"]
    assert "remedy: the ONNX rewrite 'sort-slice-axes'" in load["message"]
    assert "matches keras at batch 1 and 4" in load["message"]
    assert load["data"]["remedies"] == []  # the Keras-level search did not run


def test_a_rewrite_that_computes_something_else_is_not_offered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proof can fail: a 'rewrite' that sorts the Slice axes without reordering starts and ends loads in
    cv2.dnn but crops elsewhere; onnxruntime says so and it is not offered (nor written)."""
    import onnx

    from pytest_cvdnn import rewrites
    from pytest_cvdnn.cache import Cache
    from pytest_cvdnn.deployment import build_deployment
    from pytest_cvdnn.fixes import onnx_remedies
    from pytest_cvdnn.settings import ModelSettings

    def axes_only(model: Any) -> list[str]:
        import numpy as np
        from onnx import numpy_helper

        axes = next(t for t in model.graph.initializer if t.name == "axes")
        axes.CopyFrom(numpy_helper.from_array(np.array([0, 1, 2, 3], np.int64), "axes"))
        return ["crop"]

    monkeypatch.setattr(rewrites, "REWRITES", {"axes-only": axes_only})
    onnx.save(importer_limits_model("slice"), str(tmp_path / "slice.onnx"))
    dep = build_deployment(ModelSettings(model=str(tmp_path / "slice.onnx")), Cache(tmp_path / "cache"))
    results = onnx_remedies(dep, tmp_path / "fix")
    assert [r.outcome for r in results][0] == "not equivalent", results
    assert "differs by" in results[0].detail or "shape" in results[0].detail
    assert not any(r.works for r in results) and not (tmp_path / "fix").exists()


def test_the_op_cache_names_each_models_own_node(run_cvdnn: Callable[..., Any], pytester: pytest.Pytester,
                                                 opencv_4_5_5: Path) -> None:
    """The op probes are cached per OpenCV and op pattern; the cache kept the first model's error text, so a
    second model with the same pattern was told about the first one's node.  Each now reads its own."""
    import onnx

    first = importer_limits_model("slice")
    second = importer_limits_model("slice", seed=1)
    for node in second.graph.node:
        node.name = f"{node.name}_b"
        node.output[:] = [f"{o}_b" for o in node.output]
        node.input[:] = [f"{i}_b" if i == "c" else i for i in node.input]
    second.graph.output[0].name = "y_b"
    onnx.save(first, str(pytester.path / "first.onnx"))
    onnx.save(second, str(pytester.path / "second.onnx"))
    cache = pytester.path / "cache"
    for n, model in enumerate(("first", "second")):  # one after the other: the second reads the cache
        run = run_cvdnn(f"--cvdnn-model={model}.onnx", "--cvdnn-target=opencv==4.5.5", "-k", "ops", cache=cache)
        message = run.checks()["ops[opencv-4.5.5]"]["message"]
        own, other = ("crop", "crop_b") if n == 0 else ("crop_b", "crop")
        assert f"first '{own}'" in message and f"node '{own}' (op Slice)" in message, message
        assert f"'{other}'" not in message and "'y'" not in message and "'y_b'" not in message, message


@pytest.mark.zoo  # (TensorFlow conversions: the heavier tier, which CI runs too)
def test_every_keras_variant_names_layers_the_model_has(run_cvdnn: Callable[..., Any], pytester: pytest.Pytester,
                                                        opencv_4_5_5: Path) -> None:
    """The TensorFlow helper built a factory's model again for each variant in one process, so the variants'
    nodes came from layers named 'global_average_pooling2d_3' that the model does not have.  Each job now
    starts a fresh naming scope: every variant that fails to load names the model's own layer."""
    pytester.makepyfile(pooled_auto="""
        def make():
            import keras

            keras.utils.set_random_seed(0)
            inp = keras.Input((16, 16, 3))
            x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
            x = keras.layers.GlobalAveragePooling2D()(x)
            return keras.Model(inp, keras.layers.Dense(5, activation="softmax")(x))
    """)
    run = run_cvdnn("--cvdnn-model=pooled_auto:make", "--cvdnn-target=opencv==4.5.5", "--cvdnn-fix",
                    "-k", "remedies and 4.5.5", cache=pytester.path / "cache")
    remedies = run.checks()["remedies[opencv-4.5.5]"]["data"]["remedies"]
    failed = [r for r in remedies if r["outcome"] == "load failed"]
    assert len(failed) == 4 and len(remedies) == 8, remedies  # opsets 17 and 13 stop at the Squeeze
    assert {r["keras_layer"] for r in failed} == {"global_average_pooling2d"}, failed
