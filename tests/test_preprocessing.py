"""Preprocessing parity: the blob OpenCV builds equals what Keras feeds the model, and mistakes are named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import Run
from pytest_cvdnn import InputSpec

FAMILIES = {
    # mode: (keras.applications constructor, expected model name prefix)
    "caffe": "ResNet50",
    "tf": "MobileNetV2",
    "torch": "DenseNet121",
    "none": "EfficientNetB0",
}


@pytest.fixture(scope="session")
def family_models() -> dict[str, Any]:
    import keras

    keras.utils.set_random_seed(0)
    return {mode: getattr(keras.applications, name)(weights=None, input_shape=(96, 96, 3))
            for mode, name in FAMILIES.items()}


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    from pytest_cvdnn.preprocess import load_photos

    return [img for _, img in load_photos()]


def test_from_model_detects_each_family(family_models: dict[str, Any]) -> None:
    for mode, model in family_models.items():
        spec = InputSpec.from_model(model)
        assert spec.mode == mode, (model.name, spec.note)
        assert spec.size == (96, 96)
        assert FAMILIES[mode][:5].lower() in spec.note.lower() and f"mode {mode!r}" in spec.note


def test_from_model_finds_in_model_normalisation_and_says_when_it_guesses() -> None:
    import keras

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    model = keras.Model(inp, keras.layers.Conv2D(2, 3)(x), name="my_net")
    spec = InputSpec.from_model(model)
    assert spec.mode == "none" and "starts with Rescaling" in spec.note and spec.size == (16, 16)
    plain = keras.Model(inp, keras.layers.Conv2D(2, 3)(inp), name="plain")
    assert "assuming raw 0..255 RGB" in InputSpec.from_model(plain).note


@pytest.mark.parametrize("mode", list(FAMILIES))
def test_derived_blob_equals_keras_reference_on_real_photos(mode: str, family_models: dict[str, Any],
                                                            photos: list[np.ndarray]) -> None:
    from pytest_cvdnn.reference import keras_reference
    from pytest_cvdnn.preprocess import (ARITHMETIC_TOL, RESIZE_PIXEL_TOL, blob_method, pixel_error,
                                         to_nhwc)

    spec = InputSpec.from_model(family_models[mode])
    reference = keras_reference(photos, spec)  # Keras' own preprocess_input on OpenCV's resized pixels
    blob = to_nhwc(spec.blob(photos), "nchw")
    assert blob.shape == (3, 96, 96, 3)
    relative = np.abs(blob - reference).max() / max(1.0, np.abs(reference).max())
    print(f"{mode}: arithmetic {relative:.3g} relative")  # (README: the measured numbers)
    assert relative <= ARITHMETIC_TOL
    # and the whole pipeline against Keras' own resize (keras.ops.image.resize), in pixel levels
    pixels = pixel_error(blob, keras_reference(photos, spec, resize="keras"), spec)
    print(f"{mode}: {pixels:.3f} pixel levels from Keras' resize")
    assert pixels <= RESIZE_PIXEL_TOL
    assert blob_method(spec) == ("blobFromImageWithParams" if mode == "torch" else "blobFromImage")
    # and a wrong mode does not pass by accident
    other = InputSpec.from_keras_mode("tf" if mode != "tf" else "caffe", size=(96, 96))
    assert np.abs(to_nhwc(other.blob(photos), "nchw") - reference).max() > 0.1


def test_to_cv2_code_is_the_call_to_paste() -> None:
    tf = InputSpec.from_keras_mode("tf", size=(224, 224))
    assert tf.to_cv2_code() == (
        "blob = cv2.dnn.blobFromImage(img, scalefactor=0.00784313725490196, size=(224, 224), "
        "mean=(127.5, 127.5, 127.5), swapRB=True, crop=False)"
    )
    torch = InputSpec.from_keras_mode("torch", size=(224, 224)).to_cv2_code("5.1.0")
    assert torch.startswith("blob = cv2.dnn.blobFromImageWithParams(img, cv2.dnn.Image2BlobParams(scalefactor=(0.0171247")
    assert "mean=(123.675, 116.28, 103.53), swapRB=True" in torch and "mode=cv2.dnn.DNN_PMODE_NULL))" in torch
    # (tests/test_snippets.py executes the printed code on every supported OpenCV)


CHILD = r"""
import json, sys
import numpy as np
import cv2
from pytest_cvdnn import InputSpec
from pytest_cvdnn.preprocess import blob_method, to_nhwc
folder = sys.argv[1]
photos = [np.load(f"{folder}/photo{i}.npy") for i in range(3)]
out = {"opencv": cv2.__version__, "numpy": np.__version__}
for mode in ("caffe", "tf", "torch", "none"):
    spec = InputSpec.from_keras_mode(mode, size=(96, 96))
    ref = np.load(f"{folder}/ref-{mode}.npy")
    out[mode] = {"method": blob_method(spec), "max_abs": float(np.abs(to_nhwc(spec.blob(photos), "nchw") - ref).max()),
                 "code": spec.to_cv2_code()}
