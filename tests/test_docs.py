"""The documentation: the site builds with warnings as errors, every code block of the README and docs/ runs
(commands in a project laid out as they assume, Python with the objects it names, TOML as a project's
pyproject.toml, YAML as the CI recipes the suite runs), and the package is ready to publish (sdist contents,
one version, absolute links for PyPI, the release workflow)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: languages a block may have: transcripts (console, text) are what a command printed, not code to run
LANGUAGES = {"bash", "python", "toml", "yaml", "json", "console", "text"}
#: the install commands the docs give; CI runs the repository's (.ci/run), the wheel's (.ci/wheel-smoke) and the
#: bundle's (tests/test_bundle.py: a fresh OpenCV-only environment) for real
INSTALLS = {'pip install -e ".[keras]"', 'pip install -e ".[test]"', 'pip install "pytest-cvdnn[keras]"',
            "pip install pytest numpy opencv-python-headless filelock", "pip install --no-deps pytest-cvdnn"}
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks(language: str | None = None) -> list[tuple[str, str, str]]:
    """(page, language, code) of every fenced block."""
    found = []
    for page in PAGES:
        for match in BLOCK.finditer(page.read_text()):
            if language is None or match.group(1) == language:
                found.append((page.relative_to(ROOT).as_posix(), match.group(1), match.group(2)))
    return found


def _commands() -> list[tuple[str, str]]:
    """(page, command) of every bash block line, ``&&`` chains split, comments dropped."""
    out = []
    for page, _, code in _blocks("bash"):
        for line in code.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.extend((page, part.strip()) for part in line.split("&&"))
    return out


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    """mkdocs.yml (strict): every page in the nav, no broken link or anchor, the CI recipes included from
    examples/ci, the API reference rendered from the docstrings."""
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").glob("*.md")}
    nav = set(re.findall(r":\s*([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    assert nav == pages, f"pages not in the nav: {pages - nav}; nav entries without a page: {nav - pages}"
    ci = (tmp_path / "site" / "ci" / "index.html").read_text()
    assert "cvdnn-gate" in ci and "OPENCV" in ci  # (both recipes included)
    assert "from_keras_mode" in (tmp_path / "site" / "api" / "index.html").read_text()


def test_every_block_has_a_language_the_tests_know() -> None:
    blocks = _blocks()
    assert len(blocks) >= 20
    unknown = [(page, lang) for page, lang, _ in blocks if lang not in LANGUAGES]
    assert not unknown, unknown


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """A project laid out as the docs assume: the shipped model as models/classifier.keras, model.keras and
    examples/tiny_cnn.keras."""
    root = tmp_path_factory.mktemp("docs-project")
    (root / "models").mkdir()
    (root / "examples").mkdir()
    for target in ("models/classifier.keras", "model.keras", "examples/tiny_cnn.keras"):
        shutil.copyfile(ROOT / "examples" / "tiny_cnn.keras", root / target)
    import onnx

    from onnx_mutants import base_model

    onnx.save(base_model(), str(root / "models" / "detector.onnx"))  # (a 16x16 ONNX model beside the Keras one)
    import cv2

    sys.path.insert(0, str(ROOT))
    from examples.build_tiny_cnn import CLASSES, make_images

    images, labels = make_images(24, seed=5)  # (data/val: labelled images the shipped model was made for)
    for k, (image, label) in enumerate(zip(images, labels)):
        (root / "data" / "val" / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "data" / "val" / CLASSES[label] / f"{k:02d}.png"), image[..., ::-1])
    return root


def _pytest(project: Path, argv: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
                           f"--cvdnn-cache-dir={cache}", *argv], cwd=project, capture_output=True, text=True,
                          timeout=1200, env=env)


def test_every_command_runs_as_written(project: Path, shared_cache: Path) -> None:
    """Each ``pytest`` command of a bash block, in order per page, in the project (exit 0); installs are the known
    ones (run for real by CI); the test suite's own command is the one .ci/run runs."""
    seen = set()
    ran = 0
    for page, command in _commands():
        if command.startswith("pip "):
            assert command in INSTALLS, (page, command)
            continue
        argv = shlex.split(command)
        assert argv[0] == "pytest", (page, command)
        if "--cvdnn-model" not in command and "--cvdnn-bundle" not in command:
            assert command == "pytest -n 2" and f"&& {command}\n" in (ROOT / ".ci" / "run").read_text(), command
            continue
        if command in seen:
            continue
        seen.add(command)
        proc = _pytest(project, argv[1:], shared_cache)
        assert proc.returncode == 0, (page, command, proc.stdout[-3000:] + proc.stderr[-2000:])
        ran += 1
    assert ran >= 3


def _namespace() -> dict[str, Any]:
    """The objects the docs' Python snippets name: a Keras model, BGR photos, two runtimes' outputs."""
    import cv2
    import keras
    import numpy as np
    from skimage import data as photos

    model = keras.saving.load_model(str(ROOT / "examples" / "tiny_cnn.keras"))
    bgr = [cv2.resize(getattr(photos, n)(), (96, 96))[..., ::-1].copy() for n in ("astronaut", "chelsea")]
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    keras_out = np.asarray(model(x))
    return {"keras_model": model, "bgr_images": bgr, "keras_out": keras_out,
            "cv_out": keras_out + np.float32(1e-7)}


