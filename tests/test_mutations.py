"""The standing mutation check (zoo tier, which CI runs): each named mutation of a decision point
(tests/decision_mutations.py) is applied to a copy of src/, and the tests named for it must fail against that
copy; the unmutated copy passes them all first, so each kill is the mutation's doing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from decision_mutations import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[1]


def _copy(dest: Path, mutation: Mutation | None = None) -> Path:
    src = dest / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if mutation is not None:
        path = src / "pytest_cvdnn" / mutation.file
        text = path.read_text()
        assert text.count(mutation.old) == 1, f"{mutation.name}: the snippet is not found once in {mutation.file}"
        path.write_text(text.replace(mutation.old, mutation.new))
    return src


def _run(src: Path, tests: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist",
                           f"--basetemp={tmp}", *tests], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)


@pytest.mark.zoo
def test_every_named_mutation_of_a_decision_point_fails_its_tests(tmp_path: Path) -> None:
    every = sorted({t for m in MUTATIONS for t in m.tests})
    control = _run(_copy(tmp_path / "control"), every, tmp_path / "control-tmp")
    assert control.returncode == 0, "the unmutated copy must pass the tests:\n" + control.stdout[-3000:]
    rows, survivors = [], []
    for m in MUTATIONS:
        run = _run(_copy(tmp_path / m.name, m), list(m.tests), tmp_path / f"{m.name}-tmp")
        killed = run.returncode == 1  # tests failed (2: interrupted or a collection error, which proves nothing)
        rows.append(f"  {'killed ' if killed else 'SURVIVED'} {m.name:<30} {m.why}")
        if not killed:
            survivors.append((m.name, run.returncode, run.stdout[-1500:]))
    print("named mutations of the decision points:\n" + "\n".join(rows))
    assert not survivors, survivors


def test_the_mutations_name_existing_code_and_tests() -> None:
    """Every mutation's snippet occurs once in its file and every test it names exists (a refactor that moves
    either fails here, in the default tier, not only in the zoo)."""
    for m in MUTATIONS:
        text = (ROOT / "src" / "pytest_cvdnn" / m.file).read_text()
        assert text.count(m.old) == 1, (m.name, m.file)
        for test in m.tests:
            file, _, name = test.partition("::")
            assert f"def {name}(" in (ROOT / file).read_text(), (m.name, test)
