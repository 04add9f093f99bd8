"""Agreement on the user's own images (--cvdnn-images, the agreement item): the deployed pipeline (cv2.imread,
the blob, cv2.dnn) against the training side (keras.utils.load_img, the model's preprocessing, Keras), image by
image, on labelled images made here (JPEG and PNG, some with an EXIF orientation).  Every figure is compared with a
hand script that does the same work with OpenCV, PIL/Keras and tf2onnx directly (default tier)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import ROOT, Run, convert

sys.path.insert(0, str(ROOT))
from examples.build_tiny_cnn import CLASSES, make_images  # noqa: E402

TINY = ROOT / "examples" / "tiny_cnn.keras"  # (Rescaling at its input: raw 0..255 RGB pixels)


def _write(folder: Path, side: int, suffix: str, count: int = 60, seed: int = 5, orientation: int = 1) -> Path:
    """The example's three classes at ``side`` pixels, one subfolder per class; ``orientation``: the pixels are
    stored turned so that the EXIF orientation tag (6: rotate 90° clockwise to view) shows them upright."""
    import cv2
    from PIL import Image

    images, labels = make_images(count, seed)
    for k, (img, label) in enumerate(zip(images, labels)):
        big = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC) if side != img.shape[0] else img
        (folder / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        path = folder / CLASSES[label] / f"{k:03d}{suffix}"
        if orientation == 6:
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.fromarray(np.ascontiguousarray(np.rot90(big, 1))).save(path, exif=exif, quality=95)
        else:
            cv2.imwrite(str(path), np.ascontiguousarray(big[..., ::-1]))
    return folder


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example model converted by hand (tf2onnx, NCHW), for the hand scripts."""
    import keras

    return convert(keras.saving.load_model(TINY), tmp_path_factory.mktemp("onnx") / "tiny.onnx", size=64)


def _hand(onnx_path: Path, folder: Path, interpolation: str = "nearest", swap: bool = True,
          fix: str | None = None, exif: bool = True) -> dict[str, Any]:
    """Without the plugin: each image through cv2.imread + blobFromImage + cv2.dnn (or the printed fix code) and
    through keras.utils.load_img + the model; the counts that agree, and each side's accuracy."""
    import cv2
    import keras

    model = keras.saving.load_model(TINY)
    net = cv2.dnn.readNetFromONNX(str(onnx_path))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    labels = [CLASSES.index(p.parent.name) for p in files]
    deployed, training = [], []
    for path in files:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR if exif else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if fix is None:
            blob = cv2.dnn.blobFromImage(img, 1.0, (64, 64), (0, 0, 0), swapRB=swap, crop=False)
        else:
            namespace = {"cv2": cv2, "np": np, "img": img}
            exec(fix, namespace)  # (the code the plugin printed, as printed)
            blob = namespace["blob"]
        net.setInput(blob)
        deployed.append(int(net.forward().argmax()))
        array = keras.utils.img_to_array(keras.utils.load_img(str(path), target_size=(64, 64),
                                                              interpolation=interpolation))
        training.append(int(np.asarray(model(array[None])).argmax()))
    d, t, y = np.array(deployed), np.array(training), np.array(labels)
    return {"agree": int((d == t).sum()), "images": len(files), "accuracy_deployed": float((d == y).mean()),
            "accuracy_training": float((t == y).mean())}


def _agreement(run: Run) -> dict[str, Any]:
    check = run.checks()["agreement"]
    return {**check, **check["data"]}


def test_a_deployment_that_reads_what_training_read_agrees_on_every_image(
        run_cvdnn: Callable[..., Run], copy_model: Callable[..., Path], pytester: pytest.Pytester,
        tiny_onnx: Path) -> None:
    """PNG images at the model's size (no resize on either side): 100 % agreement, the same accuracy, as by hand."""
    copy_model(TINY, "m.keras")
    folder = _write(pytester.path / "val", 64, ".png")
    hand = _hand(tiny_onnx, folder)
    assert hand["agree"] == hand["images"] == 60
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-images=val", "-k", "agreement")
    found = _agreement(run)
    assert found["outcome"] == "passed", found["message"]
    assert found["agree"] == 60 and found["images"] == 60 and found["message"].startswith(
        "top-1 agreement 100 % (60/60 images), top-2 agreement 100 %, accuracy ")
    assert found["accuracy_training"] == pytest.approx(hand["accuracy_training"])
    assert found["accuracy_deployed"] == pytest.approx(hand["accuracy_deployed"])
    # warm: both sides' outputs cached by content, the images decoded again: no TensorFlow imported
    pytester.makeconftest("import sys\ndef pytest_sessionfinish(session):\n"
                          "    print('TF-IMPORTED', 'tensorflow' in sys.modules)\n")
    warm = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-images=val", "-k", "agreement", "-s")
    assert "TF-IMPORTED False" in warm.text and _agreement(warm)["agree"] == 60, warm.text[-2000:]


