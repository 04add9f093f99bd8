"""Plugin sessions on hostile inputs that need no TensorFlow (ONNX models, fake SavedModel folders): the user's
files are never changed, no option makes the gate vacuous, a broken graph never passes, a graph that runs for
ever fails within its limit, damaged cache entries are rebuilt.  Default tier (each is a whole pytest session);
the unit tests of the same rules are in the quick tier (test_ownership.py, test_gate_integrity.py,
test_cache_healing.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from onnx_mutants import base_model
from pytest_cvdnn.ownership import MARKER, owned_report
from test_gate_integrity import _endless_loop, _mutant, _png_header, _save
from test_ownership import _project, _run, _tree


@pytest.mark.parametrize("case", ["bundle-root-holds-savedmodel", "bundle-root-is-project-from-inside",
                                  "report-is-the-model", "html-is-the-model", "report-is-a-user-file",
                                  "bundle-dest-is-a-user-folder", "report-is-the-rootdir"])
def test_a_destination_the_user_owns_is_a_usage_error_and_nothing_changes(case: str, tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "bundles" / "small.onnx").mkdir(parents=True)
    (project / "bundles" / "small.onnx" / "handmade.txt").write_text("the user's own folder")
    (project / "results.json").write_text('{"accuracy": 0.9}')
    cache = tmp_path / "cache"
    cwd, args, words = {
        "bundle-root-holds-savedmodel": (project, ["--cvdnn-model=export", "--cvdnn-save-bundle=."],
                                         ["--cvdnn-save-bundle", "export", "is the session's input"]),
        "bundle-root-is-project-from-inside": (project / "export" / "variables",
                                               ["--cvdnn-model=..", f"--cvdnn-save-bundle={project}"],
                                               ["--cvdnn-save-bundle", "is the session's input"]),
        "report-is-the-model": (project, ["--cvdnn-model=small.onnx", "--cvdnn-report=small.onnx"],
                                ["--cvdnn-report", "small.onnx", "is the session's input"]),
        "html-is-the-model": (project, ["--cvdnn-model=small.onnx", "--cvdnn-html=small.onnx"],
                              ["--cvdnn-html", "is the session's input"]),
        "report-is-a-user-file": (project, ["--cvdnn-model=small.onnx", "--cvdnn-report=results.json"],
                                  ["--cvdnn-report", "not a report pytest-cvdnn wrote"]),
        "bundle-dest-is-a-user-folder": (project, ["--cvdnn-model=small.onnx", "--cvdnn-save-bundle=bundles"],
                                         ["not written by pytest-cvdnn", MARKER]),
        "report-is-the-rootdir": (project, ["--cvdnn-model=small.onnx", f"--cvdnn-html={project}"],
                                  ["--cvdnn-html", "it holds"]),
    }[case]
    before = _tree(project)
    result = _run(cwd, *args, cache=cache)
    text = result.stdout + result.stderr
    assert result.returncode == 4, text  # a usage error, before any work
    first = next(line for line in text.splitlines() if "will not write" in line)
    assert all(w in first for w in words) and "Fix:" in first, first
    assert _tree(project) == before



def test_bundles_from_inside_a_savedmodel_leave_other_bundles_alone(tmp_path: Path) -> None:
    """`--cvdnn-model=.` from inside the model: the bundle is named after the model's folder, not the root."""
    from pytest_cvdnn.bundle import bundle_folder

    project = _project(tmp_path)
    (project / "bundles" / "other").mkdir(parents=True)
    (project / "bundles" / "other" / "manifest.json").write_text('{"format": 1, "files": {}}')
    assert bundle_folder(project / "bundles", ".", project / "export") == project / "bundles" / "export"
    before = _tree(project)
    result = _run(project / "export", "--cvdnn-model=.", "--cvdnn-save-bundle=../bundles", cache=tmp_path / "cache")
    text = result.stdout + result.stderr
    assert result.returncode == 1, text  # the fake SavedModel cannot load: its items fail, nothing is written
    assert "INTERNALERROR" not in text
    assert _tree(project) == before



