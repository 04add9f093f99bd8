"""Hostile and broken inputs: each gives a failed item or a usage error that names the file and the fix —
never an internal error, a hang or a dead session — and the user's files are left as they were.

(More of the reliability table lives elsewhere: invalid options and a missing file in test_plugin_load.py,
empty/corrupt .keras and .onnx and the Lambda layer in test_checks.py, a corrupted cache entry and
racing xdist workers in test_cache.py, a segfaulting importer in test_formats.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import Run
from test_cache import _conversions


def _assert_clean_failure(run: Run, item: str, filename: str) -> dict:
    assert run.ret == 1, run.text
    assert "INTERNALERROR" not in run.text and "Traceback" not in run.text.split("cvdnn deployment summary")[-1]
    check = run.checks()[item]
    assert check["outcome"] == "failed", check
    assert filename in check["message"] and "Fix:" in check["message"], check["message"]
    return check


@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
@pytest.mark.parametrize("kind", ["keras", "h5", "onnx"])
def test_damaged_model_file_fails_convert_naming_the_file(kind: str, damage: str, run_cvdnn: Callable[..., Run],
                                                          models: dict[str, Path], pytester: pytest.Pytester) -> None:
    source = {"keras": models["cnn"], "h5": models["h5"], "onnx": models["onnx"]}[kind]
    good = source.read_bytes()
    content = {"empty": b"", "truncated": good[: len(good) // 2],
               "random": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()}[damage]
    path = pytester.path / f"damaged.{kind}"
    path.write_bytes(content)
    run = run_cvdnn(f"--cvdnn-model={path.name}")
    _assert_clean_failure(run, "convert", path.name)
    assert all(c["outcome"] == "skipped" for n, c in run.checks().items() if n != "convert")
    assert path.read_bytes() == content  # untouched
    # what exactly is wrong, per format (measured: the check that catches it names it)
    expected = {("keras", "empty"): "is empty (0 bytes)", ("onnx", "empty"): "is empty (0 bytes)",
                ("keras", "truncated"): "is not a valid .keras archive", ("keras", "random"): "is not a valid .keras archive",
                ("h5", "empty"): "is not an HDF5 file (bad signature b'')", ("h5", "random"): "is not an HDF5 file",
                ("h5", "truncated"): "truncated file", ("onnx", "truncated"): "is not a readable ONNX model",
                ("onnx", "random"): "is not a readable ONNX model"}[(kind, damage)]
    assert expected in run.checks()["convert"]["message"], run.checks()["convert"]["message"]


def _external_data_onnx(folder: Path, location: str) -> Path:
    """A one-node ONNX whose weight lives in an external file at ``location`` (relative to the model)."""
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname"])
def test_external_data_outside_the_models_folder_is_refused(location: str, run_cvdnn: Callable[..., Run],
                                                            pytester: pytest.Pytester) -> None:
    folder = pytester.path / "models"
    folder.mkdir()
    (pytester.path / "outside.bin").write_bytes(np.eye(4, dtype=np.float32).tobytes())
    model = _external_data_onnx(folder, location)
    run = run_cvdnn("--cvdnn-model=models/model.onnx")
    check = _assert_clean_failure(run, "convert", "model.onnx")
    assert "external data outside its folder" in check["message"] and "'w'" in check["message"]
    assert location in check["message"]
    assert model.is_file()


def test_external_data_inside_the_folder_is_fine(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    folder = pytester.path / "models"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(np.eye(4, dtype=np.float32).tobytes())
    _external_data_onnx(folder, "weights.bin")
    run = run_cvdnn("--cvdnn-model=models/model.onnx", "-k", "convert or load or parity")
    checks = run.checks()
    assert checks["convert"]["outcome"] == "passed", checks["convert"]["message"]
    assert checks["parity[onnxruntime-cv2dnn]"]["outcome"] == "passed"


def test_nan_and_inf_outputs_fail_the_validity_check(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inp)
    dense = keras.layers.Dense(4, name="head")
    model = keras.Model(inp, dense(x))
    kernel, bias = dense.get_weights()
    kernel[:, 0] = np.inf  # +inf * positive pixels, and inf - inf = NaN in the next column sums
    kernel[:, 1] = np.where(np.arange(3) % 2 == 0, np.inf, -np.inf)
    dense.set_weights([kernel, bias])
    model.save(pytester.path / "blowup.keras")
    run = run_cvdnn("--cvdnn-model=blowup.keras", "-k", "output_spec")
    check = _assert_clean_failure(run, "output_spec", "blowup.keras")
    assert "not finite" in check["message"] and "NaN" in check["message"] and "Inf" in check["message"]
    # the counts, per runner: 4 samples of positive pixels -> column 0 is +inf, column 1 is inf - inf = NaN
    # (what Keras itself computes on any positive input; columns 2 and 3 stay finite)
    probe = np.asarray(model.predict(np.full((4, 8, 8, 3), 7.0, np.float32), verbose=0))
    assert int(np.isnan(probe).sum()) == 4 and int(np.isinf(probe).sum()) == 4
    bad = check["data"]["not_finite"]
    assert any(b.startswith("keras output ") and b.endswith(": 4 NaN, 4 Inf of 16") for b in bad), bad
    assert any(b.startswith("onnxruntime output ") and b.endswith(": 4 NaN, 4 Inf of 16") for b in bad), bad


# A conftest for the run's folder: SIGKILL the pytest process at the moment the converted model is being
# committed to the cache (after tf2onnx finished, before the atomic rename) - a CI job killed mid-way.
KILL_DURING_COMMIT = """
import os, signal
import pytest_cvdnn.cache as cache_module

