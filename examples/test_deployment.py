"""How a project writes its own deployment tests with pytest-cvdnn's fixtures and marker.

Run with:  pytest examples/test_deployment.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_cvdnn import InputSpec

HERE = Path(__file__).parent
TINY = str(HERE / "tiny_cnn.keras")


@pytest.mark.cvdnn(model=TINY, input_spec="none,size=64x64", atol=1e-4, rtol=1e-3)
def test_tiny_cnn_matches_keras_in_cv2dnn(cvdnn_model, assert_parity):
    stats = assert_parity("keras", "cv2dnn")
    assert stats.max_abs < 1e-4


@pytest.mark.cvdnn(model=TINY)
def test_tiny_cnn_classifies_a_generated_disc_the_same(cvdnn_model, input_spec):
    from examples.build_tiny_cnn import make_images

    images, labels = make_images(8, seed=7)
    bgr = [img[..., ::-1].copy() for img in images]  # what cv2.imread would give
    import cv2

    blob = cv2.dnn.blobFromImages(bgr, 1.0, input_spec.size, (0, 0, 0), swapRB=True)
    net = cvdnn_model.net
    net.setInput(blob)
    probs = net.forward()
    keras_probs = cvdnn_model.run("keras", [images.astype(np.float32)])[0]
    assert (probs.argmax(1) == keras_probs.argmax(1)).all()
    assert (probs.argmax(1) == labels).mean() >= 0.75


@pytest.mark.cvdnn(model="examples.models:densenet121", input_spec=InputSpec.from_keras_mode("torch"))
def test_densenet121_seed_case(cvdnn_model, assert_parity):
    """The seed case: DenseNet121 (weights=None, seeded) converted, loaded and matched end to end."""
    assert cvdnn_model.input_spec.size == (224, 224)
    assert_parity("keras", "onnxruntime")
    result = assert_parity("onnxruntime", "cv2dnn")
    assert result.min_cosine > 0.9999