def test_the_resize_that_flips_predictions_is_found_blamed_and_fixed(
        run_cvdnn: Callable[..., Run], copy_model: Callable[..., Path], pytester: pytest.Pytester,
        tiny_onnx: Path) -> None:
    """150x150 JPEGs: blobFromImage resizes bilinearly, load_img by nearest (its default): some stripes change
    class.  The count agrees with a hand script; the resize is blamed (with the training side's resize, every image
    agrees); the printed fix, pasted as printed into the hand script, makes every image agree."""
    copy_model(TINY, "m.keras")
    folder = _write(pytester.path / "val", 150, ".jpg", count=90)
    hand = _hand(tiny_onnx, folder)
    assert hand["agree"] < hand["images"]  # (the case is real: some predictions flip)
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-images=val", "-k", "agreement")
    found = _agreement(run)
    assert found["outcome"] == "failed" and found["agree"] == hand["agree"], (found["message"], hand)
    assert found["message"].startswith(f"top-1 agreement {hand['agree'] / 90 * 100:.4g} % ({hand['agree']}/90 "
                                       "images), below the 99 % agreement required (--cvdnn-min-agreement); the cause "
                                       "is the resize (blobFromImage's resize (bilinear) deployed, PIL's nearest "
                                       "resize on the training side)"), found["message"]
    assert found["stages"][0]["stage"] == "resize" and found["stages"][0]["rate"] == 1.0, found["stages"]
    assert {d["image"] for d in found["disagreeing"]} and all(d["training"] != d["deployed"]
                                                              for d in found["disagreeing"])
    fix = found["fix"]
    assert fix["stage"] == "resize" and fix["passes"] and fix["rate"] == 1.0
    assert hand["agree"] < _hand(tiny_onnx, folder, fix=fix["code"])["agree"] == 90  # (the printed code, by hand)
    assert "it would pass with --cvdnn-min-agreement=" in run.text
    # the training side declared as it is (bilinear): the measure follows it, as by hand
    bilinear = _agreement(run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-images=val", "-k", "agreement",
                                    "--cvdnn-training-loader=load_img:bilinear"))
    assert bilinear["agree"] == _hand(tiny_onnx, folder, interpolation="bilinear")["agree"]
    # the project's own loader (here: PIL's bilinear resize by hand) is the training side it names
    pytester.path.joinpath("loader.py").write_text(
        "import numpy as np\nfrom PIL import Image\n\n\ndef read(path):\n"
        "    return np.asarray(Image.open(path).convert('RGB').resize((64, 64), Image.Resampling.BILINEAR))\n")
    own = _agreement(run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-images=val", "-k", "agreement",
                               "--cvdnn-training-loader=loader.py:read"))
    assert own["agree"] == bilinear["agree"] and own["training_pipeline"]["loader"] == "loader.py:read(path)"
    assert [s["stage"] for s in own["stages"]][0] != "resize"  # (the loader's resize is its own: not swapped)


