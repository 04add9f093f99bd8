"""Models beyond one image in, one vector out: several inputs/outputs, sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from conftest import Run


@pytest.fixture(scope="session")
def two_in_two_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    image = keras.Input((32, 32, 3), name="image")
    meta = keras.Input((8,), name="meta")
    x = layers.Conv2D(8, 3, activation="relu")(image)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Concatenate()([x, layers.Dense(8, activation="relu")(meta)])
    probs = layers.Dense(5, activation="softmax", name="probs")(x)
    box = layers.Dense(4, name="box")(x)
    path = tmp_path_factory.mktemp("multi") / "two_in_two_out.keras"
    keras.Model([image, meta], [probs, box], name="two_in_two_out").save(path)
    return path


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
    assert checks["preprocessing"]["outcome"] == "skipped"  # one spec per image input is not there yet


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