print(json.dumps(out))
"""


def test_derived_blob_equals_keras_reference_on_opencv_4_5_5(photos: list[np.ndarray], tmp_path: Path,
                                                            opencv_4_5_5: Path) -> None:
    """OpenCV 4.5.5 has no Image2BlobParams: torch mode falls back to numpy, the rest use blobFromImage."""
    from pytest_cvdnn.reference import keras_reference
    from pytest_cvdnn.targets import opencv_env

    for i, img in enumerate(photos):
        np.save(tmp_path / f"photo{i}.npy", img)
    for mode in FAMILIES:
        np.save(tmp_path / f"ref-{mode}.npy", keras_reference(photos, InputSpec.from_keras_mode(mode, size=(96, 96))))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], env=opencv_env(opencv_4_5_5),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["opencv"] == "4.5.5" and result["numpy"].startswith("1.")
    for mode in FAMILIES:  # the same arithmetic as Keras on OpenCV 4.5.5 too (numpy fallback for torch)
        assert result[mode]["max_abs"] <= 1e-6 * 151, (mode, result[mode])
    assert result["torch"]["method"] == "numpy"
    assert result["torch"]["code"].startswith("# OpenCV 4.5.5 has no blobFromImageWithParams")
    assert result["tf"]["method"] == "blobFromImage"


# -- the preprocessing item, end to end -------------------------------------------------------------
MISTAKES = [
    ("torch,swap_rb=0", "the blob is BGR but densenet121 (torch mode) expects RGB: use swapRB=True"),
    ("torch,scale=1", "the blob is 255x too large: the scaling is missing"),
    ("torch,scale=0.0000153787", "the blob is 255x too small (scaled twice?)"),
    ("torch,mean=103.53/116.28/123.675", "the mean (103.53, 116.28, 123.675) is given in the wrong channel order"),
    ("scale=0.00392157,mean=123.675/116.28/103.53,swap_rb=1", "std is missing: densenet121 (torch mode) divides by std"),
    ("torch,layout=nhwc", "the blob is NHWC but the model input is NCHW"),
    ("torch,size=56x56", "the blob is 56x56 but densenet121 expects 64x64: use size=(64, 64)"),
    ("torch,crop=1", "the blob is centre-cropped but the model expects the image stretched to size (no crop)"),
    ("torch,interpolation=nearest", "resized with nearest interpolation but the reference pipeline uses bilinear"),
]


@pytest.mark.zoo
@pytest.mark.parametrize("planted, diagnosis", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_planted_mistake_is_diagnosed(planted: str, diagnosis: str, run_cvdnn: Callable[..., Run],
                                      densenet_small: Path, copy_model: Callable[..., Path],
                                      record_property: Callable[[str, object], None]) -> None:
    model = copy_model(densenet_small)
    run = run_cvdnn(f"--cvdnn-model={model.name}", "--cvdnn-layout=nchw", f"--cvdnn-preprocess={planted}",
                    "-k", "preprocessing")
    check = run.checks()["preprocessing"]
    # part of the fault corpus (benchmarks/fault_corpus.py)
    record_property("corpus_kind", "fault")
    record_property("corpus_case", f"preprocessing: {diagnosis.split(':')[0]} (--cvdnn-preprocess={planted})")
    record_property("corpus_item", "preprocessing")
    record_property("corpus_detected", check["outcome"] == "failed" and diagnosis in check["message"])
    record_property("corpus_explanation", diagnosis)
    assert run.ret == 1, run.text
    assert check["outcome"] == "failed"
    assert diagnosis in check["message"], check["message"]
    assert "Fix: blob = cv2.dnn.blobFromImageWithParams(" in check["message"]
    assert len(check["data"]["diagnosis"]) == 1
    # the fix, pasted as printed, builds what Keras feeds DenseNet121 (preprocess_input, torch mode)
    from snippet_child import run as paste

    from pytest_cvdnn.preprocess import load_photos, to_nhwc
    from pytest_cvdnn.reference import keras_reference

    code = check["data"]["corrected_code"]
    assert code and check["message"].split("Fix: ", 1)[1].startswith(code.split("  #")[0])
    photos = [img for _, img in load_photos()]
    blob = np.concatenate([paste(code, img) for img in photos])
    reference = keras_reference(photos, InputSpec.from_keras_mode("torch", size=(64, 64)))
    assert np.abs(to_nhwc(blob, "nchw") - reference).max() < 1e-4


@pytest.mark.zoo
def test_correct_spec_passes_and_report_carries_spec_code_and_statistics(
        run_cvdnn: Callable[..., Run], densenet_small: Path, copy_model: Callable[..., Path]) -> None:
    model = copy_model(densenet_small)
    run = run_cvdnn(f"--cvdnn-model={model.name}", "-k", "preprocessing or input_spec")
    assert run.ret == 0, run.text
    check = run.checks()["preprocessing"]
    data = check["data"]
    assert data["expected"]["mode"] == "torch" and data["declared"]["std"] == [0.229, 0.224, 0.225]
    assert data["code"].startswith("blob = cv2.dnn.blobFromImageWithParams(")
    assert data["tensor"]["max_abs"] < 1e-4 and data["photos"] == 3
    assert data["effect"]["ok"] is True
    assert "keras.utils.load_img (PIL, nearest)" in check["message"]
    assert data["resize_note"]["tensor_max_abs"] > 1.0  # nearest vs bilinear really differ
    assert run.report["models"][0]["input_spec"]["std"] == [0.229, 0.224, 0.225]


@pytest.mark.zoo
def test_overridden_input_spec_fixture_is_checked(run_cvdnn: Callable[..., Run], densenet_small: Path,
                                                  copy_model: Callable[..., Path], pytester: pytest.Pytester) -> None:
    copy_model(densenet_small, "dn.keras")
    pytester.makeconftest(
        """
        import pytest
        from pytest_cvdnn import InputSpec

        @pytest.fixture
        def input_spec():
            return InputSpec.from_keras_mode("tf", size=(64, 64))  # DenseNet wants torch
        """
    )
    pytester.makepyfile(
        test_x="""
        import pytest
        from pytest_cvdnn.checks import CheckFailed

        @pytest.mark.cvdnn(model="dn.keras")
        def test_preprocessing(cvdnn_model):
            with pytest.raises(CheckFailed) as info:
                cvdnn_model.check("preprocessing")
            text = str(info.value)  # two mistakes at once: both named, and the fix corrects both
            assert "the mean is (127.5, 127.5, 127.5) but the model expects (123.675, 116.28, 103.53)" in text
            assert "std is missing: densenet121 (torch mode) divides by std (0.229, 0.224, 0.225)" in text
            assert info.value.data["diagnosis"] == ["wrong mean", "std missing"]
            assert "Fix: blob = cv2.dnn.blobFromImageWithParams(" in text and "mean=(123.675, 116.28, 103.53)" in text
        """
    )
    run = run_cvdnn("test_x.py", report=False)
    assert run.ret == 0, run.text