def test_an_exif_orientation_the_training_side_ignores_is_blamed_on_the_orientation(
        run_cvdnn: Callable[..., Run], copy_model: Callable[..., Path], pytester: pytest.Pytester,
        tiny_onnx: Path) -> None:
    """JPEGs stored turned with EXIF orientation 6: cv2.imread turns them upright, load_img does not (stripes
    become vertical); the orientation is blamed and the fix (IMREAD_IGNORE_ORIENTATION) is what the hand script
    confirms."""
    copy_model(TINY, "m.keras")
    folder = _write(pytester.path / "val", 64, ".jpg", count=45, orientation=6)
    hand = _hand(tiny_onnx, folder)
    assert hand["agree"] < 45
    found = _agreement(run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-images=val", "-k", "agreement"))
    assert found["outcome"] == "failed" and found["agree"] == hand["agree"], found["message"]
    assert found["stages"][0]["stage"] == "orientation", found["stages"]
    assert found["fix"]["code"] == "img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)"
    fixed = _hand(tiny_onnx, folder, exif=False)
    assert found["fix"]["rate"] == pytest.approx(fixed["agree"] / 45)


COLOURS = """
import numpy as np, keras
def build(seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 600)
    x = rng.uniform(0, 90, (600, 32, 32, 3)).astype("float32")
    x[np.arange(600), :, :, labels] += rng.uniform(120, 165, 600)[:, None, None]
    inp = keras.Input((32, 32, 3), name="image")
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.Dense(16, activation="relu")(h))
    model = keras.Model(inp, out, name="colours")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, labels, epochs=40, batch_size=64, verbose=0)
    return model
"""


def test_swapped_channels_collapse_the_agreement(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """A model that tells red, green and blue pictures apart, deployed with swapRB=False: red and blue trade places,
    the agreement collapses (the count as by hand), the colour stage is blamed, and the fix swaps the channels."""
    import cv2
    import keras

    namespace: dict[str, Any] = {}
    exec(COLOURS, namespace)
    model = namespace["build"]()
    model.save(pytester.path / "colours.keras")
    rng = np.random.default_rng(3)
    names = ("0-red", "1-green", "2-blue")  # (classes are numbered in sorted folder order, as Keras does)
    for k in range(30):
        label = k % 3
        rgb = rng.uniform(0, 90, (48, 48, 3))
        rgb[..., label] += rng.uniform(120, 165)
        (pytester.path / "val" / names[label]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(pytester.path / "val" / names[label] / f"{k:02d}.png"), rgb.astype(np.uint8)[..., ::-1])
    run = run_cvdnn("--cvdnn-model=colours.keras", "--cvdnn-images=val", "--cvdnn-preprocess=none,swap_rb=0",
                    "-k", "agreement")
    found = _agreement(run)
    files = sorted((pytester.path / "val").rglob("*.png"))
    deployed = [int(np.asarray(model(cv2.resize(cv2.imread(str(p)), (32, 32))[None].astype("float32"))).argmax())
                for p in files]  # (BGR fed: what swapRB=False deploys)
    training = [int(np.asarray(model(keras.utils.img_to_array(keras.utils.load_img(str(p), target_size=(32, 32)))[
        None])).argmax()) for p in files]
    agree = sum(a == b for a, b in zip(deployed, training))
    assert agree <= 12  # (the case is real: only green keeps its class)
    assert found["outcome"] == "failed" and found["agree"] == agree, found["message"]
    assert found["accuracy_drop"] > 0.5 and "the accuracy drops by" in found["message"]
    assert found["stages"][0]["stage"] == "colour" and found["stages"][0]["rate"] == 1.0
    assert "swapRB=True" in found["fix"]["code"] and found["fix"]["passes"]


@pytest.mark.zoo  # (a target's child and a project's own session: ~70 s)
def test_agreement_is_measured_per_target_and_from_a_projects_own_test(
        run_cvdnn: Callable[..., Run], copy_model: Callable[..., Path], pytester: pytest.Pytester,
        shared_cache: Path) -> None:
    """agreement[opencv-4.8.1] runs the deployed side on that OpenCV; cvdnn_model.agreement(folder) gives the same
    measure in a project's test, with its own threshold."""
    from conftest import side_by_side

    side_by_side("4.8.1")
    copy_model(TINY, "m.keras")
    _write(pytester.path / "val", 150, ".jpg", count=30)
    pytester.makepyfile(test_own="""
import pytest

@pytest.mark.cvdnn(model="m.keras")
def test_release(cvdnn_model):
    result = cvdnn_model.agreement("val", min_agreement=0.5, max_accuracy_drop=0.5)
    assert result.data["images"] == 30 and result.data["rate"] >= 0.5
    with pytest.raises(Exception, match="below the 100 % agreement required"):
        cvdnn_model.agreement("val", min_agreement=1.0)
""")
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-images=val", "--cvdnn-target=opencv==4.8.1", "-k", "agreement",
                    "--cvdnn-min-agreement=0.5", "--cvdnn-max-accuracy-drop=0.5")
    checks = run.checks()
    local, target = checks["agreement"], checks["agreement[opencv-4.8.1]"]
    assert local["outcome"] == target["outcome"] == "passed", (local["message"], target["message"])
    assert "cv2.dnn opencv-4.8.1" in target["message"] and local["data"]["agree"] == target["data"]["agree"]
    own = pytester.runpytest_subprocess("-p", "no:randomly", "test_own.py", "--cvdnn-images=val",
                                        f"--cvdnn-cache-dir={shared_cache}", timeout=900)
    assert own.ret == 0, own.stdout.str()[-3000:]


def test_a_model_whose_output_is_a_map_is_skipped_with_why(run_cvdnn: Callable[..., Run],
                                                          pytester: pytest.Pytester) -> None:
    """Agreement compares classes: a segmenter's (N, H, W, C) map is not judged as one vector of H*W*C classes."""
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 3))
    keras.Model(inp, keras.layers.Conv2D(2, 1, name="mask")(keras.layers.Rescaling(1 / 255.0)(inp))).save(
        pytester.path / "seg.keras")
    _write(pytester.path / "val", 32, ".png", count=6)
    check = run_cvdnn("--cvdnn-model=seg.keras", "--cvdnn-images=val", "-k", "agreement").checks()["agreement"]
    assert check["outcome"] == "skipped" and "has shape" in check["message"] and "agreement compares the classes " \
        "a classifier predicts" in check["message"], check["message"]
