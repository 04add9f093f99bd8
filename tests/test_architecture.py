"""The package's shape, kept: one runner protocol and registry, one caching wrapper, checks declared in one
table, no import cycle, short functions, mypy --strict clean.  Quick tier: no TensorFlow."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "pytest_cvdnn"


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports, at module level or in a function (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            target = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module or ""
            found |= {c for c in [target, *(f"{target}.{a.name}" for a in node.names)] if c in modules}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return found - {name}


def test_no_import_cycle_in_the_package() -> None:
    """Not even through function-level imports (those hide a layering problem, and cost an import per call)."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name, [])
            assert cycle is None, " -> ".join(cycle[cycle.index(cycle[-1]):])
    assert graph["pytest_cvdnn.core"].isdisjoint({"pytest_cvdnn.checks", "pytest_cvdnn.bundle", "pytest_cvdnn.formats"})


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


def test_mypy_strict_is_clean() -> None:
    if shutil.which("mypy") is None and importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e .[test] brings it)")
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(SRC)],
                          capture_output=True, text=True, cwd=SRC.parent.parent)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the registry -----------------------------------------------------------------------------------------------
def test_every_registered_runner_has_its_spec_and_the_parity_pairs_come_from_them() -> None:
    from pytest_cvdnn.runners import REGISTRY, blame, parity_pairs, runner_spec

    for name in REGISTRY:
        assert runner_spec(name).name == name
    assert parity_pairs() == [("keras", "onnxruntime"), ("onnxruntime", "cv2dnn"), ("keras", "cv2dnn"),
                              ("tflite", "cv2dnn"), ("openvino", "cv2dnn")]  # (OpenVINO: by this package's entry point)
    assert REGISTRY["openvino"] == "pytest_cvdnn.runners.openvino"
    assert "tf2onnx" in (blame("keras", "onnxruntime") or "")
    assert blame("cv2dnn", "keras") is None
    with pytest.raises(ValueError, match="unknown runner 'trt'"):
        runner_spec("trt")


