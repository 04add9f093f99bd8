"""Per-model settings (``[tool.cvdnn.models."PATTERN"]`` in pyproject.toml): one model's input spec never leaks
to another, and every way of writing them wrong is a usage error naming the table and the fix (quick tier: two
ONNX models, no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnx_mutants import base_model
from pytest_cvdnn.errors import CvdnnError
from pytest_cvdnn.model_table import check_tables, read_tables, values_for

TWO = '[tool.pytest.ini_options]\ncvdnn_models = ["models/a.onnx", "models/b.onnx"]\n'


def _dynamic_models(folder: Path) -> None:
    """Two small ONNX classifiers with dynamic spatial sizes (each needs size= in its spec)."""
    import onnx

    (folder / "models").mkdir(exist_ok=True)
    for name, seed in (("a", 0), ("b", 1)):
        model = base_model(seed)
        for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, ["N", 3, "H", "W"]):
            if isinstance(value, str):
                dim.dim_param = value
        model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
        onnx.save(model, str(folder / "models" / f"{name}.onnx"))


def _run(pytester: pytest.Pytester, toml: str, *args: str) -> tuple[pytest.RunResult, dict[str, str]]:
    pytester.makepyprojecttoml(toml)
    report = pytester.path / "r.json"
    report.unlink(missing_ok=True)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly",
                                           f"--cvdnn-cache-dir={pytester.path / 'cache'}", f"--cvdnn-report={report}",
                                           *args)
    sizes = {}
    if report.exists():
        for model in json.loads(report.read_text())["models"]:
            sizes[model["model"]] = model["checks"]["input_spec"]["message"].split("deployment code: ")[1]
    return result, sizes


def test_each_model_gets_its_own_table_and_the_command_line_wins(pytester: pytest.Pytester) -> None:
    _dynamic_models(pytester.path)
    tables = (TWO + '[tool.cvdnn.models."models/*.onnx"]\npreprocess = "none,size=16x16"\n'
              '[tool.cvdnn.models."models/b.onnx"]\npreprocess = "none,size=24x24"\n')
    result, sizes = _run(pytester, tables)
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert "size=(16, 16)" in sizes["models/a.onnx"] and "size=(24, 24)" in sizes["models/b.onnx"], sizes
    result, sizes = _run(pytester, tables, "--cvdnn-preprocess=none,size=20x20")
    assert result.ret == 0 and all("size=(20, 20)" in s for s in sizes.values()), sizes


@pytest.mark.parametrize("toml, error", [
    (TWO + 'cvdnn_preprocess = "none,size=16x16"\n',
     "cvdnn_preprocess is set project-wide and applies to each of 2 models (models/a.onnx, models/b.onnx): one "
     "model's inputs would be checked with another's settings. Fix: set it per model in pyproject.toml: "
     '[tool.cvdnn.models."models/a.onnx"] preprocess = "..."'),
    (TWO + '[tool.cvdnn.models."models/a.onnx"]\npreprocces = "none,size=16x16"\n',
     "[tool.cvdnn.models.\"models/a.onnx\"]: unknown key 'preprocces'. Fix: did you mean 'preprocess'?"),
    (TWO + '[tool.cvdnn.models."model/a.onnx"]\npreprocess = "none,size=16x16"\n',
     "[tool.cvdnn.models.\"model/a.onnx\"] matches none of the configured models (models/a.onnx, models/b.onnx). "
     "Fix: did you mean 'models/a.onnx'?"),
    (TWO + '[tool.cvdnn.models."models/*"]\natol = "abc"\n',
     "[tool.cvdnn.models] atol = 'abc' for models/a.onnx is invalid: 'abc' is not a number; use e.g. 1e-4. Fix: "
     "write the value as --cvdnn-atol takes it"),
    (TWO + '[tool.cvdnn.models."models/a*"]\natol = 0.1\n[tool.cvdnn.models."models/*.onnx"]\natol = 0.2\n',
     "the model models/a.onnx is matched by [tool.cvdnn.models.\"models/a*\"] and [tool.cvdnn.models."
     "\"models/*.onnx\"], which set atol differently"),
])
def test_a_table_written_wrong_is_a_usage_error(pytester: pytest.Pytester, toml: str, error: str) -> None:
    _dynamic_models(pytester.path)
    result, _ = _run(pytester, toml)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text[-2000:]
    assert error in " ".join(text.split()), text[-2000:]


def test_tables_by_path_and_glob(tmp_path: Path) -> None:
    """Globs first, a model's own path over them; a "*" table makes a project-wide input setting deliberate."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.cvdnn.models."*"]\nfeed = "sr=16000"\natol = 1e-3\n[tool.cvdnn.models."./models/b.keras"]\natol = 0.5\n')
    tables = read_tables(tmp_path / "pyproject.toml")
    assert values_for(tables, "models/a.keras", tmp_path) == {"feeds": "sr=16000", "atol": "0.001"}
    assert values_for(tables, "models/b.keras", tmp_path) == {"feeds": "sr=16000", "atol": "0.5"}
    assert values_for(tables, str(tmp_path / "models" / "b.keras"), tmp_path)["atol"] == "0.5"  # (absolute path)
    check_tables(tables, ["models/a.keras", "models/b.keras"], tmp_path, None, ["feed"])  # ("*" sets it for each)
    with pytest.raises(CvdnnError, match="cvdnn_inputs is set project-wide and applies to each of 2 models"):
        check_tables(tables, ["models/a.keras", "models/b.keras"], tmp_path, None, ["inputs"])
    check_tables(tables[1:], ["models/b.keras"], tmp_path, None, ["inputs"])  # (one model: nothing can leak)
    check_tables(tables, ["models/a.keras", "models/b.keras"], tmp_path, None, ["atol"])  # (not an input setting)
    (tmp_path / "pyproject.toml").write_text('[tool.cvdnn.model."x"]\natol = 1\n')
    with pytest.raises(CvdnnError, match=r"unknown table \[tool.cvdnn.model\]"):
        read_tables(tmp_path / "pyproject.toml")
    (tmp_path / "pyproject.toml").write_text('[tool.cvdnn.models."x"]\natol = [1, 2]\n')
    with pytest.raises(CvdnnError, match=r"atol = \[1, 2\] is not a string or a number"):
        read_tables(tmp_path / "pyproject.toml")
    assert read_tables(tmp_path / "missing.toml") == []