def test_a_bundle_is_written_beside_the_model_and_regenerated_in_place(tmp_path: Path) -> None:
    project = _project(tmp_path)
    cache = tmp_path / "cache"
    before = _tree(project)
    for _ in range(2):  # the second run replaces the plugin's own bundle
        result = _run(project, "--cvdnn-model=small.onnx", "--cvdnn-save-bundle=bundles",
                      "--cvdnn-report=report.json", "--cvdnn-html=report.html", cache=cache)
        assert result.returncode == 0, result.stdout + result.stderr
    bundle = project / "bundles" / "small.onnx"
    assert (bundle / MARKER).is_file() and (bundle / "manifest.json").is_file()
    after = _tree(project)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing the user had changed
    assert owned_report(project / "report.json") and owned_report(project / "report.html")
    assert [p for p in project.rglob(".cvdnn-tmp*")] == []



def test_a_bundle_of_a_model_with_external_data_carries_its_weights_and_replays(tmp_path: Path) -> None:
    """A model that keeps its weights in a data file beside it (as large models must): the bundle holds its own
    copy of the data, named in the manifest, and replays where only the bundle is."""
    import shutil

    import onnx

    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    onnx.save(base_model(), str(project / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.weights", size_threshold=0)
    assert (project / "ext.weights").stat().st_size > 0
    cache = tmp_path / "cache"
    saved = _run(project, "--cvdnn-model=ext.onnx", "--cvdnn-save-bundle=bundles", cache=cache)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    bundle = project / "bundles" / "ext.onnx"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "model.onnx.0.data" in manifest["files"] and (bundle / "model.onnx.0.data").is_file()
    moved = tmp_path / "elsewhere" / "ext"
    shutil.copytree(bundle, moved)  # (the model and its data file are not there)
    replay = _run(tmp_path / "elsewhere", f"--cvdnn-bundle={moved}", "--cvdnn-report=r.json", cache=tmp_path / "c2")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    checks = json.loads((tmp_path / "elsewhere" / "r.json").read_text())["models"][0]["checks"]
    assert checks["verify"]["outcome"] == "passed" and checks["load"]["outcome"] == "passed", checks



def test_an_onnx_beside_an_onnx_model_is_refused_not_ignored(run_cvdnn: Callable[..., Any],
                                                             pytester: pytest.Pytester) -> None:
    _save(base_model(), pytester.path / "good.onnx")
    _save(base_model(seed=1), pytester.path / "shipped.onnx")
    run = run_cvdnn("--cvdnn-model=good.onnx", "--cvdnn-onnx=shipped.onnx", report=False)
    assert run.ret == 4, run.text
    assert "--cvdnn-onnx=shipped.onnx: the model good.onnx is not a Keras model" in run.text
    assert "Fix: check the file you will ship as the model: --cvdnn-model=shipped.onnx" in run.text



def test_absurd_tolerances_on_the_command_line_are_usage_errors(run_cvdnn: Callable[..., Any],
                                                                pytester: pytest.Pytester) -> None:
    _save(base_model(), pytester.path / "m.onnx")
    run = run_cvdnn("--cvdnn-model=m.onnx", "--cvdnn-srtol=1e308", report=False)
    assert run.ret == 4 and "srtol = 1e+308 would accept an error as large as the signal itself" in run.text, run.text



@pytest.mark.parametrize("kind, words", [
    ("output-shape", ["the graph output 'y' is declared (1, 7) but its nodes make (1, 5)",
                      "size 7 at axis 1, the graph makes 5"]),
    ("duplicate-opset", ["imports the operator set 'ai.onnx' twice (versions 13 and 11)"]),
    ("self-external", ["stored in the .onnx file itself", "conv_w"]),
    ("if-branch", ["full check (strict shape inference) rejects node 'add' (Add)", "Incompatible dimensions"]),
])
def test_a_graph_the_full_check_rejects_fails_convert_with_a_clear_message(kind: str, words: list[str],
                                                                          run_cvdnn: Callable[..., Any],
                                                                          pytester: pytest.Pytester) -> None:
    _mutant(kind, pytester.path / "m.onnx")
    run = run_cvdnn("--cvdnn-model=m.onnx")
    assert run.ret == 1, run.text
    checks = run.checks()
    convert = next(c for name, c in checks.items() if name.endswith("convert"))
    assert convert["outcome"] == "failed" and "Fix:" in convert["message"], convert
    assert all(w in convert["message"] for w in words), convert["message"]
    assert not any(c["outcome"] == "passed" for name, c in checks.items() if "parity" in name)



def test_a_graph_that_runs_for_ever_fails_within_the_time_limit(run_cvdnn: Callable[..., Any],
                                                                pytester: pytest.Pytester) -> None:
    import time

    _endless_loop(pytester.path / "endless.onnx")
    start = time.monotonic()
    run = run_cvdnn("--cvdnn-model=endless.onnx", "--cvdnn-timeout=2")
    assert time.monotonic() - start < 120, "the session did not end within its limits"
    output_spec = run.checks()["output_spec"]
    assert output_spec["outcome"] == "failed"
    assert "onnxruntime did not finish one forward of endless.onnx within 2 s" in output_spec["message"]
    assert "--cvdnn-timeout" in output_spec["message"]



def test_an_export_format_for_a_model_with_nothing_to_export_is_a_usage_error(run_cvdnn: Callable[..., Any],
                                                                            pytester: pytest.Pytester) -> None:
    _save(base_model(), pytester.path / "m.onnx")
    run = run_cvdnn("--cvdnn-model=m.onnx", "--cvdnn-format=tflite", report=False)
    assert run.ret == 4 and "m.onnx is not a Keras model, so there is no tflite to export" in run.text, run.text



def test_a_huge_image_in_the_inputs_folder_fails_its_items_with_the_numbers(run_cvdnn: Callable[..., Any],
                                                                           pytester: pytest.Pytester) -> None:
    _save(base_model(), pytester.path / "m.onnx")
    (pytester.path / "imgs").mkdir()
    _png_header(pytester.path / "imgs" / "scan.png", 20000, 20000)
    run = run_cvdnn("--cvdnn-model=m.onnx", "--cvdnn-inputs=imgs")
    assert run.ret == 1 and "Traceback" not in run.text.split("deployment summary")[-1]
    failed = [c["message"] for c in run.checks().values() if c["outcome"] == "failed"]
    assert failed and all("scan.png is 20000x20000 pixels" in m for m in failed), failed



def test_the_plugin_rebuilds_every_damaged_entry_and_says_so(tmp_path: Path) -> None:
    import onnx

    onnx.save(base_model(), str(tmp_path / "m.onnx"))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--cvdnn-model=m.onnx",
                               "--cvdnn-cache-dir=cache", "--cvdnn-report=r.json"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    outcomes = {k: c["outcome"] for k, c in json.loads((tmp_path / "r.json").read_text())["models"][0]["checks"].items()}
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix in (".json", ".npz", ".sha256")
               and p.name != "events.jsonl"]
    assert len(entries) >= 3
    for k, path in enumerate(entries):  # each damaged its own way
        path.unlink()
        [lambda: path.write_text("null"), lambda: os.mkfifo(path), lambda: path.symlink_to("/dev/zero")][k % 3]()
    second = run()
    text = second.stdout + second.stderr
    assert second.returncode == 0, text
    assert {k: c["outcome"] for k, c in
            json.loads((tmp_path / "r.json").read_text())["models"][0]["checks"].items()} == outcomes
    assert "discarded and rebuilt" in text and "Traceback" not in text



def _onnx(path: Path, nodes: list[Any], inits: list[Any], out_shape: list[Any] | None = None) -> Path:
    """A small ONNX graph from x (N, 4) float32 to y."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_output_that_is_inf_everywhere_fails_output_spec(run_cvdnn: Callable[..., Any],
                                                            pytester: pytest.Pytester) -> None:
    """+inf in every element and no NaN (the NaN check alone passes it, and parity finds inf == inf: max|Δ| 0)."""
    import numpy as np
    from onnx import helper, numpy_helper

    one, zero = numpy_helper.from_array(np.float32(1), "one"), numpy_helper.from_array(np.float32(0), "zero")
    _onnx(pytester.path / "inf.onnx", [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Add", ["a", "one"], ["b"]),
                                       helper.make_node("Div", ["b", "zero"], ["y"])], [one, zero])
    run = run_cvdnn("--cvdnn-model=inf.onnx")
    spec = run.checks()["output_spec"]
    assert spec["outcome"] == "failed", spec
    assert "not finite" in spec["message"] and "0 NaN" in spec["message"] and "Inf" in spec["message"], spec["message"]


def test_a_pass_on_an_output_that_ignores_its_input_carries_a_caution(run_cvdnn: Callable[..., Any],
                                                                      pytester: pytest.Pytester) -> None:
    """y = softmax(0 * x + b): the same for every input, so parity cannot tell a right graph from a wrong one; the
    item passes (the deployment may be right) and says how little it shows, in its message and the JSON."""
    import numpy as np
    from onnx import helper, numpy_helper

    zero = numpy_helper.from_array(np.float32(0), "zero")
    bias = numpy_helper.from_array(np.array([0.1, 0.7, 0.2, 0.4], np.float32), "bias")
    _onnx(pytester.path / "flat.onnx", [helper.make_node("Mul", ["x", "zero"], ["m"]),
                                        helper.make_node("Add", ["m", "bias"], ["z"]),
                                        helper.make_node("Softmax", ["z"], ["y"], axis=1)], [zero, bias])
    run = run_cvdnn("--cvdnn-model=flat.onnx")
    parity = run.checks()["parity[onnxruntime-cv2dnn]"]
    assert parity["outcome"] == "passed", parity
    assert "caution" in parity["message"] and parity["data"]["input_insensitive"], parity
    # and a model whose output does depend on its input gets none
    _onnx(pytester.path / "live.onnx", [helper.make_node("Add", ["x", "bias"], ["z"]),
                                        helper.make_node("Softmax", ["z"], ["y"], axis=1)], [bias])
    live = run_cvdnn("--cvdnn-model=live.onnx").checks()["parity[onnxruntime-cv2dnn]"]
    assert live["outcome"] == "passed" and "caution" not in live["message"], live
    assert not live["data"].get("input_insensitive"), live["data"]


def test_an_edited_bundle_manifest_fails_verify_and_absurd_tolerances_in_it_are_refused(
        run_cvdnn: Callable[..., Any], pytester: pytest.Pytester) -> None:
    """The manifest carries the bundle's tolerances, which a replay uses: it is covered by its own checksum file
    (an edit fails the verify item), and tolerances that no parity item could fail on are refused outright."""
    _save(base_model(), pytester.path / "m.onnx")
    assert run_cvdnn("--cvdnn-model=m.onnx", "--cvdnn-save-bundle=bundles", report=False).ret == 0
    manifest_path = pytester.path / "bundles" / "m.onnx" / "manifest.json"
    assert (manifest_path.parent / "manifest.sha256").is_file()
    original = json.loads(manifest_path.read_text())
    loose = {**original, "settings": {**original["settings"], "atol": 0.5}}
    manifest_path.write_text(json.dumps(loose, indent=2, sort_keys=True))
    run = run_cvdnn("--cvdnn-bundle=bundles")
    verify = run.checks()["verify"]
    assert run.ret == 1 and verify["outcome"] == "failed", verify
    assert "manifest.json has changed since the bundle was written" in verify["message"]
    vacuous = {**original, "settings": {**original["settings"], "atol": 1e308, "rtol": 1e308, "srtol": 1e308}}
    manifest_path.write_text(json.dumps(vacuous, indent=2, sort_keys=True))
    refused = run_cvdnn("--cvdnn-bundle=bundles", report=False)
    assert refused.ret == 4 and "'settings.rtol' is refused" in refused.text, refused.text[-2000:]


def test_a_model_file_name_that_is_not_utf8_is_a_usage_error_and_reports_still_write(tmp_path: Path) -> None:
    name = b"bad\xff.onnx"
    _save(base_model(), Path(os.fsdecode(bytes(tmp_path) + b"/" + name)))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run([os.fsencode(sys.executable), b"-m", b"pytest", b"-p", b"no:cacheprovider",
                             b"--cvdnn-model=" + name, b"--cvdnn-cache-dir=cache", b"--cvdnn-report=r.json"],
                            cwd=tmp_path, capture_output=True, timeout=300)
    text = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 4, text
    assert "the model path 'bad\\xff.onnx' is not valid UTF-8" in text and "Fix: rename the file" in text
    assert "Traceback" not in text


def test_a_report_with_a_non_utf8_name_in_it_is_written(tmp_path: Path) -> None:
    from pytest_cvdnn.report import publish

    publish(tmp_path / "r.html", "<p>bad\udcff.onnx</p>")
    assert "bad\\udcff.onnx" in (tmp_path / "r.html").read_text()


_CRASHING_OPENCV = '''
import os, signal


def _plant():  # (test-only: OpenCV's importer crashing on one file, as it does on some real graphs)
    import cv2

    real = cv2.dnn.readNetFromONNX

    def read(path, *args):
        if "crash" in os.path.basename(str(path)):
            with open(os.environ["CVDNN_TEST_CRASH_LOG"], "a") as fh:
                fh.write(str(os.getpid()) + chr(10))
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path, *args)

    cv2.dnn.readNetFromONNX = read


_plant()
'''


def test_a_graph_whose_import_crashes_opencv_fails_its_load_item_not_the_session(tmp_path: Path) -> None:
    """OpenCV's importer segfaults on some valid graphs (a byte classifier with a computed Reshape, on 5.1 and
    4.8.1); the crash is planted here with a sitecustomize module, in every process of the session.  The local
    cv2.dnn first reads the artifact in a child process: the load item fails naming the crash, the other model
    of the session is checked, the reports are written."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_CRASHING_OPENCV)
    _save(base_model(), tmp_path / "crash.onnx")
    _save(base_model(seed=1), tmp_path / "fine.onnx")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    log = tmp_path / "crashes.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
           "CVDNN_TEST_CRASH_LOG": str(log)}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--cvdnn-model=crash.onnx",
                               "--cvdnn-model=fine.onnx", "--cvdnn-cache-dir=cache", "--cvdnn-report=r.json"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    result = run()
    text = result.stdout + result.stderr
    assert result.returncode == 1, text[-3000:]
    assert "cvdnn deployment summary" in text
    report = json.loads((tmp_path / "r.json").read_text())
    crash, fine = ({k: c for k, c in m["checks"].items()} for m in report["models"])
    load = crash["load"]
    assert load["outcome"] == "failed", load
    assert "cv2.dnn crashed the process (SIGSEGV) reading crash.onnx" in load["message"]
    assert "it ran in a child process, so the session goes on" in load["message"] and "Fix:" in load["message"]
    assert all(c["outcome"] != "failed" for c in fine.values()), fine
    crashes = log.read_text().splitlines()
    assert len(crashes) == 1  # one child crashed reading it: the ops item did not probe in the pytest process
    again = run()  # warm: the crash is remembered, no child is started to crash again
    assert again.returncode == 1 and log.read_text().splitlines() == crashes, again.stdout[-2000:]
    warm = json.loads((tmp_path / "r.json").read_text())["models"][0]["checks"]["load"]
    assert warm["outcome"] == "failed" and "cv2.dnn crashed the process (SIGSEGV)" in warm["message"]


