"""Runners from other packages: one registered only through the ``pytest_cvdnn.runners`` entry-point group (a
package made here, on PYTHONPATH with its dist-info) gets its parity items, its place among the references and
its bundle replay with no edit to pytest-cvdnn; OpenVINO, shipped through that same route, is a second reference
for cv2.dnn with its precision set to f32 (default tier)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from conftest import ROOT, side_by_side_package

TINY = ROOT / "examples" / "tiny_cnn.keras"

#: a runner shipped by another package: onnxruntime on the shipped ONNX under another name, declared the
#: farthest reference (nearness 20) and replayable from a bundle
FAKE_RUNNER = '''
from pytest_cvdnn.runners import RunnerSpec
from pytest_cvdnn.runners.onnxruntime import OrtRunner


class Shadow(OrtRunner):
    name = "shadow"


def _make(dep, logits):  # (the outputs and the logits in one pass, as onnxruntime's runner gives them)
    path = dep.probe_path if dep.logit_names else dep.onnx_path
    return dep.stage("shadow", lambda: Shadow(path, outputs=dep.output_names + dep.logit_names,
                                              output_count=len(dep.output_names)))


SPEC = RunnerSpec("shadow", factory=_make, unavailable=lambda dep: "",
                  key=lambda dep, logits: dep.onnx_digest, version=lambda dep: "shadow 1.0",
                  kinds=frozenset({"keras", "onnx", "bundle"}), needs=("conversion",), logits="joint",
                  layout="graph", nearness=20, runs_onnx=True,
                  compared_with={"cv2dnn": "the shadow runtime computes the graph differently from cv2.dnn"})
'''


def _package(folder: Path) -> Path:
    """A package on disk with its metadata: module ``shadow_runner`` and the entry point that registers it."""
    (folder / "shadow_runner").mkdir(parents=True)
    (folder / "shadow_runner" / "__init__.py").write_text(FAKE_RUNNER)
    info = folder / "shadow_runner-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow-runner\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pytest_cvdnn.runners]\nshadow = shadow_runner\n")
    return folder


def _run(cwd: Path, args: list[str], pythonpath: list[Path], cache: Path) -> tuple[int, dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
                           f"--cvdnn-cache-dir={cache}", "--cvdnn-report=r.json", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900, env=env)
    report = json.loads((cwd / "r.json").read_text()) if (cwd / "r.json").is_file() else {}
    checks = report.get("models", [{}])[0].get("checks", {}) if report else {}
    return proc.returncode, checks, proc.stdout + proc.stderr


def test_a_runner_registered_by_entry_point_gets_its_items_its_rank_and_bundle_replay(
        tmp_path: Path, shared_cache: Path) -> None:
    import shutil

    plugin = _package(tmp_path / "site")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(TINY, project / "m.keras")
    ret, checks, text = _run(project, ["--cvdnn-model=m.keras", "--cvdnn-save-bundle=bundles"], [plugin],
                             shared_cache)
    assert ret == 0, text[-3000:]
    order = [name for name in checks if name.startswith("parity[")]
    assert order == ["parity[keras-onnxruntime]", "parity[onnxruntime-cv2dnn]", "parity[keras-cv2dnn]",
                     "parity[shadow-cv2dnn]"], order  # (the declared nearness: the shadow runner last)
    assert checks["parity[shadow-cv2dnn]"]["outcome"] == "passed"
    assert "shadow 1.0" in json.loads((project / "r.json").read_text())["models"][0]["environment"]["runners"][
        "shadow"]
    manifest = json.loads((project / "bundles" / "m.keras" / "manifest.json").read_text())
    assert "shadow" in {ref["runner"] for ref in manifest["references"]}
    # the bundle replays the shadow runner's stored outputs where that package is installed
    ret, checks, text = _run(project, ["--cvdnn-bundle=bundles/m.keras"], [plugin], shared_cache)
    assert ret == 0 and checks["parity[shadow-cv2dnn]"]["outcome"] == "passed", text[-3000:]
    # and where it is not, the bundle still loads (its stored outputs unused): no shadow item
    ret, checks, text = _run(project, ["--cvdnn-bundle=bundles/m.keras"], [], shared_cache)
    assert ret == 0 and "parity[shadow-cv2dnn]" not in checks, text[-3000:]
    # without the package, nothing of it: the built-in items only
    ret, checks, _ = _run(project, ["--cvdnn-model=m.keras"], [], shared_cache)
    assert ret == 0 and not [n for n in checks if "shadow" in n]


def test_a_broken_runner_package_is_named_with_the_fix(tmp_path: Path, shared_cache: Path) -> None:
    import shutil

    plugin = _package(tmp_path / "site")
    (plugin / "shadow_runner" / "__init__.py").write_text("raise ImportError('libshadow.so not found')\n")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(TINY, project / "m.keras")
    ret, _, text = _run(project, ["--cvdnn-model=m.keras"], [plugin], shared_cache)
    assert ret != 0
    assert ("the runner 'shadow' (module shadow_runner, entry-point group pytest_cvdnn.runners) cannot be loaded: "
            "ImportError: libshadow.so not found") in text, text[-3000:]
    assert "Fix: fix or uninstall the package that registers it" in text


HAND_OPENVINO = """
import sys, json, numpy as np, cv2, openvino as ov
path, x = sys.argv[1], np.load(sys.argv[2])
core = ov.Core()
f32 = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
net = cv2.dnn.readNetFromONNX(path)
net.setInput(x)
print(json.dumps({"openvino_vs_cv2": float(np.abs(f32([x])[f32.outputs[0]] - net.forward()).max()),
                  "precision": str(f32.get_property("INFERENCE_PRECISION_HINT"))}))