real_replace = os.replace

class _Os:
    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def replace(src, dst):
        if os.environ.get("CVDNN_KILL") and os.path.basename(os.path.dirname(str(dst))) == "onnx":
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)

cache_module.os = _Os()
"""


def test_conversion_killed_mid_way_leaves_no_corrupt_entry(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                          copy_model: Callable[..., Path], pytester: pytest.Pytester,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    copy_model(models["cnn"])
    pytester.makeconftest(KILL_DURING_COMMIT)
    monkeypatch.setenv("CVDNN_KILL", "1")
    killed = run_cvdnn("--cvdnn-model=small_cnn.keras", "-k", "convert", "--cvdnn-tf-in-process", cache=cache,
                       report=False)
    assert killed.ret not in (0, 1)  # the process died
    entries = [p for p in (cache / "onnx").iterdir()] if (cache / "onnx").is_dir() else []
    assert all(p.name.startswith(".") for p in entries), entries  # only an uncommitted staging folder
    assert _conversions(cache) == []

    monkeypatch.delenv("CVDNN_KILL")
    again = run_cvdnn("--cvdnn-model=small_cnn.keras", "-k", "convert or parity", cache=cache)
    assert again.ret == 0, again.text
    assert "converted in" in again.checks()["convert"]["message"]
    assert len(_conversions(cache)) == 1
    committed = [p for p in (cache / "onnx").iterdir() if not p.name.startswith(".")]
    assert len(committed) == 1
    meta = json.loads((committed[0] / "meta.json").read_text())
    assert meta["sha256"]


def test_helper_killed_mid_commit_leaves_no_corrupt_entry_and_the_run_goes_on(
    run_cvdnn: Callable[..., Run], pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    """The TensorFlow helper process is SIGKILLed while it commits the conversion (the fault is planted by
    the factory's module, which the helper imports); the pytest process converts again and passes."""
    cache = tmp_path / "cache"
    pytester.makeconftest("import os\nos.environ['CVDNN_TEST_MAIN_PID'] = str(os.getpid())\n")
    pytester.makepyfile(planted=KILL_DURING_COMMIT.replace(
        'os.environ.get("CVDNN_KILL")', 'os.getpid() != int(os.environ["CVDNN_TEST_MAIN_PID"])') + """
def make():
    import keras
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
""")
    run = run_cvdnn("--cvdnn-model=planted:make", "-k", "convert or parity", cache=cache)
    assert run.ret == 0, run.text
    assert "in the TensorFlow helper process" not in run.checks()["convert"]["message"]  # converted in-process
    entries = list((cache / "onnx").iterdir())
    committed = [p for p in entries if not p.name.startswith(".")]
    assert len(committed) == 1 and len(_conversions(cache)) == 1
    assert [p for p in entries if p.name.startswith(".")]  # the helper's uncommitted staging folder


def test_a_savedmodels_graph_file_is_explained(pytester: pytest.Pytester) -> None:
    """The blog recipe: feed saved_model.pb to readNetFromTensorflow. It is not a frozen graph."""
    folder = pytester.path / "exported"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    result = pytester.runpytest_subprocess("--cvdnn-model=exported/saved_model.pb")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*saved_model.pb is a SavedModel's graph file*not a frozen graph*"
                                 "Fix: pass the folder exported instead*--cvdnn-format=tf*"])


