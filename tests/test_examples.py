"""The README's main command and the shipped examples, run as a user would (from the repo root)."""

from __future__ import annotations

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