def test_every_python_block_runs(project: Path, shared_cache: Path) -> None:
    """A block that defines tests runs as a test module of the project (its tests pass); any other is executed
    with the objects it names."""
    blocks = _blocks("python")
    assert len(blocks) >= 3
    namespace = _namespace()
    for k, (page, _, code) in enumerate(blocks):
        if re.search(r"^def test_", code, re.M):
            (project / f"test_doc_{k}.py").write_text(code)
            proc = _pytest(project, [f"test_doc_{k}.py", "-q"], shared_cache)
            assert proc.returncode == 0, (page, proc.stdout[-3000:] + proc.stderr[-2000:])
            assert re.search(r"\b[1-9]\d* passed", proc.stdout), proc.stdout[-1000:]
        else:
            exec(compile(code, f"{page} block {k}", "exec"), dict(namespace))


def test_every_toml_block_is_a_pyproject_that_gates(project: Path, shared_cache: Path, tmp_path: Path) -> None:
    """Each pyproject.toml block (README, quick start, per-model tables), as a project's: `pytest` alone checks
    its models and passes.  (The options page's block of every key is run by tests/test_examples.py.)"""
    import tomllib

    blocks = [(page, code) for page, _, code in _blocks("toml") if "cvdnn_cache_dir" not in code]
    from pytest_cvdnn.runners import ENTRY_POINT_GROUP

    metadata = [code for _, code in blocks if code.startswith("[project.")]  # (a package's metadata)
    assert metadata and all(set(tomllib.loads(code)["project"]["entry-points"]) == {ENTRY_POINT_GROUP}
                            for code in metadata)
    blocks = [(page, code) for page, code in blocks if not code.startswith("[project.")]
    assert len(blocks) >= 3
    for page, code in blocks:
        tomllib.loads(code)
        folder = tmp_path / page.replace("/", "_")
        shutil.copytree(project, folder)
        (folder / "pyproject.toml").write_text(code)
        proc = _pytest(folder, [], shared_cache)
        assert proc.returncode == 0, (page, proc.stdout[-3000:] + proc.stderr[-2000:])
        assert "models/classifier.keras: 11 passed" in proc.stdout, proc.stdout[-2000:]
        if "detector.onnx" in code:
            assert re.search(r"models/detector.onnx: \d+ passed", proc.stdout), proc.stdout[-2000:]


def test_yaml_and_json_blocks() -> None:
    """YAML blocks include the CI recipes of examples/ci (run by tests/test_examples.py); JSON blocks parse."""
    yaml_blocks = _blocks("yaml")
    assert len(yaml_blocks) == 2
    for _, _, code in yaml_blocks:
        included = re.fullmatch(r'--8<-- "(examples/ci/[\w.-]+)"\n', code)
        assert included and (ROOT / included.group(1)).is_file(), code
    for _, _, code in _blocks("json"):
        json.loads(code)


def test_readme_is_short_and_its_links_work_on_pypi() -> None:
    """The README is what it is for (the two commands, a quick start, links: under 1,500 words), and every link
    and image is absolute (PyPI renders it away from the repository)."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.split()) <= 1500
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert links and all(link.startswith("https://") for link in links), links
    base = "https://github.com/pytest-cvdnn/pytest-cvdnn/blob/main/"
    for link in links:
        if link.startswith(base):
            assert (ROOT / link[len(base):].split("#")[0]).is_file(), link


def test_one_version_and_the_release_workflow() -> None:
    import tomllib

    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M).group(1) == project["version"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "Framework :: Pytest" in project["classifiers"] and set(project["urls"]) >= {"Documentation", "Repository"}
    release = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    publish = release["jobs"]["publish"]
    assert publish["permissions"] == {"id-token": "write"}  # trusted publishing, no token
    assert publish["steps"][-1]["uses"].startswith("pypa/gh-action-pypi-publish")
    runs = " ".join(step.get("run", "") for step in release["jobs"]["build"]["steps"])
    assert "python -m build" in runs and ".ci/wheel-smoke dist" in runs
    assert "bash .ci/wheel-smoke" in (ROOT / ".ci" / "run").read_text()  # (CI runs the same smoke test)


def test_the_sdist_carries_what_its_tests_need(tmp_path: Path) -> None:
    """Built as the release builds it (setuptools' PEP 517 backend): the suite with its conftest and helpers, the
    examples with the shipped model, the docs, tox.ini and the licence."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                           "print(b.build_sdist(sys.argv[1]))", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = proc.stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    for needed in ("tests/conftest.py", "tests/onnx_mutants.py", "tests/test_docs.py", "examples/tiny_cnn.keras",
                   "examples/ci/gitlab-ci.yml", "docs/quickstart.md", "mkdocs.yml", "tox.ini", "LICENSE",
                   ".ci/run", "src/pytest_cvdnn/plugin.py"):
        assert needed in members, needed
    assert not [m for m in members if "__pycache__" in m]
