"""Decision points pinned at the level a user sees them: an item's verdict and message on a model made for the
decision (tests/decision_mutations.py names the mutation each test kills; the zoo tier applies them).
Default tier: real Keras, tf2onnx, onnxruntime and cv2.dnn (a side-by-side OpenCV 4.8.1 for the target case)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import ROOT, Run, resize_ceil_onnx, side_by_side

TINY = ROOT / "examples" / "tiny_cnn.keras"  # (Rescaling at its input: the blob carries raw 0..255 RGB pixels)


def test_a_blob_a_fraction_of_a_pixel_level_off_fails_preprocessing(run_cvdnn: Callable[..., Run],
                                                                      copy_model: Callable[..., Path]) -> None:
    """The blob's arithmetic must be Keras' own, and its resize within a pixel level: a mean of 0.2 (a fifth of a
    level, inside the resize's own pixel limit) is a wrong blob, not a resize difference."""
    copy_model(TINY, "m.keras")
    good = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-preprocess=none,swap_rb=1", "-k", "preprocessing")
    assert good.checks()["preprocessing"]["outcome"] == "passed", good.text
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-preprocess=none,mean=0.2/0.2/0.2,swap_rb=1", "-k",
                    "preprocessing")
    check = run.checks()["preprocessing"]
    assert check["outcome"] == "failed", check["message"]
    assert check["data"]["keras_resize_pixels"] <= 1.0  # within the resize's pixel limit: the arithmetic decides
    assert check["message"].startswith("the mean is (0.2, 0.2, 0.2) but the model expects (0, 0, 0)"), check["message"]
    assert "mean=(0.0, 0.0, 0.0), swapRB=True" in check["data"]["corrected_code"]


def test_the_channel_order_of_the_blob_decides_swap_rb_not_the_flag(run_cvdnn: Callable[..., Run],
                                                                     copy_model: Callable[..., Path]) -> None:
    """An application whose images are RGB (PIL, a camera API): swapRB=False gives the RGB blob the model
    wants, and swapRB=True (the flag Keras' BGR recipe uses) gives BGR — diagnosed by the blob's channel order,
    with the corrected code that, pasted on an RGB image, builds Keras' tensor."""
    from snippet_child import run as paste

    from pytest_cvdnn.preprocess import load_photos, to_nhwc
    from pytest_cvdnn.reference import keras_reference
    from pytest_cvdnn.spec import InputSpec

    copy_model(TINY, "m.keras")
    right = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-preprocess=none,channel_order=rgb,swap_rb=0", "-k",
                      "preprocessing")
    assert right.checks()["preprocessing"]["outcome"] == "passed", right.checks()["preprocessing"]["message"]
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-preprocess=none,channel_order=rgb,swap_rb=1", "-k",
                    "preprocessing")
    check = run.checks()["preprocessing"]
    assert check["outcome"] == "failed"
    assert check["message"].startswith("the blob is BGR but tiny_cnn expects RGB: use swapRB=False"), check["message"]
    assert check["data"]["diagnosis"] == ["channels swapped"]
    code = check["data"]["corrected_code"]
    assert code.startswith("# img: an RGB image") and "swapRB=False" in code
    photos = [img for _, img in load_photos()]
    blob = np.concatenate([paste(code, np.ascontiguousarray(img[..., ::-1])) for img in photos])  # RGB images
    reference = keras_reference(photos, InputSpec(size=(64, 64), swap_rb=True))
    assert np.abs(to_nhwc(blob, "nchw") - reference).max() == 0


