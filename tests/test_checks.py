"""`pytest --cvdnn-model=...` end to end: real Keras, tf2onnx, onnxruntime and cv2.dnn in subprocesses."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from conftest import ROOT, Run

ALL_CHECKS = [
    "convert", "ops", "load", "input_spec", "preprocessing", "output_spec", "parity[keras-onnxruntime]",
    "parity[onnxruntime-cv2dnn]", "parity[keras-cv2dnn]", "batch", "determinism",
]


def test_all_checks_pass_on_a_correct_model(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                            copy_model: Callable[..., Path]) -> None:
    model = copy_model(models["cnn"])
    run = run_cvdnn(f"--cvdnn-model={model.name}", "-v")
    assert run.ret == 0, run.text
    for name in ALL_CHECKS:
        assert f"small_cnn.keras::{name} {'SKIPPED' if name == 'preprocessing' else 'PASSED'}" in run.text
    checks = run.checks()
    assert sorted(checks) == sorted(ALL_CHECKS)
    assert all(c["outcome"] == "passed" for n, c in checks.items() if n != "preprocessing")
    # a plain CNN (no keras.applications name, no Rescaling): its preprocessing cannot be derived, so the
    # blob cannot be verified: not a pass, and the parity items say what the inputs assumed
    assert checks["preprocessing"]["outcome"] == "skipped"
    assert "cannot verify the blob" in checks["preprocessing"]["message"]
    assert "the checks assumed raw 0..255 RGB pixels" in checks["preprocessing"]["message"]
    assert "ASSUMED raw 0..255 pixels" in checks["parity[keras-cv2dnn]"]["message"]
    # the load item reports what cv2.dnn sees
    assert "inputs: image (?, 3, 32, 32) NCHW float32" in checks["load"]["message"]
    assert "outputs: probs (1, 10) float32" in checks["load"]["message"]
    # softmax outputs are also compared on their logits, with top-1 agreement
    parity = run.report["models"][0]["parity"]["keras-cv2dnn"]
    assert [o["name"] for o in parity["outputs"]] == ["probs", "probs (logits)"]
    assert parity["outputs"][0]["topk"][0]["k"] == 1
    assert parity["max_abs"] < 1e-4
    # the terminal summary: one line per model and per pair, with the numbers
    assert "cvdnn deployment summary" in run.text
    assert "small_cnn.keras: 10 passed, 1 skipped (opencv" in run.text
    assert "ok   keras-cv2dnn" in run.text and "max|Δ|" in run.text
    # the code to ship, in the summary without -rA (issue 17: it was only in the -rA/-rP sections)
    deploy = [ln for ln in run.text.splitlines() if ln.startswith("  deploy   ")]
    assert deploy and "cv2.dnn.blobFromImage" in deploy[0], deploy
    assert checks["input_spec"]["data"]["code"].splitlines()[0] in deploy[0], deploy


def test_json_report_schema(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                            copy_model: Callable[..., Path]) -> None:
    model = copy_model(models["cnn"])
    run = run_cvdnn(f"--cvdnn-model={model.name}", "-k", "convert or parity")
    assert run.ret == 0, run.text
    report = run.report
    assert report["schema"] == 1 and report["tool"] == "pytest-cvdnn"
    entry = report["models"][0]
    env = entry["environment"]
    for key in ("opencv", "onnxruntime", "onnx", "tensorflow", "keras", "tf2onnx", "numpy", "opset", "layout", "engine"):
        assert key in env
    assert env["opset"] == 13 and env["layout"] == "nchw"
    assert set(entry["checks"]) == {"convert", "parity[keras-onnxruntime]", "parity[onnxruntime-cv2dnn]",
                                    "parity[keras-cv2dnn]"}
    stats = entry["parity"]["keras-onnxruntime"]
    for key in ("max_abs", "max_rel", "min_cosine", "mismatches", "atol", "rtol", "outputs"):
        assert key in stats
    out = stats["outputs"][0]
    for key in ("mean_abs", "median_abs", "mismatch_pct", "worst", "cosine", "required_atol"):
        assert key in out
    assert entry["input_spec"]["layout"] == "nchw"
    assert all(isinstance(t, float) for t in entry["timings"].values())


def test_perturbed_onnx_weights_fail_parity_with_numbers(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                         copy_model: Callable[..., Path]) -> None:
    model = copy_model(models["cnn"])
    bad = copy_model(models["perturbed"])
    run = run_cvdnn(f"--cvdnn-model={model.name}", f"--cvdnn-onnx={bad.name}")
    assert run.ret == 1, run.text
    checks = run.checks()
    assert checks["parity[keras-onnxruntime]"]["outcome"] == "failed"
    assert checks["parity[keras-cv2dnn]"]["outcome"] == "failed"
    # onnxruntime and cv2.dnn agree on the (wrong) graph: the blame is on the conversion
    assert checks["parity[onnxruntime-cv2dnn]"]["outcome"] == "passed"
    assert "the provided ONNX does not reproduce Keras" in run.text
    assert "Number of differences:" in run.text
    assert "minimum tolerance that would pass" in run.text
    assert "FAIL keras-onnxruntime" in run.text
    assert checks["parity[keras-onnxruntime]"]["data"]["max_abs"] > 1e-3


def test_onnx_from_another_model_is_caught(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                           copy_model: Callable[..., Path]) -> None:
    model = copy_model(models["cnn"])
    wrong = copy_model(models["other_onnx"])
    run = run_cvdnn(f"--cvdnn-model={model.name}", f"--cvdnn-onnx={wrong.name}")
    assert run.ret == 1
    checks = run.checks()
    failed = {name for name, c in checks.items() if c["outcome"] == "failed"}
    assert {"parity[keras-onnxruntime]", "parity[keras-cv2dnn]"} <= failed
    assert checks["convert"]["message"].startswith("using the provided ONNX")


def test_provided_nhwc_artifact_is_read_from_its_graph(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                       copy_model: Callable[..., Path]) -> None:
    """An NHWC artifact: parity still runs (layout read from the graph), but the NCHW blob does not fit."""
    model = copy_model(models["cnn"])
    nhwc = copy_model(models["onnx_nhwc"])
    run = run_cvdnn(f"--cvdnn-model={model.name}", f"--cvdnn-onnx={nhwc.name}")
    checks = run.checks()
    assert checks["parity[keras-cv2dnn]"]["outcome"] == "passed", run.text
    assert checks["input_spec"]["outcome"] == "failed"
    assert "expects (?, 32, 32, 3) NHWC but the spec's blob is (1, 3, 32, 32) NCHW" in run.text
    assert "DNN_LAYOUT_NHWC" in run.text
    # declaring the NHWC layout in the spec makes it pass (blobFromImageWithParams)
    run2 = run_cvdnn(f"--cvdnn-model={model.name}", f"--cvdnn-onnx={nhwc.name}", "--cvdnn-preprocess=none,layout=nhwc",
                     "-k", "input_spec")
    assert run2.ret == 0, run2.text
    assert "blobFromImageWithParams" in run2.checks()["input_spec"]["message"]


def test_onnx_source_runs_without_keras_items(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                              copy_model: Callable[..., Path]) -> None:
    onnx_model = copy_model(models["onnx"])
    run = run_cvdnn(f"--cvdnn-model={onnx_model.name}", "--collect-only", "-q", report=False)
    listed = [ln for ln in run.text.splitlines() if ln.startswith("small_cnn.onnx::")]
    assert listed == [f"small_cnn.onnx::{n}" for n in ALL_CHECKS if "keras" not in n]
    run = run_cvdnn(f"--cvdnn-model={onnx_model.name}")
    assert run.ret == 0, run.text
    assert run.outcomes() == {"passed": 8, "skipped": 1}
    assert "the preprocessing it expects is unknown" in run.checks()["preprocessing"]["message"]
    assert "no conversion" in run.checks()["convert"]["message"]


def test_load_failure_skips_dependent_items_with_the_reason(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                            copy_model: Callable[..., Path]) -> None:
    mvn = copy_model(models["mvn"])
    run = run_cvdnn(f"--cvdnn-model={mvn.name}", "-rs")
    assert run.ret == 1
    checks = run.checks()
    assert checks["convert"]["outcome"] == "passed"
    assert checks["load"]["outcome"] == "failed"
    assert "node 'norm/mvn' (op MeanVarianceNormalization) cannot be imported" in checks["load"]["message"]
    for name in ("input_spec", "output_spec", "parity[onnxruntime-cv2dnn]", "batch", "determinism"):
        assert checks[name]["outcome"] == "skipped", name
        assert checks[name]["message"].startswith("load failed: cv2.dnn (OpenCV")
    assert checks["ops"]["outcome"] == "failed"  # the scan lists the node before load fails on it
    assert run.outcomes() == {"passed": 1, "failed": 2, "skipped": 6}
    assert "SKIPPED" in run.text and "load failed:" in run.text


def test_invalid_converted_graph_names_the_node(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """tf2onnx can leave a TF-only node (FIELD.md: ConvNeXtTiny's StatefulPartitionedCall)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("StatefulPartitionedCall", ["x"], ["y"], name="convnext_tiny/stem/StatefulPartitionedCall")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(pytester.path / "broken.onnx"))
    run = run_cvdnn("--cvdnn-model=broken.onnx")
    checks = run.checks()
    assert checks["convert"]["outcome"] == "failed"
    assert "node 'convnext_tiny/stem/StatefulPartitionedCall' has op type 'StatefulPartitionedCall'" in \
        checks["convert"]["message"]
    assert checks["load"]["outcome"] == "skipped"
    assert checks["load"]["message"].startswith("convert failed:")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty (0 bytes)"),
        (b"PK\x03\x04 truncated zip", "is not a valid .keras archive"),
        (bytes(range(256)) * 8, "is not a valid .keras archive"),
    ],
)
def test_corrupt_keras_file_fails_convert_naming_the_file(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester,
                                                          content: bytes, message: str) -> None:
    path = pytester.path / "model.keras"
    path.write_bytes(content)
    before = path.read_bytes()
    run = run_cvdnn("--cvdnn-model=model.keras")
    assert run.ret == 1
    assert "INTERNALERROR" not in run.text
    checks = run.checks()
    assert checks["convert"]["outcome"] == "failed"
    assert "model.keras" in checks["convert"]["message"] and message in checks["convert"]["message"]
    assert "Fix:" in checks["convert"]["message"]
    assert all(c["outcome"] == "skipped" for n, c in checks.items() if n != "convert")
    assert path.read_bytes() == before  # the user's file is untouched


