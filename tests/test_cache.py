"""Caching: a warm run converts nothing and imports no TensorFlow; xdist converts once; corruption heals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import Run

# a conftest in the run's folder that records, at the end, whether TensorFlow was imported
TF_PROBE = """
import json, sys
def pytest_sessionfinish(session):
    name = "tf-imported-%s.json" % getattr(session.config, "workerinput", {}).get("workerid", "main")
    with open(name, "w") as fh:
        json.dump("tensorflow" in sys.modules, fh)
"""


def _conversions(cache: Path) -> list[dict]:
    path = cache / "events.jsonl"
    if not path.is_file():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if e.get("event") != "cache-entry-discarded"]  # (notes of repairs, not conversions)


def test_second_run_hits_the_cache_and_does_not_import_tensorflow(
    run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path],
    pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    model = copy_model(models["cnn"])
    pytester.makeconftest(TF_PROBE)
    cold = run_cvdnn(f"--cvdnn-model={model.name}", cache=cache)
    assert cold.ret == 0, cold.text
    assert len(_conversions(cache)) == 1
    assert "converted in" in cold.checks()["convert"]["message"]
    # cold, TensorFlow ran in the helper process (test_helper.py); the probe sees it when in-process
    assert json.loads((pytester.path / "tf-imported-main.json").read_text()) is False

    warm = run_cvdnn(f"--cvdnn-model={model.name}", cache=cache)
    assert warm.ret == 0, warm.text
    assert len(_conversions(cache)) == 1  # no second conversion
    assert warm.checks()["convert"]["message"].startswith("cache hit (not converted)")
    assert "keras-loaded" not in warm.report["models"][0]["events"]
    assert json.loads((pytester.path / "tf-imported-main.json").read_text()) is False
    # same verdicts and numbers from the cached reference outputs
    assert warm.report["models"][0]["parity"]["keras-cv2dnn"]["max_abs"] == \
        cold.report["models"][0]["parity"]["keras-cv2dnn"]["max_abs"]


FACTORY_INIT = "import keras  # noqa: F401 - what most packages do at their top: a warm run must not pay for it\n"
FACTORY_NET = """
import keras
from keras import layers

from .blocks import FILTERS


def build():
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(FILTERS, 3, name="conv")(inp)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="probs")(x))
"""


def test_factory_warm_run_imports_no_tensorflow_and_a_changed_import_converts_again(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A factory in a package whose __init__ imports Keras: the key is read from the files (module, package,
    the project file it imports), so a warm run imports nothing; editing the imported file converts again."""
    cache = tmp_path / "cache"
    pytester.makeconftest(TF_PROBE)
    pkg = pytester.path / "zoo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(FACTORY_INIT)
    (pkg / "net.py").write_text(FACTORY_NET)
    (pkg / "blocks.py").write_text("FILTERS = 4\n")
    (pytester.path / "notes.py").write_text("X = 1\n")

    def run() -> Run:
        result = run_cvdnn("--cvdnn-model=zoo.net:build", "-k", "convert or parity", cache=cache)
        assert result.ret == 0, result.text
        return result

    run()
    assert len(_conversions(cache)) == 1
    warm = run()
    assert len(_conversions(cache)) == 1
    assert json.loads((pytester.path / "tf-imported-main.json").read_text()) is False
    assert warm.checks()["convert"]["message"].startswith("cache hit (not converted)")
    (pytester.path / "notes.py").write_text("X = 2\n")  # not imported by the factory: still warm
    run()
    assert len(_conversions(cache)) == 1
    (pkg / "blocks.py").write_text("FILTERS = 6\n")  # imported by it: another model
    changed = run()
    assert len(_conversions(cache)) == 2
    assert changed.checks()["convert"]["message"].startswith("converted in"), changed.checks()["convert"]