@pytest.mark.zoo  # (asks the package index: the network is not the default tier's)
def test_an_opencv_that_cannot_be_installed_fails_its_items_not_the_session(
        run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path]) -> None:
    copy_model(models["onnx"])
    run = run_cvdnn("--cvdnn-model=small_cnn.onnx", "--cvdnn-target=opencv==3.0.0", "-k", "load")
    checks = run.checks()
    assert checks["load"]["outcome"] == "passed"
    load = checks["load[opencv-3.0.0]"]
    assert load["outcome"] == "failed", load
    # pip's own reason, not just the version (which is part of the item's label)
    assert "OpenCV 3.0.0 could not be installed (opencv-python-headless==3.0.0.* numpy<2)" in load["message"], load
    assert "No matching distribution found" in load["message"] or "Could not find" in load["message"], load
    assert "Fix: check that the version exists on PyPI" in load["message"]
    assert "INTERNALERROR" not in run.text


CRASHING_SITECUSTOMIZE = '''
# loaded by the target's Python at start-up: every cv2.dnn forward of a batch dies of a real SIGSEGV, as
# OpenCV's own crashes do (a frozen graph crashed OpenCV 5.0's importer here); single forwards work
import ctypes
from pytest_cvdnn.runners import cv2dnn

_infer = cv2dnn.Cv2DnnRunner.infer


def infer(self, inputs):
    if len(inputs[0]) > 1:
        ctypes.string_at(0)  # reads address 0: the kernel kills the process with SIGSEGV
    return _infer(self, inputs)


cv2dnn.Cv2DnnRunner.infer = infer
'''


def test_an_opencv_crash_in_a_child_fails_one_item_not_the_session(
        run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path],
        pytester: pytest.Pytester, record_property: Callable[[str, object], None]) -> None:
    """The crash path of runners/isolated.py, run for real: a target whose cv2.dnn segfaults on batches."""
    import stat

    site = pytester.path / "crashing_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASHING_SITECUSTOMIZE)
    python = pytester.path / "crashing-python"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={site}${{PYTHONPATH:+:$PYTHONPATH}} exec {sys.executable} \"$@\"\n")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    copy_model(models["cnn"], "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", f"--cvdnn-target={python}", "--cvdnn-preprocess=none,batch=4",
                    "-k", "batch or determinism or load")
    label = str(python)
    checks = run.checks()
    batch = checks[f"batch[{label}]"]
    assert batch["outcome"] == "failed", batch  # the spec asks for batch=4: a crash there is a failure
    assert "crashed the process (SIGSEGV)" in batch["message"] and "re-export the model with a dynamic batch" in \
        batch["message"]
    # the session went on: the same checks on the cv2 installed here, and the target's single forwards, pass
    for name in ("load", "batch", "determinism", f"load[{label}]", f"determinism[{label}]"):
        assert checks[name]["outcome"] == "passed", (name, checks[name]["message"])
    assert run.report is not None and "INTERNALERROR" not in run.text and run.ret == 1
    record_property("corpus_kind", "fault")  # (benchmarks/fault_corpus.py: caught only if every assert held)
    record_property("corpus_case", "OpenCV crashes (SIGSEGV) on a batch, in a child process")
    record_property("corpus_item", "batch")
    record_property("corpus_explanation", "cv2.dnn crashed the process (SIGSEGV); the session went on")