def test_a_divergence_below_atol_is_localised_by_the_rule_relative_to_the_signal(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """Every tensor of this graph is far below atol (weights scaled by 1e-7), so only the rule relative to the
    signal sees cv2.dnn's Resize differ: the first divergent node is found by the same rule as the verdict."""
    resize_ceil_onnx(pytester.path / "tiny_up.onnx", scale=1e-7)
    run = run_cvdnn("--cvdnn-model=tiny_up.onnx", "-k", "parity")
    check = run.checks()["parity[onnxruntime-cv2dnn]"]
    assert check["outcome"] == "failed", check["message"]
    assert check["data"]["outputs"][0]["mismatches"] == 0  # nothing beyond atol/rtol element-wise
    first = check["data"]["first_divergent"]
    assert first["node"] == "block2/upsample" and first["op_type"] == "Resize", first
    assert "no intermediate tensor diverges" not in check["message"]


RESIZER = """
import keras


def build():
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = keras.layers.Resizing(13, 13, interpolation="nearest", name="resize")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    return keras.Model(inp, keras.layers.Flatten()(x), name="resizer")
"""


def test_keras_against_a_targets_cv2dnn_is_blamed_on_the_half_that_diverges(run_cvdnn: Callable[..., Run],
                                                                           pytester: pytest.Pytester) -> None:
    """Keras and onnxruntime agree, OpenCV 4.8.1 computes the graph differently (measured with a hand script:
    readNetFromONNX on 4.8.1 against onnxruntime, 2 elements of conv2's output beyond atol/rtol): the
    keras-cv2dnn item on that target blames OpenCV and names the node, like the onnxruntime-cv2dnn item — never
    "the deployed model does not reproduce Keras" with a fix about an ONNX file nobody passed.  (On 4.8.1 the
    classic engine has no tensor by some of the names asked for: the localisation asks for them one by one.)"""
    side_by_side("4.8.1")
    pytester.makepyfile(resizer=RESIZER)
    run = run_cvdnn("--cvdnn-model=resizer:build", "--cvdnn-target=opencv==4.8.1", "-k", "parity")
    checks = run.checks()
    assert checks["parity[keras-onnxruntime]"]["outcome"] == "passed"
    for name in ("parity[onnxruntime-cv2dnn@opencv-4.8.1]", "parity[keras-cv2dnn@opencv-4.8.1]"):
        check = checks[name]
        assert check["outcome"] == "failed", (name, check["message"])
        assert check["message"].startswith("OpenCV's importer/runtime computes the ONNX graph differently"), name
        assert "--cvdnn-onnx" not in check["message"], name
        assert check["data"]["first_divergent"]["keras_layer"] == "conv2", (name, check["data"])


def test_a_failing_blob_says_how_much_it_moves_the_predictions(run_cvdnn: Callable[..., Run],
                                                               copy_model: Callable[..., Path]) -> None:
    """Exactly when the blob is wrong enough to matter, the verdict says how far the outputs move and how many
    photos keep their top-1 class: the tf recipe on a model that normalises its own input (scaled twice), checked
    against a hand computation with Keras on both tensors."""
    import keras

    from pytest_cvdnn.preprocess import load_photos
    from pytest_cvdnn.reference import keras_reference
    from pytest_cvdnn.spec import InputSpec

    copy_model(TINY, "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-preprocess=tf,size=64x64", "-k", "preprocessing")
    check = run.checks()["preprocessing"]
    assert check["outcome"] == "failed" and not check["data"]["effect"]["ok"], check["message"]
    effect = check["data"]["effect"]
    photos = [img for _, img in load_photos()]
    model = keras.saving.load_model(TINY)
    right = np.asarray(model(keras_reference(photos, InputSpec(size=(64, 64), swap_rb=True))))
    wrong = np.asarray(model(keras_reference(photos, InputSpec.from_keras_mode("tf", size=(64, 64)))))
    agree = int((right.argmax(1) == wrong.argmax(1)).sum())
    assert abs(np.abs(right - wrong).max() - effect["max_abs"]) < 1e-3 * effect["max_abs"]
    assert f"the model's outputs move by max |Δ| {effect['max_abs']:.3g}, top-1 agreement {agree}/{len(photos)}" \
        in check["message"], check["message"]