def test_corrupt_onnx_file_fails_naming_the_file(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    (pytester.path / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    run = run_cvdnn("--cvdnn-model=model.onnx")
    assert run.ret == 1 and "INTERNALERROR" not in run.text
    message = run.checks()["convert"]["message"]
    assert "model.onnx is not a readable ONNX model" in message


def test_h5_and_savedmodel_sources(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                   copy_model: Callable[..., Path], pytester: pytest.Pytester) -> None:
    h5 = copy_model(models["h5"])
    run = run_cvdnn(f"--cvdnn-model={h5.name}")
    assert run.ret == 0, run.text
    assert run.outcomes() == {"passed": 10, "skipped": 1}  # (preprocessing: cannot be derived)
    # the h5 model has no softmax: no logits output, no top-k
    parity = run.report["models"][0]["parity"]["keras-cv2dnn"]
    assert [o["name"] for o in parity["outputs"]] == ["fc"] or len(parity["outputs"]) == 1
    assert parity["outputs"][0]["topk"] == []


def test_savedmodel_source(run_cvdnn: Callable[..., Run], models: dict[str, Path], pytester: pytest.Pytester) -> None:
    import keras

    model = keras.models.load_model(models["h5"], compile=False)
    model.export(str(pytester.path / "saved"), format="tf_saved_model", verbose=False)
    run = run_cvdnn("--cvdnn-model=saved")
    assert run.ret == 0, run.text
    assert "saved::parity[keras-cv2dnn] PASSED" in run.text or run.outcomes() == {"passed": 10, "skipped": 1}


def test_factory_source(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        zoo="""
        import os
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

        def tiny():
            import keras
            keras.utils.set_random_seed(1)
            inp = keras.Input((16, 16, 3))
            x = keras.layers.Conv2D(4, 3)(inp)
            x = keras.layers.GlobalAveragePooling2D()(x)
            return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))

        def not_a_model():
            return 42
        """
    )
    run = run_cvdnn("--cvdnn-model=zoo:tiny", "--cvdnn-model=zoo:not_a_model", "-v")
    assert "zoo.py::tiny::parity[keras-cv2dnn] PASSED" in run.text, run.text
    bad = run.checks(1)["convert"]
    assert bad["outcome"] == "failed"
    assert "the model factory 'zoo:not_a_model' returned int, not a keras.Model" in bad["message"]
    # Dense(activation="softmax"): its logits are compared too (cloned with a linear activation)
    parity = run.report["models"][0]["parity"]["keras-onnxruntime"]
    assert len(parity["outputs"]) == 2 and parity["outputs"][1]["name"].endswith("(logits)")


def test_dynamic_spatial_size_needs_a_size(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                           copy_model: Callable[..., Path]) -> None:
    model = copy_model(models["dynamic"])
    run = run_cvdnn(f"--cvdnn-model={model.name}")
    assert run.ret == 1
    assert "has an undefined spatial size" in run.checks()["convert"]["message"]
    assert "size=224x224" in run.checks()["convert"]["message"]
    run = run_cvdnn(f"--cvdnn-model={model.name}", "--cvdnn-preprocess=none,size=40x24")
    assert run.ret == 0, run.text
    assert "(?, 3, 24, 40) NCHW" in run.checks()["load"]["message"]


def test_user_inputs_folder(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                            copy_model: Callable[..., Path], pytester: pytest.Pytester) -> None:
    import cv2
    import numpy as np
    from skimage import data

    folder = pytester.path / "images"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        cv2.imwrite(str(folder / f"{name}.png"), getattr(data, name)()[..., ::-1])
    np.save(folder / "tensor.npy", np.zeros((64, 64, 3), np.float32))
    model = copy_model(ROOT / "examples" / "tiny_cnn.keras")  # (Rescaling: its preprocessing is known)
    run = run_cvdnn(f"--cvdnn-model={model.name}", f"--cvdnn-inputs={folder.name}", f"--cvdnn-images={folder.name}",
                    "-k", "parity or preprocessing")
    assert run.ret == 0, run.text
    out = run.report["models"][0]["parity"]["keras-cv2dnn"]["outputs"][0]
    assert out["shape"] == [4, 3]  # three photos and one tensor
    assert run.checks()["preprocessing"]["data"]["photos"] == 3  # the user's photos (the .npy is not a photo)


def test_lambda_layer_is_refused_in_safe_mode_with_the_way_out(run_cvdnn: Callable[..., Run],
                                                               pytester: pytest.Pytester) -> None:
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x)).save(pytester.path / "lam.keras")
    run = run_cvdnn("--cvdnn-model=lam.keras", "-k", "convert")
    message = run.checks()["convert"]["message"]
    assert "contains a Lambda layer, which Keras refuses to deserialize in safe mode" in message
    assert "safe_mode=False) in a factory 'module:function' you trust" in message
    assert "INTERNALERROR" not in run.text


