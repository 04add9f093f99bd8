"""The fixtures and marker a project uses for its own deployment tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from conftest import Run


def test_fixtures_and_marker(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                             copy_model: Callable[..., Path], pytester: pytest.Pytester) -> None:
    copy_model(models["cnn"], "m.keras")
    copy_model(models["other_onnx"], "other.onnx")
    pytester.makepyfile(
        test_deploy="""
        import cv2
        import numpy as np
        import pytest
        from pytest_cvdnn import InputSpec, ParityResult

        @pytest.mark.cvdnn(model="m.keras", atol=1e-4, rtol=1e-3)
        def test_parity_between_runners(cvdnn_model, assert_parity):
            result = assert_parity("keras", "cv2dnn")
            assert isinstance(result, ParityResult) and result.ok
            assert result.outputs[0].topk  # a softmax model gets top-k statistics

        @pytest.mark.cvdnn(model="m.keras")
        def test_deployment_object(cvdnn_model, input_spec):
            assert isinstance(input_spec, InputSpec) and input_spec.size == (32, 32)
            assert cvdnn_model.input_spec == input_spec
            assert cvdnn_model.onnx_path.suffix == ".onnx"
            assert cvdnn_model.keras_model.name == "small_cnn"
            net = cvdnn_model.net
            assert isinstance(net, cv2.dnn.Net) and net is not cvdnn_model.net  # fresh each time
            x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
            ours = cvdnn_model.run("cv2dnn", [x], per_sample=True)[0]
            ref = cvdnn_model.run("keras", [x])[0]
            np.testing.assert_allclose(ours, ref, atol=1e-4)

        @pytest.mark.cvdnn(model="m.keras", input_spec=InputSpec.from_keras_mode("tf"))
        def test_spec_from_marker(input_spec):
            assert input_spec.mode == "tf" and input_spec.size == (32, 32)

        @pytest.mark.cvdnn(model="m.keras", onnx="other.onnx")
        def test_wrong_artifact_fails(assert_parity):
            assert_parity("keras", "onnxruntime")

        @pytest.mark.cvdnn(model="m.keras")
        def test_wrong_preprocessing_fails(cvdnn_model, assert_parity):
            x = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
            # a saturated softmax can hide the mistake; its logits cannot
            ref = cvdnn_model.run("keras", [x], logits=True)
            wrong = cvdnn_model.run("cv2dnn", [x[..., ::-1].copy()], logits=True)  # channels swapped
            assert_parity(ref, wrong)

        @pytest.mark.cvdnn(model="m.keras")
        def test_other_format(cvdnn_model):
            tflite = cvdnn_model.as_format("tflite")
            assert tflite.onnx_path.suffix == ".tflite"
            assert tflite.check("parity[keras-cv2dnn]").data["outputs"][1]["name"] == "probs (logits)"
            frozen = cvdnn_model.as_format("tf")
            assert frozen.onnx_path.suffix == ".pb" and frozen.settings.format == "tf"
            if hasattr(cv2.dnn, "readNetFromTensorflow"):  # 3.3 ... 5.0
                assert frozen.check("parity[keras-cv2dnn]").data["max_abs"] < 1e-4
            else:  # 5.1 removed it: a skip that says so, never a pass
                from pytest_cvdnn.errors import StageSkipped
                with pytest.raises(StageSkipped, match=f"OpenCV {cv2.__version__} has no cv2.dnn.readNetFromTensorflow"):
                    frozen.check("parity[keras-cv2dnn]")

        def test_arrays_only(assert_parity):
            a = np.ones((2, 3), np.float32)
            assert assert_parity(a, a + 1e-6).max_abs < 1e-5
        """
    )
    run = run_cvdnn("test_deploy.py", "-v", "--strict-markers", report=False)
    outcomes = run.outcomes()
    assert outcomes == {"passed": 5, "failed": 2}, run.text
    assert "test_wrong_artifact_fails FAILED" in run.text
    assert "test_wrong_preprocessing_fails FAILED" in run.text
    assert "parity keras-onnxruntime failed (atol=0.0001, rtol=0.001" in run.text
    # issue 17: assert_parity between runners says what the generated item says: blame, first divergent node, repro
    assert "AssertionError: the provided ONNX does not reproduce Keras (compared with a fresh conversion" in run.text
    assert "first divergent node: '" in run.text and "(op Softmax, Keras layer 'probs')" in run.text
    assert "repro folder: " in run.text
    assert "parity expected-obtained failed" in run.text
    assert "Number of differences:" in run.text


def test_marker_needs_a_model_when_none_is_configured(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        def test_needs_model(cvdnn_model):
            pass
        """
    )
    run = run_cvdnn("test_x.py", report=False)
    assert run.ret != 0
    assert "which model? Use @pytest.mark.cvdnn(model='path/to/model.keras')" in run.text


