"""Golden bundles: written where TensorFlow is, checked where only pytest, numpy and OpenCV are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from conftest import ROOT, Run


@pytest.fixture(scope="session")
def opencv_only_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with pytest, numpy, OpenCV and this package (no deps): no TF, onnx, onnxruntime."""
    import os

    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    proc = subprocess.run([*pip, "pytest", "numpy", "opencv-python-headless<5.2", "filelock"], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:  # no package index here: say so (CI, with CVDNN_REQUIRE_TARGETS=1, fails instead)
        if os.environ.get("CVDNN_REQUIRE_TARGETS"):
            raise AssertionError(proc.stderr)
        pytest.skip(f"an OpenCV-only virtual environment cannot be installed here: {proc.stderr.strip()[-300:]}")
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True, timeout=900)
    return venv / "bin" / "python"


def _save(run_cvdnn: Callable[..., Run], model: str, folder: str = "bundles") -> Run:
    run = run_cvdnn(f"--cvdnn-model={model}", f"--cvdnn-save-bundle={folder}", "-k", "convert or bundle")
    assert run.ret == 0, run.text
    return run


@pytest.mark.zoo  # (a fresh virtual environment and a pip install: ~25 s)
def test_bundle_runs_where_only_opencv_is_installed(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                    copy_model: Callable[..., Path], pytester: pytest.Pytester,
                                                    opencv_only_venv: Path) -> None:
    copy_model(ROOT / "examples" / "tiny_cnn.keras", "m.keras")  # (Rescaling: its preprocessing is known)
    run = _save(run_cvdnn, "m.keras")
    assert "pytest --cvdnn-bundle=" in run.checks()["bundle"]["message"]
    folder = pytester.path / "bundles" / "m.keras"
    assert {"manifest.json", "model.onnx", "probe.onnx", "inputs.npz", "photos.npz", "reference_tensor.npz",
            "reference_keras_resize.npz"} <= {p.name for p in folder.iterdir()}
    probe = subprocess.run([str(opencv_only_venv), "-c", "import importlib.util as u; print([m for m in "
                            "('tensorflow', 'onnx', 'onnxruntime', 'tf2onnx', 'keras') if u.find_spec(m)])"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"  # the venv truly lacks them
    proc = subprocess.run([str(opencv_only_venv), "-m", "pytest", "--cvdnn-bundle=bundles", "-v", "-p",
                           "no:cacheprovider"], cwd=pytester.path, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for check in ("verify", "load", "input_spec", "preprocessing", "output_spec", "parity[onnxruntime-cv2dnn]",
                  "parity[keras-cv2dnn]", "batch", "determinism"):
        assert f"manifest.json::{check} PASSED" in out, check


def test_tampered_bundle_is_reported(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                     copy_model: Callable[..., Path], pytester: pytest.Pytester) -> None:
    copy_model(models["cnn"], "m.keras")
    _save(run_cvdnn, "m.keras")
    onnx_file = pytester.path / "bundles" / "m.keras" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-10] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    run = run_cvdnn("--cvdnn-bundle=bundles")
    assert run.ret == 1
    checks = run.checks()
    assert checks["verify"]["outcome"] == "failed"
    assert "model.onnx has changed (checksum" in checks["verify"]["message"]
    assert checks["load"]["outcome"] == "skipped" and "corrupted or was changed" in checks["load"]["message"]


def test_regenerating_never_overwrites_another_models_bundle(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                             copy_model: Callable[..., Path],
                                                             pytester: pytest.Pytester) -> None:
    copy_model(models["cnn"], "m.keras")
    _save(run_cvdnn, "m.keras")
    manifest = (pytester.path / "bundles" / "m.keras" / "manifest.json").read_text()
    _save(run_cvdnn, "m.keras")  # same model: regenerated in place
    copy_model(models["other"], "m.keras")  # another model under the same name
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-save-bundle=bundles", "-k", "bundle")
    assert run.ret == 1
    assert "already holds a bundle of another model" in run.checks()["bundle"]["message"]
    assert (pytester.path / "bundles" / "m.keras" / "manifest.json").read_text() == manifest


def test_a_bundle_replays_per_device_and_is_not_quantized_unseen(run_cvdnn: Callable[..., Run],
                                                                  models: dict[str, Path],
                                                                  copy_model: Callable[..., Path]) -> None:
    """--cvdnn-device applies to a replayed bundle (its cv2.dnn items again per device, skipped where this
    machine's OpenCV does not offer the device, as getAvailableTargets says); --cvdnn-quantize cannot (no float
    ONNX to quantize in a bundle) and is refused instead of being left out unseen."""
    import cv2

    copy_model(models["cnn"], "m.keras")
    _save(run_cvdnn, "m.keras")
    run = run_cvdnn("--cvdnn-bundle=bundles", "--cvdnn-device=cpu,opencl_fp16", "-k", "load")
    checks = run.checks()
    offered = cv2.dnn.DNN_TARGET_OPENCL_FP16 in cv2.dnn.getAvailableTargets(cv2.dnn.DNN_BACKEND_OPENCV)
    assert checks["load"]["outcome"] == "passed", run.text
    assert checks["load[device-opencl_fp16]"]["outcome"] == ("passed" if offered else "skipped"), run.text
    run = run_cvdnn("--cvdnn-bundle=bundles", "--cvdnn-quantize=fp16", report=False)
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    assert "--cvdnn-quantize=fp16: a bundle replays the ONNX it holds against its stored references, so there is " \
           "no float ONNX to quantize" in run.text


def test_missing_bundle_is_a_usage_error(pytester: pytest.Pytester) -> None:
    (pytester.path / "empty").mkdir()
    result = pytester.runpytest_subprocess("--cvdnn-bundle=empty")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cvdnn-bundle=empty: no bundle there*--cvdnn-save-bundle*"])


def test_bundle_replay_where_cv2_diverges_from_the_stored_references(run_cvdnn: Callable[..., Run],
                                                                      models: dict[str, Path],
                                                                      copy_model: Callable[..., Path],
                                                                      pytester: pytest.Pytester) -> None:
    """A bundle travels to a machine whose cv2.dnn computes a node differently (the Resize with nearest_mode=ceil:
    a hand script with readNetFromONNX differs from onnxruntime by ~270 on 5.x and ~800 on 4.12): the replay
    fails parity against the *stored* onnxruntime outputs, blames OpenCV and names the node, here and on a
    target OpenCV; a correct bundle replayed on a target passes."""
    from conftest import resize_ceil_onnx, side_by_side

    side_by_side("4.12.0")
    resize_ceil_onnx(pytester.path / "upsample.onnx")
    _save(run_cvdnn, "upsample.onnx")
    run = run_cvdnn("--cvdnn-bundle=bundles", "--cvdnn-target=opencv==4.12.0")
    checks = run.checks()
    assert checks["verify"]["outcome"] == "passed"  # the files are intact: the fault is OpenCV's
    for name in ("parity[onnxruntime-cv2dnn]", "parity[onnxruntime-cv2dnn@opencv-4.12.0]"):
        check = checks[name]
        assert check["outcome"] == "failed", (name, check["message"])
        assert check["message"].startswith("OpenCV's importer/runtime computes the ONNX graph differently"), name
        assert check["data"]["first_divergent"]["node"] == "block2/upsample", (name, check["data"])
    # the same bundle format, a model cv2.dnn runs right: every replayed item passes on the target too
    copy_model(models["cnn"], "m.keras")
    _save(run_cvdnn, "m.keras", folder="good")
    run = run_cvdnn("--cvdnn-bundle=good", "--cvdnn-target=opencv==4.12.0")
    assert run.ret == 0, run.text
    checks = run.checks()
    assert checks["parity[keras-cv2dnn@opencv-4.12.0]"]["outcome"] == "passed"
    assert checks["parity[onnxruntime-cv2dnn@opencv-4.12.0]"]["outcome"] == "passed"
    assert run.report["models"][0]["environment"]["target"] == "opencv-4.12.0"
    runners = run.report["models"][0]["environment"]["runners"]  # (of the target's items, as "target" says)
    assert runners["cv2dnn"].startswith("cv2.dnn of OpenCV 4.12.0") and "opencv-4.12.0" in runners["cv2dnn"]
    assert runners["keras"].startswith("replayed from the bundle (Keras ")


def test_hostile_bundles_are_usage_errors_that_open_nothing_outside(run_cvdnn: Callable[..., Run],
                                                                   models: dict[str, Path],
                                                                   copy_model: Callable[..., Path],
                                                                   pytester: pytest.Pytester) -> None:
    """A manifest that is not what pytest-cvdnn writes, or that points outside its folder (a path, or a
    symbolic link with the right checksum), is one usage error naming the field — never an INTERNALERROR, and
    the outside file is never hashed or named (its digest does not appear anywhere)."""
    import hashlib
    import json
    import shutil

    copy_model(models["cnn"], "m.keras")
    _save(run_cvdnn, "m.keras")
    good = pytester.path / "bundles" / "m.keras"
    secret = pytester.path / "secret.bin"
    secret.write_bytes(b"not for the bundle")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    manifest = json.loads((good / "manifest.json").read_text())

    def variant(name: str, edit: Callable[[dict], object]) -> Path:
        folder = pytester.path / name / "m.keras"
        shutil.copytree(good, folder)
        edited = edit(json.loads(json.dumps(manifest)))
        (folder / "manifest.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
        return folder

    cases = {
        "notjson": (variant("notjson", lambda m: "{"), "cannot be read as JSON"),
        "atol": (variant("atol", lambda m: {**m, "settings": {**m["settings"], "atol": "abc"}}),
                 "'settings.atol' is 'abc'"),
        "escape": (variant("escape", lambda m: {**m, "files": {**m["files"], f"../../{secret.name}": digest}}),
                   f"the file name '../../{secret.name}' is not a plain file name"),
    }
    linked = variant("linked", lambda m: m)
    (linked / "probe.onnx").unlink()
    shutil.copyfile(good / "probe.onnx", secret)  # the right bytes, outside the bundle
    (linked / "probe.onnx").symlink_to(secret)
    cases["linked"] = (linked, "the file 'probe.onnx' is a symbolic link")
    for name, (folder, field) in cases.items():
        run = run_cvdnn(f"--cvdnn-bundle={folder.parent.name}", report=False)
        assert run.ret == pytest.ExitCode.USAGE_ERROR, (name, run.text)
        assert f"--cvdnn-bundle: the bundle {folder} has an invalid manifest.json: " in run.text, (name, run.text)
        assert field in run.text and "INTERNALERROR" not in run.text and "Traceback" not in run.text, run.text
        assert digest not in run.text and digest[:12] not in run.text