def test_artifact_with_other_outputs_fails_output_spec(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                       copy_model: Callable[..., Path],
                                                       pytester: pytest.Pytester) -> None:
    import keras

    from conftest import convert

    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
    convert(keras.Model(inp, keras.layers.Dense(7)(x)), pytester.path / "seven.onnx")
    copy_model(models["cnn"], "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-onnx=seven.onnx", "-k", "output_spec or batch")
    check = run.checks()["output_spec"]
    assert check["outcome"] == "failed"
    assert check["message"].startswith("the runners disagree on the outputs: output 0 ")
    assert "onnxruntime (1, 7) vs keras (1, 10)" in check["message"], check["message"]
    assert run.checks()["batch"]["outcome"] == "passed"  # the artifact itself batches fine


def test_check_inputs_follow_the_spec_or_the_declared_range(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                            copy_model: Callable[..., Path],
                                                            pytester: pytest.Pytester) -> None:
    """Inputs in the deployed range: the declared spec's, or --cvdnn-input-range's (option, ini, marker)."""
    copy_model(models["cnn"], "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-preprocess=tf", "-k", "parity")
    assert run.ret == 0, run.text
    parity = run.checks()["parity[keras-cv2dnn]"]
    assert "4 seeded random images in [-1, 1] (the declared input spec)" in parity["message"]
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-input-range=-0.5,2", "-k", "parity")
    assert "uniform in [-0.5, 2] (--cvdnn-input-range)" in run.checks()["parity[keras-cv2dnn]"]["message"]
    # and the arrays really are in that range, from a project's own test (marker keyword)
    pytester.makepyfile(
        test_range="""
        import pytest

        @pytest.mark.cvdnn(model="m.keras", input_range=(-1, 1))
        def test_inputs(cvdnn_model):
            x = cvdnn_model.inputs[0]
            assert x.min() >= -1 and x.max() <= 1 and x.max() - x.min() > 1.5

        @pytest.mark.cvdnn(model="m.keras")
        def test_default(cvdnn_model):
            assert cvdnn_model.inputs[0].max() > 200  # raw 0..255 assumed (said in the parity items)
        """
    )
    assert run_cvdnn("test_range.py", report=False).ret == 0
    bad = pytester.runpytest_subprocess("--cvdnn-model=m.keras", "--cvdnn-input-range=1,-1")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR and "LOW < HIGH" in bad.stderr.str()