@pytest.mark.parametrize("make, message", [
    (lambda f: os.mkfifo(f / "a.npy"), "--cvdnn-inputs=inputs: a.npy is not a regular file (a named pipe)"),
    (lambda f: np.save(f / "empty.npy", np.zeros((0, 32, 32, 3), np.float32)),
     "empty.npy holds no sample (its batch dimension is 0: shape (0, 32, 32, 3))"),
    (lambda f: np.save(f / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
     "objects.npy cannot be read as a numeric .npy array: it holds Python objects (a pickle), which are never loaded"),
    (lambda f: (f / "text.npy").write_text("not an array"), "text.npy cannot be read as a numeric .npy array"),
])
def test_a_bad_file_in_the_inputs_folder_is_named_with_why(make: Callable[[Path], object], message: str,
                                                            models: dict[str, Path], copy_model: Callable[..., Path],
                                                            pytester: pytest.Pytester, shared_cache: Path) -> None:
    """Only regular files are read (a named pipe would block the session forever); each file that cannot be
    used is named, with why, in the items that need the inputs — never a raw numpy/OpenCV error."""
    folder = pytester.path / "inputs"
    folder.mkdir()
    np.save(folder / "good.npy", np.zeros((1, 32, 32, 3), np.float32))
    make(folder)
    copy_model(models["onnx"], "m.onnx")
    result = pytester.runpytest_subprocess("-p", "no:randomly", f"--cvdnn-cache-dir={shared_cache}",
                                           "--cvdnn-model=m.onnx", "--cvdnn-inputs=inputs", "-k", "parity",
                                           timeout=120)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == 1, text
    assert message in text, text
    assert "Traceback" not in text and "INTERNALERROR" not in text


def test_a_missing_inputs_or_images_folder_is_a_usage_error(pytester: pytest.Pytester) -> None:
    for option in ("--cvdnn-inputs", "--cvdnn-images"):
        result = pytester.runpytest_subprocess("-p", "no:randomly", f"{option}=nope")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert f"{option}=nope: no such folder" in result.stderr.str()


def test_a_factory_that_exits_fails_its_convert_item_not_the_session(run_cvdnn: Callable[..., Run],
                                                                     pytester: pytest.Pytester) -> None:
    """sys.exit() in a factory was a raw SystemExit traceback in every item, os._exit() ended the session with
    no summary (in the helper's job and again in the pytest process): each is now one failed convert item that
    says what the factory did, and the session reports every model."""
    pytester.makepyfile(exits="""
        import os
        import sys

        def soft():
            sys.exit(2)

        def hard():
            os._exit(3)
    """)
    run = run_cvdnn("--cvdnn-model=exits:soft", "--cvdnn-model=exits:hard", "-k", "convert or load")
    assert run.ret == 1, run.text
    assert "cvdnn deployment summary" in run.text  # the session ended normally
    soft, hard = run.checks(0)["convert"], run.checks(1)["convert"]
    assert soft["outcome"] == hard["outcome"] == "failed"
    assert "the model factory 'exits:soft' called sys.exit(2) instead of returning a model" in soft["message"]
    assert "the model factory 'exits:hard' called os._exit(3) instead of returning a model" in hard["message"]
    assert "Fix: return a keras.Model from the function" in hard["message"]
    assert "SystemExit" not in run.text and run.checks(0)["load"]["outcome"] == "skipped"


def test_a_factory_that_crashes_fails_its_convert_item_not_the_session(run_cvdnn: Callable[..., Run],
                                                                       pytester: pytest.Pytester) -> None:
    """A factory that segfaults (native code) killed the TensorFlow helper, then the pytest process ran it again
    and died with it: no summary, no report.  Now the crash (the job process's fault handler reports it; a helper
    killed from outside does not, and the pytest process takes over: test_helper.py) is one failed convert item,
    and the session goes on."""
    pytester.makepyfile(crashes="""
        def segv():
            import ctypes

            ctypes.string_at(0)
    """)
    run = run_cvdnn("--cvdnn-model=crashes:segv", "-k", "convert or load", cache=pytester.path / "cache")
    assert run.ret == 1, run.text
    assert "cvdnn deployment summary" in run.text and "Fatal Python error" not in run.text, run.text
    convert = run.checks(0)["convert"]
    assert convert["outcome"] == "failed"
    assert ("the model factory 'crashes:segv' crashed the TensorFlow helper process that called it (Segmentation "
            "fault, in native code)") in convert["message"]
    assert 'python -c "import crashes as m; m.segv()"' in convert["message"]


def test_a_model_whose_inputs_would_not_fit_in_memory_is_refused_with_the_numbers(pytester: pytest.Pytester,
                                                                                   shared_cache: Path) -> None:
    """A valid ONNX declaring a 1x3x20000x20000 input: the plugin tried to allocate tens of GiB. The items that
    need inputs fail with the sizes and the budget; the session ends normally, quickly."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20000, 20000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 20000, 20000])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "huge", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(pytester.path / "huge.onnx"))
    result = pytester.runpytest_subprocess("-p", "no:randomly", f"--cvdnn-cache-dir={shared_cache}",
                                           "--cvdnn-model=huge.onnx", "-k", "load or parity", timeout=300)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == 1, text
    assert ("the model's inputs hold 1,200,000,000 values per sample (the largest: 'x' of shape (1, 20000, 20000, 3) "
            "NHWC)" in text), text
    assert "raise --cvdnn-memory-budget" in text and "Traceback" not in text and "MemoryError" not in text


def test_a_cv2_side_parity_failure_of_a_dense_model_is_localised_not_an_unknown_error(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """Tolerances of 0 on the shipped example: OpenCV's float error fails the cv2 side; the localisation asks
    cv2.dnn for intermediate tensors, of which 5.1 gives None for the fused Dense MatMul: the first divergent node
    is named (that tensor skipped), never "an error the plugin does not recognise"."""
    shutil.copyfile(Path(__file__).parents[1] / "examples" / "tiny_cnn.keras", pytester.path / "tiny_cnn.keras")
    run = run_cvdnn("--cvdnn-model=tiny_cnn.keras", "--cvdnn-atol=0", "--cvdnn-rtol=0", "-k",
                    "parity and onnxruntime-cv2dnn")
    parity = run.checks()["parity[onnxruntime-cv2dnn]"]
    assert parity["outcome"] == "failed", parity
    assert "does not recognise" not in parity["message"] and "pickle" not in run.text
    assert "first divergent node" in parity["message"] and parity["data"]["first_divergent"]["node"], parity


def _session_members(sid: int) -> list[int]:
    """The pids of the processes in session ``sid`` (the TensorFlow helper's own session)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(p) for p, s in (line.split() for line in out.splitlines() if line.strip()) if int(s) == sid]


def test_a_killed_session_takes_its_tensorflow_helper_and_jobs_with_it(pytester: pytest.Pytester,
                                                                       tmp_path: Path) -> None:
    """pytest is SIGKILLed while the helper's job process converts (a factory that takes its time): the helper
    server, its job process and its temp folder are gone within seconds; the next session sweeps the rest."""
    import time

    pytester.makeconftest("import os\nos.environ['CVDNN_TEST_MAIN_PID'] = str(os.getpid())\n")
    pytester.makepyfile(slow="""
import os, time
def make():
    import keras
    if os.getpid() != int(os.environ["CVDNN_TEST_MAIN_PID"]):  # in the helper's job process
        open(os.environ["CVDNN_TEST_FLAG"], "w").write(str(os.getpid()))
        time.sleep(120)
    inp = keras.Input((8, 8, 3))
    return keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))
""")
    flag = tmp_path / "job.pid"
    env = {**os.environ, "CVDNN_TEST_FLAG": str(flag), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--cvdnn-model=slow:make",
                             f"--cvdnn-cache-dir={tmp_path / 'cache'}"], cwd=pytester.path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not flag.is_file() or not flag.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "the helper's job never started"
        time.sleep(0.2)
    job = int(flag.read_text())
    sid = os.getsid(job)
    assert sid != os.getsid(proc.pid) and len(_session_members(sid)) >= 2  # the server and its job
    folders = [*tmp_path.glob(f"cvdnn-tf-{proc.pid}-*"), *Path("/tmp").glob(f"cvdnn-tf-{proc.pid}-*")]
    assert folders  # (in /tmp when TMPDIR is too long for a socket path)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while _session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_members(sid) == [], "the helper or its job outlived the killed session"
    assert not any(f.exists() for f in folders)  # its socket folder went with it


def test_a_factory_that_raises_keyboardinterrupt_or_generatorexit_fails_its_item_not_the_session(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    pytester.makepyfile(raises="""
        def interrupt():
            raise KeyboardInterrupt("from the factory")

        def generator_exit():
            raise GeneratorExit
    """)
    run = run_cvdnn("--cvdnn-model=raises:interrupt", "--cvdnn-model=raises:generator_exit", "-k", "convert or load")
    assert run.ret == 1, run.text
    assert "cvdnn deployment summary" in run.text and "KeyboardInterrupt" not in run.text.split("summary")[0][-200:]
    first, second = run.checks(0)["convert"], run.checks(1)["convert"]
    assert first["outcome"] == second["outcome"] == "failed"
    assert "'raises:interrupt' raised KeyboardInterrupt: from the factory (not a Ctrl-C" in first["message"]
    assert "'raises:generator_exit' raised GeneratorExit" in second["message"]


def _large_external_model(folder: Path, per_tensor: int = 275_000_000) -> Path:
    """A valid ONNX with 2.2 GB of external weights in two tensors (each under 2 GiB, zeros in a sparse file):
    prob = softmax(x + W0[0:4] + W1[0:4]).  Large models keep their weights external: no file over protobuf's
    2 GiB limit exists, and the plugin must never serialize the whole model in one message."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = []
    for k in range(2):
        tensor = onnx.TensorProto(name=f"W{k}", data_type=TensorProto.FLOAT, dims=[per_tensor],
                                  data_location=TensorProto.EXTERNAL)
        for key, value in (("location", "weights.bin"), ("offset", str(4 * per_tensor * k)),
                           ("length", str(4 * per_tensor))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        inits.append(tensor)
    inits += [numpy_helper.from_array(np.array([0], np.int64), "s"), numpy_helper.from_array(np.array([4], np.int64), "e"),
              numpy_helper.from_array(np.array([1, 4], np.int64), "shape")]
    nodes, prev = [], "x"
    for k in range(2):
        nodes += [helper.make_node("Slice", [f"W{k}", "s", "e"], [f"w{k}"], name=f"slice{k}"),
                  helper.make_node("Reshape", [f"w{k}", "shape"], [f"r{k}"], name=f"reshape{k}"),
                  helper.make_node("Add", [prev, f"r{k}"], [f"y{k}"], name=f"add{k}")]
        prev = f"y{k}"
    nodes.append(helper.make_node("Softmax", [prev], ["prob"], name="softmax", axis=1))
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "large.onnx"))
    with open(folder / "weights.bin", "wb") as fh:
        fh.truncate(4 * per_tensor * 2)  # (sparse: no disk space, read as zeros)
    return folder / "large.onnx"


@pytest.mark.zoo
def test_a_model_with_over_2_gib_of_external_data_is_checked(run_cvdnn: Callable[..., Run],
                                                             pytester: pytest.Pytester) -> None:
    """onnx.checker runs on the path, the logits probe links the data files instead of serializing the model
    (it was "Failed to serialize proto" after loading 2 GiB), cv2.dnn and onnxruntime read the weights from
    their file: every item passes."""
    import shutil as sh

    if sh.disk_usage(pytester.path).free < 8 << 30:
        pytest.skip("needs a few GiB of free disk for the sparse weights' links and copies")
    _large_external_model(pytester.path / "large")
    run = run_cvdnn("--cvdnn-model=large/large.onnx")
    checks = run.checks()
    failed = {k: c["message"][:300] for k, c in checks.items() if c["outcome"] == "failed"}
    assert run.ret == 0 and not failed, failed
    assert checks["parity[onnxruntime-cv2dnn]"]["outcome"] == "passed"
    assert "Failed to serialize" not in run.text