def test_changed_options_or_model_convert_again(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                copy_model: Callable[..., Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model = copy_model(models["cnn"], "m.keras")
    assert run_cvdnn("--cvdnn-model=m.keras", "-k", "convert", cache=cache).ret == 0
    assert run_cvdnn("--cvdnn-model=m.keras", "-k", "convert", "--cvdnn-opset=11", cache=cache).ret == 0
    assert len(_conversions(cache)) == 2
    model.write_bytes(models["other"].read_bytes())  # same path, new content
    assert run_cvdnn("--cvdnn-model=m.keras", "-k", "convert", cache=cache).ret == 0
    assert len(_conversions(cache)) == 3


def test_corrupted_cache_entry_is_detected_and_rebuilt(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                       copy_model: Callable[..., Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    copy_model(models["cnn"], "m.keras")
    assert run_cvdnn("--cvdnn-model=m.keras", "-k", "convert", cache=cache).ret == 0
    (entry,) = (cache / "onnx").iterdir()
    onnx_file = entry / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])  # truncated on disk
    run = run_cvdnn("--cvdnn-model=m.keras", cache=cache)
    assert run.ret == 0, run.text
    assert len(_conversions(cache)) == 2  # rebuilt, not used
    # the cached reference outputs (Keras, onnxruntime), replayed cv2 outputs and graph summary, damaged: rebuilt
    damaged = [p for kind in ("ref", "ort", "cv2") for p in sorted((cache / kind).glob("*.npz"))]
    summaries = sorted((cache / "graph").glob("*.json"))
    assert damaged and summaries
    for path in damaged:
        data = bytearray(path.read_bytes())
        data[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64
        path.write_bytes(bytes(data))
    for path in summaries:
        path.write_text(path.read_text()[:40])
    metas = sorted((cache / "keras").glob("*.json"))
    for path in metas:
        path.write_text("{}")  # valid JSON, not the entry: it was a raw KeyError in every item, run after run
    probes = sorted((cache / "probe").glob("*.onnx"))
    for path in probes:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # it was a raw protobuf error, for good
    assert metas and probes
    again = run_cvdnn("--cvdnn-model=m.keras", cache=cache)
    assert again.ret == 0, again.text
    assert again.report["models"][0]["parity"] == run.report["models"][0]["parity"]
    assert len(_conversions(cache)) == 2
    assert all(path.is_file() for path in damaged + metas + probes)  # written again
    assert all(json.loads(path.read_text()) != {} for path in metas)


def test_xdist_two_models_one_conversion_each(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                              copy_model: Callable[..., Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = copy_model(models["cnn"])
    b = copy_model(models["other"])
    run = run_cvdnn(f"--cvdnn-model={a.name}", f"--cvdnn-model={b.name}", "-n", "2", "-v", cache=cache)
    assert run.ret == 0, run.text
    assert run.outcomes() == {"passed": 20, "skipped": 2}  # (preprocessing of two plain CNNs: not derivable)
    # without an explicit --dist, all checks of a model run on one worker (loadgroup; on pytest >= 9.2,
    # where xdist's nodeid rename is lost, the plugin applies the group itself)
    assert f"{a.name}::convert@" in run.text
    for name in (a.name, b.name):
        lines = [ln for ln in run.text.splitlines() if ln.startswith("[gw") and f"{name}::" in ln]
        assert len(lines) == 11 and len({ln.split("]")[0] for ln in lines}) == 1, (name, lines)
    conversions = _conversions(cache)
    assert sorted(e["model"] for e in conversions) == sorted({e["model"] for e in conversions})
    assert len(conversions) == 2
    # results from both workers reach the controller's summary and report
    assert "small_cnn.keras: 10 passed, 1 skipped" in run.text and "other_cnn.keras: 10 passed, 1 skipped" in run.text
    assert len(run.report["models"]) == 2


def test_xdist_four_workers_race_on_one_model(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                              copy_model: Callable[..., Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    copy_model(models["cnn"], "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", "-n", "4", "--dist", "load", cache=cache)
    assert run.ret == 0, run.text
    assert len(_conversions(cache)) == 1
    assert not [p for p in (cache / "onnx").iterdir() if p.name.startswith(".")]  # no leftover temp entries


def test_works_without_the_cacheprovider(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                         copy_model: Callable[..., Path], pytester: pytest.Pytester,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_model(models["cnn"], "m.keras")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    run = run_cvdnn("--cvdnn-model=m.keras", "-p", "no:cacheprovider", "-k", "convert or load", cache=None)
    assert run.ret == 0, run.text
    assert list((tmp_path / "xdg" / "pytest-cvdnn" / "onnx").iterdir())  # the per-user cache folder
    run = run_cvdnn("--cvdnn-model=m.keras", "-p", "no:cacheprovider", "-k", "convert", cache=tmp_path / "explicit")
    assert run.ret == 0, run.text
    assert list((tmp_path / "explicit" / "onnx").iterdir())


def test_default_cache_lives_in_pytests_cache_dir(run_cvdnn: Callable[..., Run], models: dict[str, Path],
                                                  copy_model: Callable[..., Path], pytester: pytest.Pytester) -> None:
    copy_model(models["cnn"], "m.keras")
    run = run_cvdnn("--cvdnn-model=m.keras", "-k", "convert", cache=None)
    assert run.ret == 0, run.text
    assert list((pytester.path / ".pytest_cache" / "d" / "cvdnn" / "onnx").iterdir())


def _tamper(path: Path, index: int, delta: float, ulp: bool = False) -> None:
    """Shift one array of a cached .npz, written back as a valid entry (its checksum matches: e.g. outputs
    that another OpenCV build produced under the same key), so that only a comparison can notice; ``ulp``: move
    one element to the next float32 instead (the smallest change there is)."""
    from pytest_cvdnn.cache import Cache

    cache = Cache(path.parent.parent)
    arrays = cache.get_arrays(path.parent.name, path.name)
    assert arrays is not None
    if ulp:
        arrays[index] = arrays[index].copy()
        arrays[index].flat[0] = np.nextafter(arrays[index].flat[0], np.float32(np.inf))
    else:
        arrays[index] = arrays[index] + np.float32(delta)
    cache.put_arrays(arrays, path.parent.name, path.name)


def test_warm_run_replays_auxiliary_cv2_outputs_and_still_compares_them(
    run_cvdnn: Callable[..., Run], models: dict[str, Path], copy_model: Callable[..., Path], tmp_path: Path,
) -> None:
    """The batch/fresh-net child process and the logits probe graph (which does not ship) are replayed on a
    warm run; they are compared with this session's forwards of the shipped net, so a difference is caught."""
    cache = tmp_path / "cache"
    copy_model(models["cnn"], "m.keras")
    cold = run_cvdnn("--cvdnn-model=m.keras", cache=cache)
    assert cold.ret == 0, cold.text
    assert "replayed" not in cold.checks()["determinism"]["message"]
    warm = run_cvdnn("--cvdnn-model=m.keras", cache=cache)
    assert warm.ret == 0, warm.text
    for check in ("batch", "determinism"):
        assert "replayed from the cache" in warm.checks()[check]["message"]
    assert warm.report["models"][0]["parity"] == cold.report["models"][0]["parity"]

    (child,) = list((cache / "cv2").glob("*.npz"))
    _tamper(child, 1, 0.0, ulp=True)  # one ulp of the fresh net's output (stored as [counts, fresh..., batch...])
    logit_entries = list((cache / "outputs").glob("cv2dnn-logits-*.npz"))  # the probe's, by the runner wrapper
    assert logit_entries
    for logits in logit_entries:
        _tamper(logits, 0, 0.5)
    bad = run_cvdnn("--cvdnn-model=m.keras", "-k", "determinism or batch or parity", cache=cache)
    checks = bad.checks()
    assert checks["determinism"]["outcome"] == "failed"
    assert "output 0 of a freshly loaded net differs from the first forward" in checks["determinism"]["message"]
    assert checks["batch"]["outcome"] == "passed"
    assert checks["parity[onnxruntime-cv2dnn]"]["outcome"] == "failed"
    assert "(logits)" in bad.text
