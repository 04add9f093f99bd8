"""The agreement measure, the image sets and the pipelines' stages, without a model (quick tier)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from pytest_cvdnn.agreement import classes_of, measure
from pytest_cvdnn.errors import CvdnnError
from pytest_cvdnn.pipelines import Loader, _orient, parse_loader, read_image_set


def test_agreement_counts_top1_topk_accuracy_and_confusion() -> None:
    training = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.8, 0.1, 0.0], [0.1, 0.2, 0.7, 0.0], [0.6, 0.3, 0.1, 0.0]])
    deployed = np.array([[0.6, 0.3, 0.1, 0.0], [0.5, 0.4, 0.1, 0.0], [0.1, 0.2, 0.7, 0.0], [0.3, 0.6, 0.1, 0.0]])
    result = measure(training, deployed, labels=[0, 1, 2, 0], k=2)
    assert (result.same, result.count, result.rate) == (2, 4, 0.5)
    assert result.same_topk == 4 and result.k == 2  # (the training class is second on the deployed side twice)
    assert result.accuracy("training") == 1.0 and result.accuracy("deployed") == 0.5
    assert result.accuracy_drop == pytest.approx(0.5)
    assert result.confusion == ((1, 0, 1), (0, 1, 1)) and result.disagreeing == [1, 3]
    assert result.problems(0.5, 0.5) == []  # (at the thresholds: passes)
    assert result.problems(0.51, 0.5) == ["below the 51 % agreement required (--cvdnn-min-agreement)"]
    assert result.problems(0.5, 0.2) == ["the accuracy drops by 50 points, more than the 20 allowed "
                                         "(--cvdnn-max-accuracy-drop)"]
    assert measure(training, deployed).accuracy_drop is None and measure(training, deployed).problems(1, 0)


def test_one_probability_is_two_classes_and_shapes_must_match() -> None:
    assert classes_of(np.array([[0.2], [0.7], [0.5]])).tolist() == [0, 1, 0]
    result = measure(np.array([[0.2], [0.7]]), np.array([[0.4], [0.4]]))
    assert (result.same, result.k) == (1, 1)
    with pytest.raises(CvdnnError, match=r"outputs differ in shape: \(2, 2\) \(training side\) and \(2, 3\)"):
        measure(np.zeros((2, 2)), np.zeros((2, 3)))


def test_loaders_parse_as_written() -> None:
    assert parse_loader("load_img") == Loader("load_img", "nearest")
    assert parse_loader("load_img:bilinear") == Loader("load_img", "bilinear")
    assert parse_loader("tools/load.py:read") == Loader("callable", target="tools/load.py:read")
    for wrong, why in (("load_img:linear", "load_img has no interpolation 'linear'"),
                       ("tf.data", "is not a training-side loader")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            parse_loader(wrong)


def test_image_sets_by_subfolder_csv_or_unlabelled(tmp_path: Path) -> None:
    import cv2

    image = np.zeros((8, 8, 3), np.uint8)
    for name in ("cat/a.png", "cat/b.jpg", "dog/c.png"):
        (tmp_path / "sub" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "sub" / name), image)
    found = read_image_set(tmp_path / "sub")
    assert [found.name(k) for k in range(3)] == ["cat/a.png", "cat/b.jpg", "dog/c.png"]
    assert found.labels == (0, 0, 1) and found.classes == ("cat", "dog")
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("x.png", "y.png"):
        cv2.imwrite(str(flat / name), image)
    assert read_image_set(flat).labels is None
    (flat / "labels.csv").write_text("file,label\nx.png,zebra\ny.png,ant\n")
    assert (read_image_set(flat).labels, read_image_set(flat).classes) == ((1, 0), ("ant", "zebra"))
    (flat / "labels.csv").write_text("x.png,3\n")
    with pytest.raises(CvdnnError, match="has no label for y.png"):
        read_image_set(flat)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CvdnnError, match="holds no images"):
        read_image_set(tmp_path / "empty")
    before = found.digest()
    cv2.imwrite(str(tmp_path / "sub" / "dog" / "c.png"), image + 1)  # (one image changed: another digest)
    assert read_image_set(tmp_path / "sub").digest() != before


def test_exif_orientations_turn_as_cv2_imread_turns_them(tmp_path: Path) -> None:
    """Each EXIF orientation applied to the stored pixels gives what cv2.imread (which applies it) reads."""
    import cv2
    from PIL import Image

    stored = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    for tag in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = tag
        path = tmp_path / f"o{tag}.png"
        Image.fromarray(stored[..., ::-1]).save(path, exif=exif)
        read = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert np.array_equal(_orient(stored, tag), read), tag
