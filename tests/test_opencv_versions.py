"""Every supported OpenCV gives the same diagnosis: 5.1's empty networks, engines, and importers that are gone.

Runs real tf2onnx, onnxruntime and cv2.dnn on the installed OpenCV and, side by side, on the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from conftest import Run, side_by_side
from test_snippets import _python_path

#: OpenCV 5.1 cannot import ReverseSequence (what tf.reverse becomes) and says so only in its log; onnxruntime
#: runs it; 4.x and 5.0 name the node in their error
REVERSE_FACTORY = """
import keras
import tensorflow as tf


def build():
    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = keras.layers.Lambda(lambda t: tf.reverse(t, [1]), name="flip_rows")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="fc")(x), name="reverser")
"""


def _other_versions() -> list[str]:
    """Two OpenCV versions besides the installed one: a 4.x and the other 5.x."""
    import cv2

    return ["4.5.5", "5.0.0" if cv2.__version__.startswith("5.1") else "5.1.0"]


def test_unimportable_node_is_named_on_every_opencv(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                     copy_model: Callable[..., Path], opencv_4_5_5: Path) -> None:
    """5.1 returns an empty network and logs only the op type; the load item still names node, op and fix."""
    import cv2

    mvn = copy_model(models["mvn"])
    targets = _other_versions()
    for version in targets:
        side_by_side(version)  # (a skip with the reason where it cannot be installed)
    run = run_cvdnn(f"--cvdnn-model={mvn.name}", *(f"--cvdnn-target=opencv=={v}" for v in targets), "-k", "load")
    checks = run.checks()
    for version, name in ((cv2.__version__, "load"), *((v, f"load[opencv-{v}]") for v in targets)):
        load = checks[name]
        assert load["outcome"] == "failed", (version, load)
        assert "node 'norm/mvn' (op MeanVarianceNormalization) cannot be imported" in load["message"], load["message"]
        assert load["data"]["node"] == "norm/mvn" and load["data"]["op_type"] == "MeanVarianceNormalization"
        assert "Fix:" in load["message"] and "empty network. Fix" not in load["message"]
        # the repro folder's script reproduces the failure on that OpenCV, as printed
        repro = Path(load["data"]["repro"])
        env = dict(os.environ, PYTHONPATH=_python_path(version))
        proc = subprocess.run([sys.executable, "repro.py"], cwd=repro, capture_output=True, text=True, timeout=120,
                              env=env)
        assert proc.returncode == 1 and f"OpenCV {version}" in proc.stdout, (version, proc.stdout, proc.stderr)
        assert "REPRODUCED: readNetFromONNX" in proc.stderr and "MeanVarianceNormalization" in proc.stderr
    if cv2.__version__.startswith("5.1"):  # the newest OpenCV: no "use a newer OpenCV" advice
        assert "newer OpenCV" not in checks["load"]["message"]
        assert "does not implement it" in checks["load"]["message"]


def test_keras_layer_that_51_cannot_import_is_named_and_the_remedy_search_runs(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    pytester.makepyfile(reverser=REVERSE_FACTORY)
    run = run_cvdnn("--cvdnn-model=reverser:build", "-k", "load or ops or convert")
    checks = run.checks()
    assert checks["convert"]["outcome"] == "passed", checks["convert"]["message"]
    load = checks["load"]
    assert load["outcome"] == "failed"
    assert load["data"]["keras_layer"] == "flip_rows", load["data"]  # the Lambda, named
    assert "Keras layer 'flip_rows'" in load["message"]
    import cv2

    if cv2.__version__.startswith("5.1"):  # an empty network, only the op type in OpenCV's log: the node found
        # by its op type is named with the Keras layer it comes from, in the sentence that blames it
        assert "(op ReverseSequence, Keras layer 'flip_rows') cannot be imported" in load["message"], load["message"]
    remedies = load["data"]["remedies"]
    assert len(remedies) == 8 and all(r["outcome"] == "load failed" for r in remedies), remedies
    assert "blocks every variant" in load["message"]
    ops = checks["ops"]
    assert ops["outcome"] == "failed" and any("flip_rows" in n for u in ops["data"]["unsupported"]
                                               for n in u["nodes"]), ops["data"]


def test_engines_are_checked_against_the_installed_opencv(pytester: pytest.Pytester, models: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """An engine this OpenCV lacks is a usage error before any conversion, naming the engines it has."""
    from pytest_cvdnn.runners.cv2dnn import engines

    have = list(engines())
    cache = tmp_path / "cache"
    missing = next(e for e in ("classic", "opencv") if e not in have)  # 5.0's name on 5.1, 5.1's elsewhere
    result = pytester.runpytest_subprocess(f"--cvdnn-model={models['cnn']}", f"--cvdnn-engine=auto,{missing}",
                                           f"--cvdnn-cache-dir={cache}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stderr.str()
    assert f"--cvdnn-engine=auto,{missing}:" in text and ", ".join(have) in text
    assert not cache.exists()  # nothing converted


def test_several_engines_in_one_session(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                        copy_model: Callable[..., Path]) -> None:
    from pytest_cvdnn.runners.cv2dnn import engine_note, engines

    extra = [e for e in engines() if e != "auto"]
    if not extra:
        pytest.skip("this OpenCV (4.x) has no DNN engines to choose from")
    copy_model(models["cnn"], "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", f"--cvdnn-engine=auto,{','.join(extra)}", "-v")
    checks = run.checks()
    failed = {n for n, c in checks.items() if c["outcome"] == "failed"}
    if "classic" in extra:  # OpenCV 5.0's classic engine: a batch of 4 gives uniform scores after row 0
        assert failed == {"batch[engine-classic]"}, failed  # (measured here; batch=1 works, the item says so)
        assert "a batch of 4 through cv2.dnn differs from 4 single forwards" in checks["batch[engine-classic]"][
            "message"]
    else:
        assert run.ret == 0 and not failed, run.text
    for engine in extra:
        load = checks[f"load[engine-{engine}]"]
        assert load["outcome"] == "passed" and load["engine"] == engine
        parity = checks[f"parity[keras-cv2dnn@engine-{engine}]"]
        assert parity["outcome"] == "passed" and parity["data"]["max_abs"] < 1e-4
        if engine_note(engine):  # ENGINE_ORT in a build without ONNX Runtime: said, not hidden
            assert "falls back from ENGINE_ORT to ENGINE_OPENCV" in load["message"]
    assert checks["load"]["engine"] == "auto" and run.report["models"][0]["environment"]["engine"] == "auto"
    assert f"local engine-{extra[-1]}: OK" in run.text  # the summary's matrix has a cell per engine


def test_ship_this_one_runs_as_printed_on_this_opencv(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                      copy_model: Callable[..., Path]) -> None:
    """The remedy search's "Ship this one" tf2onnx call, pasted: the ONNX it writes loads in this OpenCV and
    matches Keras (on 4.5.5 the search picks opset 11 or 10; on newer ones the current settings)."""
    from test_diagnose import _ship_this_one_runs_as_printed

    copy_model(models["cnn"], "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-fix", "-k", "remedies")
    check = run.checks()["remedies"]
    assert check["outcome"] == "passed", check["message"]
    _ship_this_one_runs_as_printed(check["message"], models["cnn"])


def test_opencv_side_divergence_is_localised_on_a_target(run_cvdnn: Callable[..., Run],
                                                         pytester: pytest.Pytester) -> None:
    """The Resize that cv2.dnn rounds differently (measured by a hand script with readNetFromONNX on the cut graph:
    the Conv before it agrees to 1e-4 on 4.5.5 and 4.12, the Resize differs by ~500) is found on the target's
    OpenCV, not this process's, and the repro folder reproduces it there."""
    from conftest import resize_ceil_onnx

    side_by_side("4.12.0")
    resize_ceil_onnx(pytester.path / "upsample.onnx")
    run = run_cvdnn("--cvdnn-model=upsample.onnx", "--cvdnn-target=opencv==4.12.0", "-k", "parity")
    for version in ("4.12.0",):
        check = run.checks()[f"parity[onnxruntime-cv2dnn@opencv-{version}]"]
        assert check["outcome"] == "failed", check["message"]
        assert check["message"].startswith("OpenCV's importer/runtime computes the ONNX graph differently")
        first = check["data"]["first_divergent"]
        assert first["node"] == "block2/upsample" and first["op_type"] == "Resize", first
        repro = Path(check["data"]["repro"])
        info = json.loads((repro / "repro.json").read_text())
        assert info["versions"]["target_opencv"] == version
        env = dict(os.environ, PYTHONPATH=_python_path(version))
        proc = subprocess.run([sys.executable, "repro.py"], cwd=repro, capture_output=True, text=True, timeout=120,
                              env=env)
        assert f"OpenCV {version}" in proc.stdout, (proc.stdout, proc.stderr)
        printed = float(proc.stdout.strip().splitlines()[-1].split(":")[-1])
        assert printed == pytest.approx(first["stats"]["max_abs"], rel=0.05), (version, printed, first["stats"])
