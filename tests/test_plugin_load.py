"""Loading the plugin is cheap: no TensorFlow, cv2 or onnx, and no files left behind when unused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("tensorflow", "keras", "cv2", "onnx", "onnxruntime", "tf2onnx")


def test_importing_the_plugin_imports_no_heavy_module() -> None:
    code = (
        "import sys, pytest_cvdnn, pytest_cvdnn.plugin\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_a_pytest_run_that_does_not_use_the_plugin_stays_light(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_light=f"""
        import sys
        def test_nothing_heavy_loaded(request):
            assert request.config.pluginmanager.has_plugin("cvdnn")
            heavy = [m for m in {HEAVY!r} if m in sys.modules]
            assert heavy == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:benchmark", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / ".pytest_cache" / "d" / "cvdnn").exists()


def test_markers_are_registered_under_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.cvdnn(model="whatever.keras")
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest_subprocess("--strict-markers", "-p", "no:randomly")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    "option, message",
    [
        ("--cvdnn-opset=abc", "'abc' is not an integer opset"),
        ("--cvdnn-opset=99", "opset 99 is out of range"),
        ("--cvdnn-layout=nwhc", "'nwhc' is not a layout; use nchw"),
        ("--cvdnn-engine=fast", "'fast' is not a cv2.dnn engine; use auto, opencv or ort (OpenCV 5.1)"),
        ("--cvdnn-atol=-1", "must be a finite number >= 0"),
        ("--cvdnn-preprocess=scale=x", "bad value 'x' for 'scale'"),
    ],
)
def test_invalid_options_are_usage_errors(pytester: pytest.Pytester, option: str, message: str) -> None:
    result = pytester.runpytest_subprocess(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_invalid_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ncvdnn_layout = sideways\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option cvdnn_layout = 'sideways' is invalid*"])


def test_missing_model_is_a_usage_error_naming_the_file(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--cvdnn-model=models/nope.keras")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cvdnn-model: model file 'models/nope.keras' does not exist*Fix:*"])


def test_unknown_extension_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("model.pt").write_bytes(b"x")
    result = pytester.runpytest_subprocess("--cvdnn-model=model.pt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*model.pt has an unknown model extension '.pt'*"])


def test_model_items_work_without_xdist_under_strict_markers(pytester: pytest.Pytester) -> None:
    """The README's main command runs where pytest-xdist is not installed (the keras extra lacks it)."""
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    save(model, str(pytester.path / "relu.onnx"))
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:randomly", "--strict-markers",
                                           "--cvdnn-model=relu.onnx", "-k", "convert or load")
    result.assert_outcomes(passed=2)


def test_factory_modules_and_their_packages_are_collected_without_importing_them(pytester: pytest.Pytester) -> None:
    """A factory's module is a collection argument, and pytest imports collection arguments and packages
    (``__init__.py``) at collection: a factory in a package whose ``__init__`` imports Keras would import
    TensorFlow on every warm run.  Collected without either; a factory inside a test module keeps its tests."""
    boom = "raise RuntimeError('imported at collection')\n"
    pytester.mkpydir("zoo")
    (pytester.path / "zoo" / "__init__.py").write_text(boom)
    (pytester.path / "zoo" / "net.py").write_text(boom + "def build():\n    pass\n")
    pytester.mkpydir("proj")
    (pytester.path / "proj" / "test_m.py").write_text("def test_plain():\n    pass\n\n\ndef build():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--collect-only", "-q", "--cvdnn-model=zoo.net:build",
                                           "--cvdnn-model=proj.test_m:build")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    out = result.stdout.str()
    assert "zoo/net.py::build::convert" in out and "proj/test_m.py::build::convert" in out
    assert "proj/test_m.py::test_plain" in out  # the test module's own tests are still collected
    assert "imported at collection" not in out + result.stderr.str()