"""


def test_openvino_is_a_second_reference_for_cv2dnn_at_f32(tmp_path: Path, shared_cache: Path) -> None:
    """With OpenVINO importable (the [openvino] extra), every Keras model gets parity[openvino-cv2dnn], the runner's
    version says its precision, and the hand script (OpenVINO f32 against cv2.dnn on the same ONNX) agrees."""
    import shutil

    site = side_by_side_package("openvino==2026.4.1 openvino-telemetry")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(TINY, project / "m.keras")
    ret, checks, text = _run(project, ["--cvdnn-model=m.keras"], [site], shared_cache)
    assert ret == 0, text[-3000:]
    item = checks["parity[openvino-cv2dnn]"]
    assert item["outcome"] == "passed", item["message"]
    runners = json.loads((project / "r.json").read_text())["models"][0]["environment"]["runners"]
    assert runners["openvino"] == "OpenVINO 2026.4.1 (CPU, inference precision f32)", runners
    import keras

    from conftest import convert

    onnx = convert(keras.saving.load_model(TINY), tmp_path / "tiny.onnx", size=64)  # (by hand: tf2onnx itself)
    sys.path.insert(0, str(ROOT))
    from examples.build_tiny_cnn import make_images

    x = np.ascontiguousarray(make_images(1, seed=3)[0].transpose(0, 3, 1, 2).astype(np.float32))  # (not saturated)
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    hand = subprocess.run([sys.executable, "-c", HAND_OPENVINO, str(onnx), str(tmp_path / "x.npy")], env=env,
                          capture_output=True, text=True, timeout=300)
    found = json.loads(hand.stdout.strip().splitlines()[-1])
    assert "float32" in found["precision"] and found["openvino_vs_cv2"] < 1e-5, found


def test_a_runner_registered_by_entry_point_gets_its_disagreements_localised(tmp_path: Path,
                                                                            shared_cache: Path) -> None:
    """The shadow runner declares it runs the ONNX graph itself (``runs_onnx``): where it disagrees with cv2.dnn,
    onnxruntime says which side is the odd one — on a Resize cv2.dnn rounds differently, OpenCV, localised to the
    node; with a shadow runtime that is itself off (its outputs + 1), the shadow runtime, not OpenCV.  A hand
    script runs onnxruntime and cv2.dnn on the same graph directly."""
    import cv2
    import onnxruntime as ort

    from conftest import resize_ceil_onnx

    project = tmp_path / "project"
    project.mkdir()
    model = resize_ceil_onnx(project / "upsample.onnx")
    x = np.random.default_rng(0).normal(size=(1, 3, 7, 9)).astype(np.float32)
    net = cv2.dnn.readNetFromONNX(str(model))
    net.setInput(x)
    hand = float(np.abs(net.forward() - ort.InferenceSession(str(model)).run(None, {"x": x})[0]).max())
    plugin = _package(tmp_path / "site")
    ret, checks, text = _run(project, ["--cvdnn-model=upsample.onnx", "-k", "parity"], [plugin], shared_cache)
    check = checks["parity[shadow-cv2dnn]"]
    assert (check["outcome"] == "failed") == (hand > 1e-3), (hand, check["message"])
    if hand > 1e-3:  # (what this OpenCV does: the hand script measured ~4 on 5.x)
        assert check["message"].startswith("OpenCV's importer/runtime computes the ONNX graph differently"), check
        assert check["data"]["first_divergent"]["node"] == "block2/upsample", check["data"]
    off = tmp_path / "site-off"
    _package(off)
    code = (off / "shadow_runner" / "__init__.py").read_text().replace(
        '    name = "shadow"\n', '    name = "shadow"\n\n    def infer(self, inputs):\n'
        '        return [o + 1.0 for o in super().infer(inputs)]\n')
    (off / "shadow_runner" / "__init__.py").write_text(code)
    (project / "same.onnx").write_bytes(_agreeing_model())
    ret, checks, text = _run(project, ["--cvdnn-model=same.onnx", "-k", "parity"], [off], shared_cache)
    check = checks["parity[shadow-cv2dnn]"]
    assert checks["parity[onnxruntime-cv2dnn]"]["outcome"] == "passed", text[-2000:]
    assert check["outcome"] == "failed", check
    assert check["message"].startswith("the shadow runtime computes the graph differently from cv2.dnn beyond")
    assert "not localised: onnxruntime agrees with cv2.dnn on this graph, so shadow is the runtime that computes " \
           "it differently" in text, text[-3000:]
    assert "first_divergent" not in check["data"]


def _agreeing_model() -> bytes:
    """Conv + Relu, which onnxruntime and cv2.dnn compute alike."""
    sys.path.insert(0, str(ROOT / "tests"))
    from onnx_mutants import importer_limits_model

    return importer_limits_model("relu").SerializeToString()