def test_a_dynamic_size_written_as_minus_one_is_dynamic(run_cvdnn: Callable[..., Any],
                                                       pytester: pytest.Pytester) -> None:
    """paddle2onnx and others write a dynamic batch as -1: onnx.checker's full check, onnxruntime and cv2.dnn
    accept and run such a file (checked here by hand too), so the plugin does — it called it damaged.  (A 0 is
    not dynamic: onnxruntime holds the input to size 0, and the fuzz test's mutant with it fails.)"""
    dynamic = -1
    import cv2
    import numpy as np
    import onnx
    import onnxruntime as ort

    model = base_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = dynamic
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = dynamic
    path = _save(model, pytester.path / "paddle_style.onnx")
    onnx.checker.check_model(str(path), full_check=True)  # (the hand check: what the tools say)
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(x)
    assert np.abs(net.forward() - want).max() < 1e-5
    run = run_cvdnn("--cvdnn-model=paddle_style.onnx")
    checks = run.checks()
    failed = {k: c["message"][:300] for k, c in checks.items() if c["outcome"] == "failed"}
    assert not failed and run.ret == 0, failed
    assert checks["parity[onnxruntime-cv2dnn]"]["outcome"] == "passed"


@pytest.mark.parametrize("key, close", [("cvdnn_preprocces", "cvdnn_preprocess"), ("cvdnn_model", "cvdnn_models"),
                                        ("cvdnn_atoll", "cvdnn_atol")])
