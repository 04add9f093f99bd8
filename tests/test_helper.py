"""The TensorFlow helper process: a cold run does its TensorFlow work there (the pytest process never
imports TensorFlow), and whatever the helper did not finish is done again in the pytest process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from conftest import Run

# records, at the end, whether the pytest process imported TensorFlow, and its pid
PROBE = """
import json, os, sys
os.environ["CVDNN_TEST_MAIN_PID"] = str(os.getpid())
def pytest_sessionfinish(session):
    with open("probe.json", "w") as fh:
        json.dump({"tf": "tensorflow" in sys.modules, "pid": os.getpid()}, fh)
"""


def _probe(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "probe.json").read_text())


def _conversions(cache: Path) -> list[dict]:
    return [json.loads(line) for line in (cache / "events.jsonl").read_text().splitlines() if line.strip()]


def test_cold_run_converts_in_the_helper_and_agrees_with_the_in_process_run(
    run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path],
    pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    model = copy_model(models["cnn"])
    pytester.makeconftest(PROBE)
    cold = run_cvdnn(f"--cvdnn-model={model.name}", cache=tmp_path / "a")
    assert cold.ret == 0, cold.text
    probe = _probe(pytester)
    assert probe["tf"] is False  # the pytest process never imported TensorFlow
    (event,) = _conversions(tmp_path / "a")
    assert event["pid"] != probe["pid"]  # converted by another process
    message = cold.checks()["convert"]["message"]
    assert message.startswith("converted in ") and "in the TensorFlow helper process" in message
    assert "converted" in cold.report["models"][0]["events"]

    inproc = run_cvdnn(f"--cvdnn-model={model.name}", "--cvdnn-tf-in-process", cache=tmp_path / "b")
    assert inproc.ret == 0, inproc.text
    probe = _probe(pytester)
    assert probe["tf"] is True
    (event,) = _conversions(tmp_path / "b")
    assert event["pid"] == probe["pid"]
    assert "in the TensorFlow helper process" not in inproc.checks()["convert"]["message"]
    for pair in ("keras-onnxruntime", "keras-cv2dnn", "onnxruntime-cv2dnn"):
        assert cold.report["models"][0]["parity"][pair]["max_abs"] == pytest.approx(
            inproc.report["models"][0]["parity"][pair]["max_abs"], rel=1e-3, abs=1e-9)


def test_helper_that_dies_is_replaced_by_the_pytest_process(
    run_cvdnn: Callable[..., Run], pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    """A real death (the helper's job process is killed while it builds the model): the checks still run,
    in-process."""
    pytester.makeconftest(PROBE)
    pytester.makepyfile(dying="""
        import os
        import signal

        def make():
            if os.getpid() != int(os.environ["CVDNN_TEST_MAIN_PID"]):
                os.kill(os.getpid(), signal.SIGKILL)  # the helper's job process dies here
            import keras
            keras.utils.set_random_seed(0)
            inp = keras.Input((24, 24, 3))
            x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
            x = keras.layers.GlobalAveragePooling2D()(x)
            return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    """)
    run = run_cvdnn("--cvdnn-model=dying:make", cache=tmp_path / "cache")
    assert run.ret == 0, run.text
    assert run.outcomes() == {"passed": 10, "skipped": 1}  # (preprocessing: a plain model, not derivable)
    assert _probe(pytester)["tf"] is True  # the pytest process did the TensorFlow work itself
    assert "in the TensorFlow helper process" not in run.checks()["convert"]["message"]


def test_failure_in_the_helper_is_reported_as_in_process(
    run_cvdnn: Callable[..., Run], pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    """Keras refuses the model in the helper; the pytest process tries again and reports it word for word."""
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x)).save(pytester.path / "lam.keras")
    helper = run_cvdnn("--cvdnn-model=lam.keras", "-k", "convert or load", cache=tmp_path / "a")
    inproc = run_cvdnn("--cvdnn-model=lam.keras", "-k", "convert or load", "--cvdnn-tf-in-process",
                       cache=tmp_path / "b")
    assert helper.ret == inproc.ret == 1
    for check in ("convert", "load"):
        assert helper.checks()[check]["outcome"] == inproc.checks()[check]["outcome"]
        assert helper.checks()[check]["message"] == inproc.checks()[check]["message"]
    assert "Lambda layer" in helper.checks()["convert"]["message"]


def test_conversion_error_comes_from_the_helper_without_converting_twice(
    run_cvdnn: Callable[..., Run], pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    """tf2onnx leaves a TensorFlow-only node (Lgamma): the helper's error is the pytest process's verdict,
    word for word as in-process, and the pytest process never imports TensorFlow to find it again."""
    pytester.makeconftest(PROBE)
    pytester.makepyfile(special="""
        def make():  # imports inside: pytest imports this module at collection (it is on the command line)
            import keras
            import tensorflow as tf

            inp = keras.Input((8,))
            return keras.Model(inp, keras.layers.Lambda(lambda t: tf.math.lgamma(t))(inp))
    """)
    helper = run_cvdnn("--cvdnn-model=special:make", "-k", "convert or load", cache=tmp_path / "a")
    assert _probe(pytester)["tf"] is False
    inproc = run_cvdnn("--cvdnn-model=special:make", "-k", "convert or load", "--cvdnn-tf-in-process",
                       cache=tmp_path / "b")
    assert helper.ret == inproc.ret == 1
    message = helper.checks()["convert"]["message"]
    assert "has op type 'Lgamma', which is not an ONNX operator" in message
    assert message == inproc.checks()["convert"]["message"]
    assert helper.checks()["load"] == {**inproc.checks()["load"], "seconds": helper.checks()["load"]["seconds"]}


# in the xdist controller, after the plugin's configure: did it start the shared TensorFlow helper?
CONTROLLER_PROBE = """
import json, pytest
@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        from pytest_cvdnn import helper
        with open("controller.json", "w") as fh:
            json.dump({"server": helper.server_address() is not None}, fh)
"""


def test_xdist_workers_share_one_helper_started_by_the_controller(
    run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path],
    pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    """Cold, `-n 2`: the controller starts one helper (one TensorFlow import) and each worker's conversion
    runs in a job process forked from it; warm, nobody starts one."""
    pytester.makeconftest(CONTROLLER_PROBE)
    a = copy_model(models["cnn"])
    b = copy_model(models["other"])
    cache = tmp_path / "cache"
    cold = run_cvdnn(f"--cvdnn-model={a.name}", f"--cvdnn-model={b.name}", "-n", "2", "-v", cache=cache)
    assert cold.ret == 0, cold.text
    assert json.loads((pytester.path / "controller.json").read_text()) == {"server": True}
    conversions = _conversions(cache)
    assert len(conversions) == 2
    assert len({e["pid"] for e in conversions}) == 2  # one job process per worker...
    assert len({e["ppid"] for e in conversions}) == 1  # ...forked from the same helper
    workers = {ln.split("]")[0] for ln in cold.text.splitlines() if ln.startswith("[gw")}
    assert len(workers) == 2  # (both workers had a model)
    for index in (0, 1):
        assert "in the TensorFlow helper process" in cold.checks(index)["convert"]["message"]

    warm = run_cvdnn(f"--cvdnn-model={a.name}", f"--cvdnn-model={b.name}", "-n", "2", cache=cache)
    assert warm.ret == 0, warm.text
    assert json.loads((pytester.path / "controller.json").read_text()) == {"server": False}
    assert len(_conversions(cache)) == 2


def test_xdist_workers_work_in_process_when_the_shared_helper_is_gone(
    run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path],
    pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    """The controller's helper is SIGKILLed before the workers connect: each worker does its TensorFlow
    work itself, and every check passes as it would without the helper."""
    pytester.makeconftest("""
        import os, signal, pytest
        @pytest.hookimpl(trylast=True)
        def pytest_configure(config):
            if not hasattr(config, "workerinput"):
                from pytest_cvdnn import helper
                os.killpg(helper._SERVER_PROC.proc.pid, signal.SIGKILL)
                helper._SERVER_PROC.proc.wait()
    """)
    a = copy_model(models["cnn"])
    b = copy_model(models["other"])
    run = run_cvdnn(f"--cvdnn-model={a.name}", f"--cvdnn-model={b.name}", "-n", "2", cache=tmp_path / "cache")
    assert run.ret == 0, run.text
    assert run.outcomes() == {"passed": 20, "skipped": 2}  # (preprocessing of two plain CNNs: not derivable)
    conversions = _conversions(tmp_path / "cache")
    assert len(conversions) == 2
    for index in (0, 1):
        assert "in the TensorFlow helper process" not in run.checks(index)["convert"]["message"]


@pytest.mark.zoo  # (compares wall-clock times taken in two processes: timing, not logic; the zoo tier runs it)
def test_the_helper_converts_the_next_model_while_the_pytest_process_checks_this_one(
    run_cvdnn: Callable[..., Run], pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    """Without xdist the session's cold models are queued in the helper at collection, in the order their
    checks run: the second model is built (its factory called, in the helper) before its first check
    starts, while the pytest process still checks the first model."""
    pytester.makeconftest("""
        import json, time
        starts = {}
        def pytest_runtest_logstart(nodeid, location):
            starts.setdefault(nodeid, time.time())
        def pytest_sessionfinish(session):
            json.dump(starts, open("starts.json", "w"))
    """)
    for name in ("first", "second"):
        pytester.makepyfile(**{name: f"""
            import time

            def make():
                with open("{name}.called", "w") as fh:
                    fh.write(repr(time.time()))
                import keras
                keras.utils.set_random_seed(0)
                inp = keras.Input((24, 24, 3))
                x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
                x = keras.layers.GlobalAveragePooling2D()(x)
                return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
        """})
    run = run_cvdnn("--cvdnn-model=first:make", "--cvdnn-model=second:make", cache=tmp_path / "cache")
    assert run.ret == 0, run.text
    assert run.outcomes() == {"passed": 20, "skipped": 2}  # (preprocessing of two plain CNNs: not derivable)
    starts = json.loads((pytester.path / "starts.json").read_text())
    first_checks = [t for nodeid, t in starts.items() if nodeid.startswith("first.py")]
    second_checks = [t for nodeid, t in starts.items() if nodeid.startswith("second.py")]
    assert max(first_checks) < min(second_checks)  # the checks ran model after model
    built = float((pytester.path / "second.called").read_text())
    assert built < min(second_checks)  # ...but the helper was already building the second model
    assert built > min(first_checks)
    for index in (0, 1):
        assert "in the TensorFlow helper process" in run.checks(index)["convert"]["message"]


def test_reading_a_stage_starts_no_process_prepare_does(models: dict[str, Path], tmp_path: Path) -> None:
    """A property only waits for a job that was queued: the explicit ``prepare()`` queues the helper's work."""
    import subprocess
    import sys

    script = """
import json, sys
from pytest_cvdnn import helper
from pytest_cvdnn.cache import Cache
from pytest_cvdnn.deployment import build_deployment
from pytest_cvdnn.settings import ModelSettings
dep = build_deployment(ModelSettings(model=sys.argv[1], tf_helper=True), Cache(sys.argv[2]))
pending = dep.tf_work_pending()
queued = dep.prepare() if sys.argv[3] == "prepare" else False
where = dep.conversion.where
print(json.dumps({"pending": pending, "queued": queued, "where": where, "helper": helper.server_address() is not None,
                  "tf": "tensorflow" in sys.modules}))
helper.close()
"""
    runs = {}
    for how in ("read", "prepare"):
        done = subprocess.run([sys.executable, "-c", script, str(models["cnn"]), str(tmp_path / how), how],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[how] = json.loads(done.stdout.strip().splitlines()[-1])
    assert runs["read"] == {"pending": True, "queued": False, "where": "", "helper": False, "tf": True}
    assert runs["prepare"] == {"pending": True, "queued": True, "where": "in the TensorFlow helper process",
                               "helper": True, "tf": False}