def test_unknown_marker_keyword_is_reported(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        import pytest
        @pytest.mark.cvdnn(model="m.keras", atoll=1)
        def test_typo(input_spec):
            pass
        """
    )
    run = run_cvdnn("test_x.py", report=False)
    assert run.ret != 0
    assert "unknown @pytest.mark.cvdnn keyword(s) ['atoll']" in run.text
    assert "def _marker_settings" not in run.text and "raise " not in run.text  # (20 lines of the plugin's source)


def test_a_marked_test_without_cvdnn_fixtures_still_has_its_marker_checked(run_cvdnn: Callable[..., Run],
                                                                           pytester: pytest.Pytester) -> None:
    """Issue 17: a marker typo on a test that requests no cvdnn fixture was never noticed."""
    pytester.makepyfile(
        test_x="""
        import pytest
        @pytest.mark.cvdnn(atoll=1)
        def test_plain():
            pass

        @pytest.mark.cvdnn(atol=1e-3)
        def test_fine():
            pass
        """
    )
    run = run_cvdnn("test_x.py", report=False)
    assert run.ret == 1, run.text
    assert "test_x.py::test_plain: unknown @pytest.mark.cvdnn keyword(s) ['atoll']" in run.text
    assert run.outcomes().get("passed") == 1 and run.outcomes().get("errors") == 1, run.text


def test_ini_keys(run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path],
                  pytester: pytest.Pytester) -> None:
    copy_model(models["cnn"], "m.keras")
    pytester.makeini("[pytest]\ncvdnn_models =\n    m.keras\ncvdnn_opset = 11\ncvdnn_atol = 1e-3\n")
    pytester.makepyfile(test_other="def test_plain():\n    pass\n")
    run = run_cvdnn("-v")
    assert run.ret == 0, run.text
    # ini models are added to the normal run (the project's own tests still run)
    assert "test_other.py::test_plain PASSED" in run.text
    assert "m.keras::convert PASSED" in run.text
    env = run.report["models"][0]["environment"]
    assert env["opset"] == 11
    assert run.report["models"][0]["parity"]["keras-cv2dnn"]["atol"] == 1e-3


def test_a_failing_check_in_a_project_test_shows_the_test_and_the_diagnosis_not_the_plugin(
        run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path],
        pytester: pytest.Pytester) -> None:
    """Issue 17: a failing ``cvdnn_model.check(...)`` printed a ~100-line traceback through the plugin, and
    ``check("parity")`` a bare KeyError.  The test's own line and the one-paragraph diagnosis remain."""
    copy_model(models["cnn"], "m.keras")
    pytester.makepyfile(
        test_x="""
        import pytest
        from pytest_cvdnn import InputSpec

        @pytest.mark.cvdnn(model="m.keras", input_spec=InputSpec(size=(16, 16)))
        def test_spec(cvdnn_model):
            cvdnn_model.check("input_spec")

        @pytest.mark.cvdnn(model="m.keras")
        def test_name(cvdnn_model):
            cvdnn_model.check("parity")
        """
    )
    run = run_cvdnn("test_x.py", report=False)
    assert run.outcomes() == {"failed": 2}, run.text
    assert "there is no check 'parity'. Fix: use one of " in run.text and "KeyError" not in run.text
    assert "does not fit the model input" in run.text and "Fix: set size=(32, 32)" in run.text, run.text
    assert 'cvdnn_model.check("input_spec")' in run.text  # the test's own line
    assert "pytest_cvdnn/checks.py" not in run.text and "pytest_cvdnn/deployment.py" not in run.text, run.text