def test_a_misspelt_ini_key_is_a_usage_error_not_a_green_gate(key: str, close: str, pytester: pytest.Pytester) -> None:
    """A typo used to be a warning and a pass that checked something else (the declared spec ignored), or nothing
    (exit 5)."""
    _save(base_model(), pytester.path / "good.onnx")
    pytester.makepyprojecttoml(f'[tool.pytest.ini_options]\n{key} = "none,swap_rb=0"\ncvdnn_models = ["good.onnx"]\n'
                               if key != "cvdnn_model" else '[tool.pytest.ini_options]\ncvdnn_model = ["good.onnx"]\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert f"unknown pytest-cvdnn ini key {key!r}. Fix: did you mean {close!r}?" in text


def test_a_keras_model_without_the_keras_extra_names_the_pip_command(run_cvdnn: Callable[..., Any],
                                                                     models: dict[str, Path],
                                                                     pytester: pytest.Pytester) -> None:
    """Keras and TensorFlow made unimportable in the session (as where only `pip install pytest-cvdnn` ran): the
    convert item says what to install, not "an error the plugin does not recognise … report this as a bug"."""
    import shutil

    shutil.copyfile(models["cnn"], pytester.path / "m.keras")
    pytester.makeconftest("import sys\nfor m in ('tensorflow', 'keras', 'tf2onnx'):\n    sys.modules[m] = None\n")
    run = run_cvdnn("--cvdnn-model=m.keras", "--cvdnn-tf-in-process", "-k", "convert", cache=None)
    convert = run.checks()["convert"]
    assert convert["outcome"] == "failed", convert
    assert "which is not installed (no module named" in convert["message"], convert["message"]
    assert 'Fix: pip install "pytest-cvdnn[keras]"' in convert["message"] and "does not recognise" not in convert["message"]


_CRASH_AFTER_READING = '''
import os, signal


def _plant():  # (test-only: OpenCV crashing as it finishes reading one file, its importer's log written)
    import cv2

    real = cv2.dnn.readNetFromONNX

    def read(path, *args):
        net = real(path, *args)
        if "crash" in os.path.basename(str(path)):
            os.kill(os.getpid(), signal.SIGSEGV)
        return net

    cv2.dnn.readNetFromONNX = read


_plant()
'''


def test_a_crash_on_an_opencv_4_target_names_the_last_node_its_importer_reached(tmp_path: Path) -> None:
    """OpenCV 4.x's importer logs each node it processes (at DEBUG): the child's log says where a crash
    happened.  A target Python whose cv2 (4.8.1) crashes after reading crash.onnx: the load item of that target
    fails naming the signal, the OpenCV version and the graph's last node, and the session reaches its summary."""
    import onnx

    from conftest import side_by_side

    opencv = side_by_side("4.8.1")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_CRASH_AFTER_READING)
    python = tmp_path / "python-opencv-4.8.1"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={tmp_path / 'site'}:{opencv} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    _save(base_model(), tmp_path / "crash.onnx")
    last = onnx.load(str(tmp_path / "crash.onnx")).graph.node[-1]
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--cvdnn-model=crash.onnx",
                             f"--cvdnn-target={python}", "--cvdnn-cache-dir=cache", "--cvdnn-report=r.json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    text = result.stdout + result.stderr
    assert result.returncode == 1 and "cvdnn deployment summary" in text, text[-3000:]
    checks = json.loads((tmp_path / "r.json").read_text())["models"][0]["checks"]
    load = next(c for n, c in checks.items() if n.startswith("load[") and n != "load")
    assert load["outcome"] == "failed", load
    assert (f"cv2.dnn crashed the process (SIGSEGV) at node {last.name!r} (op {last.op_type}), the last its "
            "importer reached") in load["message"], load["message"]
    assert "OpenCV 4.8.1" in load["message"]
    assert checks["load"]["outcome"] == "passed"  # (the local OpenCV reads it: only the target crashed)
    assert "DEBUG:" not in load["message"]  # (OpenCV's log lines are not the child's last output)