def test_samples_and_seed_decide_the_inputs(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                            copy_model: Callable[..., Path]) -> None:
    copy_model(models["cnn"], "m.keras")

    def worst(seed: int) -> list[float]:
        run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-samples=2", f"--cvdnn-seed={seed}", "-k",
                        "parity[keras-cv2dnn] or batch")
        assert run.ret == 0, run.text
        out = run.report["models"][0]["parity"]["keras-cv2dnn"]["outputs"][1]  # the logits
        assert out["shape"] == [2, 10]
        assert "batch of 2 agrees with 2 single runs" in run.checks()["batch"]["message"]
        return sorted(w["expected"] for w in out["worst"])

    assert worst(5) == worst(5)  # the same seed, the same inputs
    assert worst(5) != worst(6)


def test_a_graph_fixed_to_batch_one_skips_the_batch_check_saying_why(
        run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path],
        pytester: pytest.Pytester) -> None:
    import keras
    import tensorflow as tf
    import tf2onnx

    copy_model(models["cnn"], "m.keras")
    sig = (tf.TensorSpec((1, 32, 32, 3), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(keras.models.load_model(models["cnn"]), input_signature=sig, opset=13,
                               output_path=str(pytester.path / "fixed.onnx"), inputs_as_nchw=["image"])
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-onnx=fixed.onnx", "-k", "batch or parity")
    checks = run.checks()
    assert checks["batch"]["outcome"] == "skipped"
    assert "the ONNX model fixes the batch size to 1 (1, 3, 32, 32)" in checks["batch"]["message"]
    assert checks["parity[keras-cv2dnn]"]["outcome"] == "passed"  # one image per forward, as deployed


def test_onnxruntime_execution_providers_are_chosen_and_checked(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                                copy_model: Callable[..., Path],
                                                                pytester: pytest.Pytester) -> None:
    """--cvdnn-ort-providers: the onnxruntime runner's providers, in order, each checked against
    onnxruntime.get_available_providers() before anything runs (a usage error naming what this onnxruntime
    has); the outputs are cached per provider list, and the report says which ran."""
    import onnxruntime

    onnx_model = copy_model(models["onnx"])
    missing = run_cvdnn(f"--cvdnn-model={onnx_model.name}", "--cvdnn-ort-providers=CUDAExecutionProvider",
                        report=False)
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    assert "CUDAExecutionProvider not available in this onnxruntime" in missing.text
    assert ", ".join(onnxruntime.get_available_providers()) in missing.text and "onnxruntime-gpu" in missing.text
    chosen = [p for p in onnxruntime.get_available_providers() if p != "CPUExecutionProvider"][:1]
    providers = ",".join([*chosen, "CPUExecutionProvider"])
    cache = pytester.path / "cache"
    run = run_cvdnn(f"--cvdnn-model={onnx_model.name}", f"--cvdnn-ort-providers={providers}", cache=cache)
    assert run.ret == 0, run.text
    assert run.report["models"][0]["environment"]["ort_providers"] == providers.split(",")
    runners = run.report["models"][0]["environment"]["runners"]  # each runner and its version (no Keras here)
    assert runners["onnxruntime"] == f"onnxruntime {onnxruntime.__version__} ({', '.join(providers.split(','))})"
    assert set(runners) == {"onnxruntime", "cv2dnn"} and runners["cv2dnn"].startswith("cv2.dnn of OpenCV ")
    assert run.checks()["parity[onnxruntime-cv2dnn]"]["outcome"] == "passed"

    def identities() -> set[str]:  # outputs/<runner>-<identity>-<inputs>.npz
        return {p.name.split("-")[1] for p in (cache / "outputs").glob("onnxruntime-*.npz")}

    chosen_ids = identities()
    assert len(chosen_ids) == 1, chosen_ids
    again = run_cvdnn(f"--cvdnn-model={onnx_model.name}", "--cvdnn-ort-providers=CPUExecutionProvider", cache=cache)
    assert again.ret == 0, again.text
    assert len(identities()) == (1 if providers == "CPUExecutionProvider" else 2)  # cached per provider list
