"""The README's main command, the shipped examples and CI recipes, run as a user would (from the repo root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pytest(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    # a fresh session, whatever runs this one (xdist workers export PYTEST_XDIST_* variables)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", f"--cvdnn-cache-dir={cache}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, env=env,
    )


def test_readme_main_command_on_the_shipped_model(shared_cache: Path, tmp_path: Path) -> None:
    import cv2

    report = tmp_path / "report.json"
    # (OpenCV < 4.8 rejects opset-13 Squeeze, FIELD.md: the tox environments of 4.5.5 pass the remedy's opset)
    old = tuple(int(v) for v in cv2.__version__.split(".")[:2]) < (4, 8)
    proc = _pytest("--cvdnn-model=examples/tiny_cnn.keras", f"--cvdnn-report={report}",
                   *(["--cvdnn-opset=11"] if old else []), cache=shared_cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "collected 11 items" in proc.stdout  # only the model's checks, not the test suite
    assert "examples/tiny_cnn.keras: 11 passed" in proc.stdout
    assert (ROOT / "examples" / "tiny_cnn.keras").stat().st_size < 2 * 1024 * 1024


@pytest.mark.zoo  # (DenseNet121: ~20 s)
def test_example_tests_including_the_densenet121_seed_case(shared_cache: Path) -> None:
    proc = _pytest("examples/test_deployment.py", "-v", cache=shared_cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_densenet121_seed_case PASSED" in proc.stdout
    assert "3 passed" in proc.stdout


def _recipe(name: str) -> tuple[list[str], str, str, str, list[str]]:
    """(OpenCV versions, install command, gate command with ``{opencv}``, cache folder, uploaded folders) of a CI
    recipe of examples/ci, read from its YAML."""
    import re

    import yaml

    recipe = yaml.safe_load((ROOT / "examples" / "ci" / name).read_text())
    if name == "cvdnn-gate.yml":  # GitHub Actions
        job = recipe["jobs"]["gate"]
        versions = job["strategy"]["matrix"]["opencv"]
        commands = [step["run"] for step in job["steps"] if "run" in step]
        cache = next(step["with"]["path"] for step in job["steps"] if step.get("uses", "").startswith("actions/cache"))
        uploads = [step["with"]["path"] for step in job["steps"] if step.get("uses", "").startswith("actions/upload")]
        gate = commands[1].replace("${{ matrix.opencv }}", "{opencv}")
    else:  # GitLab CI
        job = recipe["cvdnn-gate"]
        versions = job["parallel"]["matrix"][0]["OPENCV"]
        commands = job["script"]
        cache = next(c["paths"][0] for c in job["cache"] if isinstance(c["key"], dict))  # (keyed by the model files)
        uploads = job["artifacts"]["paths"]
        assert job["artifacts"]["reports"]["junit"] == "reports/junit.xml" and job["artifacts"]["when"] == "always"
        gate = commands[1].replace("$OPENCV", "{opencv}")
    assert versions and len(commands) == 2 and not re.search(r"\$\{?\{? ?(matrix|OPENCV)", gate)
    return [str(v) for v in versions], commands[0], gate, str(cache), [str(u) for u in uploads]


@pytest.mark.parametrize("recipe", ["cvdnn-gate.yml", "gitlab-ci.yml"])
def test_ci_recipe_commands_run_as_written(recipe: str, shared_cache: Path, tmp_path: Path) -> None:
    """examples/ci (GitHub Actions and GitLab CI, shown in the docs' CI page): every command, with each OpenCV of
    its matrix, in a project laid out as it assumes (models/classifier.keras); the gate passes and leaves the
    three reports its artifacts keep, and the cached folder is the one the gate fills."""
    import shlex
    import shutil
    import xml.etree.ElementTree as ET

    versions, install, gate, cache_folder, uploads = _recipe(recipe)
    assert "pytest-cvdnn[keras]" in install and "pytest-html" in install  # (installed here by the test extras)
    assert f"--cvdnn-cache-dir={cache_folder}" in gate
    for path in uploads:
        assert f"={path}" in gate
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    shutil.copyfile(ROOT / "examples" / "tiny_cnn.keras", project / "models" / "classifier.keras")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    for version in versions:
        shutil.copytree(shared_cache, project / cache_folder, dirs_exist_ok=True)  # (the restored cache)
        argv = shlex.split(gate.format(opencv=version))
        assert argv[:3] == ["python", "-m", "pytest"]
        proc = subprocess.run([sys.executable, *argv[1:], "-p", "no:randomly"], cwd=project, capture_output=True,
                              text=True, timeout=1200, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        reports = project / "reports"
        junit = ET.parse(reports / "junit.xml").getroot()
        tests = int(junit.find("testsuite").get("tests"))
        assert tests >= 10 and (reports / "junit.xml").stat().st_size <= 50_000 * tests  # (CI-sized: no figures)
        assert f"opencv-{version}" in (reports / "cvdnn.html").read_text()
        assert json.loads((reports / "cvdnn.json").read_text())["models"][0]["model"] == "models/classifier.keras"


def test_readme_toml_has_every_ini_key_and_runs_as_a_projects_pyproject(pytester: pytest.Pytester,
                                                                         shared_cache: Path) -> None:
    """The docs' "Options and ini keys": the TOML block names every ini key the plugin registers, and as a project's
    pyproject.toml (with the folders it names) the gate runs on its model and target and passes."""
    import re
    import shutil
    import tomllib

    import cv2

    readme = (ROOT / "docs" / "configuration.md").read_text()
    section = readme[readme.index("## Options and ini keys"):readme.index("## Tolerances and statistics")]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    keys = set(tomllib.loads(block)["tool"]["pytest"]["ini_options"])
    registered = {name for name in pytester.parseconfig()._parser._inidict if name.startswith("cvdnn_")}
    assert keys == registered
    pytester.path.joinpath("pyproject.toml").write_text(block.replace(
        'cvdnn_cache_dir = ".cvdnn-cache"', f'cvdnn_cache_dir = "{shared_cache}"'))
    (pytester.path / "models").mkdir()
    shutil.copyfile(ROOT / "examples" / "tiny_cnn.keras", pytester.path / "models" / "classifier.keras")
    from skimage import data as photos

    for folder in ("data/samples", "data/photos"):
        (pytester.path / folder).mkdir(parents=True)
        for name in ("astronaut", "chelsea"):
            cv2.imwrite(str(pytester.path / folder / f"{name}.png"), getattr(photos, name)()[..., ::-1])
    result = pytester.runpytest_subprocess("-p", "no:randomly", timeout=900)
    assert result.ret == 0, result.stdout.str()[-3000:]
    text = result.stdout.str()
    assert "models/classifier.keras" in text and "opencv-4.8.1: OK" in text
    page = (pytester.path / "reports" / "cvdnn.html").read_text()
    assert "models/classifier.keras" in page and "data/samples" in page  # (the inputs it names)
