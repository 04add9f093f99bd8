"""Where cv2.dnn computes (``--cvdnn-device``): every cv2.dnn item again per device, a device this machine lacks
skipped with the reason its OpenCV gives, and the printed deployment code (readNet + setPreferableBackend/Target)
run on every supported OpenCV.  Each verdict is compared with a hand script asking OpenCV directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: asks an OpenCV, without the plugin, which DNN targets its OpenCV backend offers (and which constants it has)
HAND = """
import json, cv2
d = cv2.dnn
print(json.dumps({"offered": [int(t) for t in d.getAvailableTargets(d.DNN_BACKEND_OPENCV)],
                  "names": {n: int(getattr(d, n)) for n in dir(d) if n.startswith("DNN_TARGET_")}}))
"""


def _hand(python_path: str | None) -> dict[str, Any]:
    env = dict(os.environ, **({"PYTHONPATH": python_path} if python_path else {}))
    done = subprocess.run([sys.executable, "-c", HAND], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _model(path: Path) -> Path:
    import onnx

    from onnx_mutants import importer_limits_model

    onnx.save(importer_limits_model("relu"), str(path))  # (Conv + Relu, dynamic batch: every OpenCV reads it)
    return path


def test_a_device_this_machine_lacks_is_skipped_with_why_and_one_it_has_is_checked(
        run_cvdnn: Callable[..., Any], pytester: pytest.Pytester, opencv_4_5_5: Path) -> None:
    """cpu (first: every item) and opencl_fp16, cpu_fp16 (items again per device, here and on OpenCV 4.5.5):
    each item of a device is skipped exactly when the hand script says that OpenCV does not offer it, with
    OpenCV's own answer; 4.5.5 has no DNN_TARGET_CPU_FP16 constant at all; the cpu items pass."""
    _model(pytester.path / "m.onnx")
    run = run_cvdnn("--cvdnn-model=m.onnx", "--cvdnn-device=cpu,opencl_fp16,cpu_fp16",
                    "--cvdnn-target=opencv==4.5.5")
    checks = run.checks()
    local, old = _hand(None), _hand(str(opencv_4_5_5))
    assert checks["load"]["outcome"] == "passed", run.text
    assert checks["load"]["data"]["device"] == "cpu"
    assert "net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)" in checks["load"]["message"]
    for device, target in (("opencl_fp16", "DNN_TARGET_OPENCL_FP16"), ("cpu_fp16", "DNN_TARGET_CPU_FP16")):
        for where, hand, label in ((f"device-{device}", local, "5.1"), (f"opencv-4.5.5+device-{device}", old, "4.5.5")):
            item = checks[f"load[{where}]"]
            has = target in hand["names"] and hand["names"][target] in hand["offered"]
            assert item["outcome"] == ("passed" if has else "skipped"), (where, item["message"])
            assert item.get("device", device) == device and item["extra_device"]
            if not has and target in hand["names"]:
                assert "getAvailableTargets(DNN_BACKEND_OPENCV) offers DNN_TARGET_CPU" in item["message"], item
            if not has:
                assert item["message"].startswith(f"device {device} is not checked here: "), item["message"]
    assert "OpenCV 4.5.5 has no DNN_TARGET_CPU_FP16" in checks["load[opencv-4.5.5+device-cpu_fp16]"]["message"]
    parity = [name for name in checks if name.startswith("parity[") and "device-" in name]
    assert parity and all(checks[n]["outcome"] == checks[n.replace("parity[onnxruntime-cv2dnn@", "load[")]["outcome"]
                          for n in parity)
    assert "local device-opencl_fp16: SKIP" in run.text  # (the summary's row per device)
    assert not any(name.startswith("ops[") and "device-" in name for name in checks)  # (import support: no device)
    assert run.ret == 0, run.text


def test_an_unknown_device_is_a_usage_error_naming_the_known_ones(run_cvdnn: Callable[..., Any],
                                                                   pytester: pytest.Pytester) -> None:
    _model(pytester.path / "m.onnx")
    run = run_cvdnn("--cvdnn-model=m.onnx", "--cvdnn-device=cpu,gpu", report=False)
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    assert "argument --cvdnn-device: 'gpu' is not a cv2.dnn device; use one of cpu, cpu_fp16, opencl" in run.text


CHILD = """
import json, sys
import numpy as np, cv2
code, x = sys.argv[1], np.load(sys.argv[2])
namespace = {"cv2": cv2, "np": np}
exec(compile(code, "<pasted>", "exec"), namespace)
net = namespace["net"]
net.setInput(x)
print(json.dumps({"opencv": cv2.__version__, "out": net.forward().tolist()}))
"""


def test_the_printed_net_code_runs_on_every_supported_opencv_and_gives_the_checked_outputs(
        run_cvdnn: Callable[..., Any], pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The load item's deployment code (readNetFromONNX, setPreferableBackend/Target), pasted as printed into a
    namespace holding only cv2 and np, on 4.5.5 ... 5.1: its forward matches onnxruntime on the same input."""
    import onnxruntime as ort

    from test_snippets import SUPPORTED, _python_path

    model = _model(pytester.path / "m.onnx")
    run = run_cvdnn("--cvdnn-model=m.onnx", "-k", "load")
    code = run.checks()["load"]["data"]["code"]
    assert run.checks()["load"]["message"].endswith(f"deployment code: {code}")
    assert code.startswith(f"net = cv2.dnn.readNetFromONNX({str(model)!r}); net.setPreferableBackend(")
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for version in SUPPORTED:
        env = dict(os.environ, PYTHONPATH=_python_path(version))
        done = subprocess.run([sys.executable, "-c", CHILD, code, str(tmp_path / "x.npy")], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, (version, done.stderr[-800:])
        got = json.loads(done.stdout.strip().splitlines()[-1])
        assert got["opencv"] == version
        assert np.allclose(np.array(got["out"], np.float32), want, rtol=1e-4, atol=1e-5), version


def test_a_projects_own_test_runs_on_the_device_its_marker_names(run_cvdnn: Callable[..., Any],
                                                                 pytester: pytest.Pytester) -> None:
    """@pytest.mark.cvdnn(device=...): the fixture's net computes there (cpu: its outputs are the load item's), and
    a device this machine lacks skips the test with OpenCV's answer (as the hand script sees it)."""
    _model(pytester.path / "m.onnx")
    pytester.makepyfile(test_own="""
        import numpy as np
        import pytest

        @pytest.mark.cvdnn(model="m.onnx", device="cpu")
        def test_on_cpu(cvdnn_model):
            x = np.ones((1, 3, 8, 8), np.float32)
            out = cvdnn_model.run("cv2dnn", [x.transpose(0, 2, 3, 1)])[0]
            assert out.shape[0] == 1 and cvdnn_model.settings.device == "cpu"

        @pytest.mark.cvdnn(model="m.onnx", device="opencl_fp16")
        def test_on_opencl_fp16(cvdnn_model):
            cvdnn_model.run("cv2dnn")
    """)
    run = run_cvdnn("test_own.py", "-rs", report=False)
    hand = _hand(None)
    offered = hand["names"].get("DNN_TARGET_OPENCL_FP16") in hand["offered"]
    run.result.assert_outcomes(passed=1 + offered, skipped=1 - offered)
    if not offered:
        assert "cvdnn_model: device opencl_fp16 is not checked here: this machine's OpenCV" in run.text, run.text