def test_the_quick_tier_runs_where_tensorflow_cannot_be_imported() -> None:
    """`pytest -m quick` (README "Development") needs no TensorFlow, Keras or tf2onnx: run it with those made
    unimportable (None in sys.modules makes `import tensorflow` raise ImportError).  The fuzz sessions are left
    out: they run the plugin in subprocesses, which this process's sys.modules does not reach (they run in the
    quick tier itself)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import sys\n"
            "for m in ('tensorflow', 'keras', 'tf2onnx'):\n"
            "    sys.modules[m] = None\n"
            "import pytest\n"
            "sys.exit(pytest.main(['-m', 'quick', '-q', '-p', 'no:cacheprovider', '-p', 'no:randomly',\n"
            "                      '--ignore=tests/test_fuzz.py', 'tests']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout and "error" not in proc.stdout.lower()


def test_junit_message_and_short_summary_carry_the_verdict_and_its_fix(pytester: pytest.Pytester,
                                                                        shared_cache: Path) -> None:
    """Issue 17: JUnit's message attribute (what CI systems show) was "model :: item [+5 more lines ...]" and the
    short summary "FAILED ...::load - model :: ..."; both now carry the one-line verdict with its Fix."""
    import xml.etree.ElementTree as ET

    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8])
    node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name="norm/mvn", axes=[2])
    model = helper.make_model(helper.make_graph([node], "mvn", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(pytester.path / "mvn.onnx"))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-rf", f"--cvdnn-cache-dir={shared_cache}",
                                           "--cvdnn-model=mvn.onnx", "--junitxml=junit.xml", "-k", "load")
    root = ET.parse(pytester.path / "junit.xml")
    failure = next(root.iter("failure"))
    message = failure.get("message") or ""
    first, second = message.splitlines()[:2]
    assert first.startswith("mvn.onnx :: load: cv2.dnn (OpenCV ") and len(first) <= 230, message
    assert "node 'norm/mvn' (op MeanVarianceNormalization) cannot be imported" in first
    assert second.startswith("Fix: ") and "more lines" not in first + second, message  # (JUnit keeps whole lines)
    assert "norm/mvn" in (failure.text or "")  # the details stay in the body
    # the properties carry the verdict, not the record (whose figures made JUnit files megabytes)
    properties = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert properties["cvdnn_check"] == "load" and properties["cvdnn_outcome"] == "failed", properties
    assert properties["cvdnn_message"].startswith("cv2.dnn (OpenCV ") and " Fix: " in properties["cvdnn_message"]
    assert "cvdnn" not in properties and all(len(v or "") < 5000 for v in properties.values())
    summary = [ln for ln in result.stdout.lines if ln.startswith("FAILED mvn.onnx::load")]
    assert summary and "mvn.onnx :: load: cv2.dnn (OpenCV" in summary[0], result.stdout.lines[-5:]  # (trimmed to width)


def test_a_models_folder_that_is_a_symbolic_link_keeps_its_node_ids_and_is_collected_once(
        pytester: pytest.Pytester, tmp_path: Path, shared_cache: Path) -> None:
    """Issue 17: models/ a symbolic link to shared storage (DVC, LFS) gave node ids without a file part
    ("::convert"), and with cvdnn_models in the ini file and no testpaths every model was collected twice."""
    import onnx

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_mutants import base_model

    shared = tmp_path / "shared"
    shared.mkdir()
    onnx.save(base_model(), str(shared / "small.onnx"))
    (pytester.path / "models").symlink_to(shared)
    (pytester.path / "alias").symlink_to(shared)  # a second way to the same file, inside the rootdir
    ids = ["models/small.onnx::" + c for c in ("convert", "ops", "load", "input_spec", "preprocessing", "output_spec",
                                               "parity[onnxruntime-cv2dnn]", "batch", "determinism")]
    given = pytester.runpytest_subprocess("--co", "-q", f"--cvdnn-cache-dir={shared_cache}",
                                          "--cvdnn-model=models/small.onnx")
    assert [ln for ln in given.stdout.lines if "::" in ln] == ids, given.stdout.lines
    pytester.makeini("[pytest]\ncvdnn_models =\n    models/small.onnx\n")
    ini = pytester.runpytest_subprocess("--co", "-q", f"--cvdnn-cache-dir={shared_cache}")
    assert [ln for ln in ini.stdout.lines if "::" in ln] == ids, ini.stdout.lines