def test_a_new_runner_is_one_module_and_one_registry_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference shipped in its own module, registered by one line: its parity item with cv2.dnn appears for
    the kinds it declares, on every target, with its blame; nothing else changes."""
    (tmp_path / "cvdnn_extra").mkdir()
    (tmp_path / "cvdnn_extra" / "__init__.py").write_text("")
    (tmp_path / "cvdnn_extra" / "numpy_reference.py").write_text(
        "from pytest_cvdnn.runners import RunnerSpec\n"
        "SPEC = RunnerSpec('numpy', lambda dep, logits: None, lambda dep: '', lambda dep, logits: None,\n"
        "                  lambda dep: 'numpy',\n"
        "                  kinds=frozenset({'onnx'}), compared_with={'cv2dnn': 'cv2.dnn differs from numpy'})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from pytest_cvdnn import checks, runners

    before = [c.name for c in checks._table()]
    monkeypatch.setitem(runners.REGISTRY, "numpy", "cvdnn_extra.numpy_reference")  # (the one line)
    table = checks._table()
    added = [c for c in table if c.name not in before]
    assert [(c.name, sorted(c.kinds), c.per_target) for c in added] == [("parity[numpy-cv2dnn]", ["onnx"], True)]
    assert runners.blame("numpy", "cv2dnn") == "cv2.dnn differs from numpy"
    assert [c.name for c in table if c not in added] == before


def test_where_each_check_applies_is_declared_once() -> None:
    from pytest_cvdnn.checks import TARGET_CHECKS, check_items, checks_of

    assert [c.name for c in checks_of("bundle")] == [
        "verify", "load", "input_spec", "preprocessing", "output_spec", "parity[onnxruntime-cv2dnn]",
        "parity[keras-cv2dnn]", "batch", "determinism"]
    assert [c.name for c in checks_of("bundle", has_keras=False)] == [
        "verify", "load", "input_spec", "preprocessing", "output_spec", "parity[onnxruntime-cv2dnn]", "batch",
        "determinism"]
    assert [c.name for c in checks_of("tflite", has_keras=False)] == [
        "convert", "load", "input_spec", "output_spec", "parity[tflite-cv2dnn]", "batch", "determinism"]
    assert [c.name for c in checks_of("export")] == ["convert", "load", "output_spec", "parity[keras-cv2dnn]"]
    assert [c.name for c in checks_of("onnx", has_keras=False, fix=True, save_bundle=True)] == [
        "convert", "ops", "load", "input_spec", "preprocessing", "output_spec", "parity[onnxruntime-cv2dnn]",
        "batch", "determinism", "bundle"]
    assert "remedies" in [c.name for c in checks_of("keras", fix=True)]
    assert TARGET_CHECKS == ("ops", "load", "output_spec", "parity[onnxruntime-cv2dnn]", "parity[keras-cv2dnn]",
                             "parity[tflite-cv2dnn]", "batch", "determinism")
    items = {i.name for i in check_items(True, ["opencv==4.5.5"], fix=True, formats=("onnx", "tflite"))}
    assert {"remedies[opencv-4.5.5]", "parity[keras-cv2dnn@opencv-4.5.5]", "tflite:load[opencv-4.5.5]",
            "tflite:parity[keras-cv2dnn]"} <= items
    assert not {"tflite:batch", "input_spec[opencv-4.5.5]", "tflite:convert[opencv-4.5.5]"} & items


# -- the caching wrapper ----------------------------------------------------------------------------------------
class _Doubler:
    """A real (numpy) runner: outputs 2x, then the logits x + 1; counts its forwards and their batch sizes."""

    name = "doubler"
    output_count = 1

    def __init__(self) -> None:
        self.batches: list[int] = []

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.batches.append(len(inputs[0]))
        return [inputs[0] * 2, inputs[0] + 1]


def _wrapper(cache: Any, runner: _Doubler, memory: dict[Any, Any], key: str | None, **kw: Any) -> Any:
    from pytest_cvdnn.runners.cached import CachedRunner

    kw.setdefault("one_at_a_time", lambda: False)
    return CachedRunner("doubler", lambda: runner, key, cache, memory, joint=True, feed=list, **kw)


def test_the_caching_wrapper_keeps_results_in_memory_and_on_disk_by_identity_and_inputs(tmp_path: Path) -> None:
    from pytest_cvdnn.cache import Cache

    cache, runner = Cache(tmp_path), _Doubler()
    x = [np.arange(6, dtype=np.float32).reshape(3, 2)]
    first = _wrapper(cache, runner, {}, "model-a").infer(x)
    assert np.array_equal(first.outputs[0], x[0] * 2) and np.array_equal(first.logits[0], x[0] + 1)
    first.outputs[0][:] = -1  # a copy: the checks may edit what they get
    memory: dict[Any, Any] = {}
    warm = _wrapper(cache, runner, memory, "model-a")
    assert np.array_equal(warm.infer(x).outputs[0], x[0] * 2) and runner.batches == [3]  # from the disk
    assert np.array_equal(warm.infer(x).logits[0], x[0] + 1) and runner.batches == [3]  # from memory
    _wrapper(cache, runner, {}, "model-b").infer(x)  # another identity: computed again
    assert runner.batches == [3, 3] and len(list((tmp_path / "outputs").glob("doubler-*.npz"))) == 2
    shipped = _wrapper(cache, runner, {}, None)  # no identity: never on disk
    shipped.infer(x)
    assert runner.batches == [3, 3, 3] and len(list((tmp_path / "outputs").glob("*.npz"))) == 2


def test_the_caching_wrapper_feeds_one_sample_at_a_time_and_waits_for_the_helper_on_a_miss(tmp_path: Path) -> None:
    from pytest_cvdnn.cache import Cache

    cache, runner = Cache(tmp_path), _Doubler()
    x = [np.arange(6, dtype=np.float32).reshape(3, 2)]
    asked: list[str] = []

    def wait(path: Path) -> bool:  # the TensorFlow helper "makes" the entry while we wait
        asked.append(path.name)
        _wrapper(cache, _Doubler(), {}, "model-a").infer(x)
        return True

    got = _wrapper(cache, runner, {}, "model-a", wait=wait).infer(x)
    assert len(asked) == 1 and runner.batches == [] and np.array_equal(got.outputs[0], x[0] * 2)
    fixed = _wrapper(cache, runner, {}, "model-c", one_at_a_time=lambda: True).infer(x)
    assert runner.batches == [1, 1, 1] and np.array_equal(fixed.outputs[0], x[0] * 2)
