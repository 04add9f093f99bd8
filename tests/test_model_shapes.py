"""Models beyond one image in, one vector out: several inputs/outputs, sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from conftest import Run


@pytest.fixture(scope="session")
def sequence_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras
    from keras import layers

    keras.utils.set_random_seed(6)
    inp = keras.Input((20, 4), name="signal")
    x = layers.Conv1D(8, 3, activation="relu")(inp)
    x = layers.GlobalAveragePooling1D()(x)
    path = tmp_path_factory.mktemp("seq") / "sequence.keras"
    keras.Model(inp, layers.Dense(2)(x), name="sequence").save(path)
    return path


def test_two_inputs_two_outputs_pass_all_checks(run_cvdnn: Callable[..., Run], two_in_two_out: Path,
                                                copy_model: Callable[..., Path]) -> None:
    copy_model(two_in_two_out)
    run = run_cvdnn("--cvdnn-model=two_in_two_out.keras", "-rs")
    checks = run.checks()
    failed = {n: c["message"] for n, c in checks.items() if c["outcome"] == "failed"}
    assert not failed, failed
    assert checks["parity[keras-cv2dnn]"]["outcome"] == "passed"
    names = [o["name"] for o in checks["parity[keras-cv2dnn]"]["data"]["outputs"]]
    assert names[:2] == ["probs", "box"] and names[2] == "probs (logits)"
    # the image input of a plain model: its preprocessing cannot be derived, so the blob is not verified
    assert checks["preprocessing"]["outcome"] == "skipped"
    assert "cannot verify the blob" in checks["preprocessing"]["message"]


def test_sequence_model_passes_all_checks(run_cvdnn: Callable[..., Run], sequence_model: Path,
                                          copy_model: Callable[..., Path]) -> None:
    copy_model(sequence_model)
    run = run_cvdnn("--cvdnn-model=sequence.keras")
    checks = run.checks()
    failed = {n: c["message"] for n, c in checks.items() if c["outcome"] == "failed"}
    assert not failed, failed
    assert checks["input_spec"]["message"].startswith("non-image input")
    assert checks["preprocessing"]["outcome"] == "skipped"
    assert checks["parity[keras-cv2dnn]"]["outcome"] == "passed"


@pytest.fixture(scope="session")
def two_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two image inputs of different sizes, each normalised inside the model (raw 0..255 RGB in)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(9)
    image = keras.Input((32, 32, 3), name="image")
    thumb = keras.Input((16, 16, 3), name="thumb")
    a = layers.Rescaling(1 / 255.0)(image)
    b = layers.Rescaling(1 / 127.5, offset=-1)(thumb)
    a = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(a))
    b = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(b))
    out = layers.Dense(3, name="scores")(layers.Concatenate()([a, b]))
    path = tmp_path_factory.mktemp("two_images") / "two_images.keras"
    keras.Model([image, thumb], out, name="two_images").save(path)
    return path


def test_one_spec_per_image_input_matched_by_name(run_cvdnn: Callable[..., Run], two_images: Path,
                                                  copy_model: Callable[..., Path]) -> None:
    copy_model(two_images)
    good = run_cvdnn("--cvdnn-model=two_images.keras", "--cvdnn-preprocess=image:none;thumb:none", "-k",
                     "input_spec or preprocessing")
    checks = good.checks()
    assert checks["preprocessing"]["outcome"] == "passed", checks["preprocessing"]["message"]
    assert set(checks["preprocessing"]["data"]["inputs"]) == {"image", "thumb"}
    assert "fits 'image' (?, 3, 32, 32)" in checks["input_spec"]["message"]
    assert "fits 'thumb' (?, 3, 16, 16)" in checks["input_spec"]["message"]

    # caffe preprocessing on the thumbnail only: the check names that input and the mistake
    bad = run_cvdnn("--cvdnn-model=two_images.keras", "--cvdnn-preprocess=image:none;thumb:caffe", "-k",
                    "preprocessing")
    prep = bad.checks()["preprocessing"]
    assert prep["outcome"] == "failed"
    assert prep["message"].startswith("input 'thumb': ") and "input 'image'" not in prep["message"]
    assert list(prep["data"]["inputs"]) == ["thumb"]

    # a wrong size for one input fails input_spec on that input
    size = run_cvdnn("--cvdnn-model=two_images.keras", "--cvdnn-preprocess=image:none;thumb:none,size=32x32", "-k",
                     "input_spec")
    spec = size.checks()["input_spec"]
    assert spec["outcome"] == "failed" and "'thumb'" in spec["message"] and "size=(16, 16)" in spec["message"]


def test_a_spec_for_an_unknown_input_name_says_which_names_exist(run_cvdnn: Callable[..., Run], two_images: Path,
                                                                 copy_model: Callable[..., Path]) -> None:
    copy_model(two_images)
    run = run_cvdnn("--cvdnn-model=two_images.keras", "--cvdnn-preprocess=image:none;thumbnail:none", "-k", "convert")
    message = run.checks()["convert"]["message"]
    assert "'thumbnail'" in message and "'image', 'thumb'" in message and "Fix:" in message
