"""The docs quote measured numbers from stored result files only: each quoted block equals what
benchmarks/quote.py renders from its file, and the constants it names are the code's (quick tier)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from quote import BLOCKS, quoted, render  # noqa: E402


def test_every_quoted_block_is_rendered_from_its_result_file() -> None:
    from quote import DOCUMENTS

    found: set[str] = set()
    for doc in DOCUMENTS:  # (a block may be quoted in several documents: each copy is checked)
        for name, text in quoted((ROOT / doc).read_text()).items():
            assert name in BLOCKS, f"{doc} quotes {name!r}, which no renderer makes"
            found.add(name)
            assert text == " ".join(render(name).split()), (
                f"the {name} block of {doc} differs from benchmarks/{BLOCKS[name][0]}: paste the output of "
                "`python benchmarks/quote.py`")
    assert found == set(BLOCKS), f"quoted blocks {sorted(found)}, renderers {sorted(BLOCKS)}"


def test_the_mutation_score_the_docs_quote_is_at_least_85_percent() -> None:
    import json

    result = json.loads((ROOT / "benchmarks" / "results_mutation.json").read_text())
    assert result["total"]["score"] >= 85.0, result["total"]
    assert result["total"]["not_checked"] == 0
    configured = {Path(f).name for f in _mutmut_config()["only_mutate"]}
    assert configured == set(result["modules"]), "the stored run is not of the configured modules: run it again"


def _mutmut_config() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]


def test_the_memory_per_value_the_readme_quotes_is_the_codes() -> None:
    from pytest_cvdnn.inputs import PEAK_BYTES_PER_VALUE

    assert f"({PEAK_BYTES_PER_VALUE} bytes per input value and sample at their peak" in (ROOT / "docs" / "configuration.md").read_text()


def test_a_changed_result_file_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a result that moves changes the rendered block."""
    import json

    import quote

    data = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    data["cold_s"] = data["cold_s"] + 1.0
    (tmp_path / "results.json").write_text(json.dumps(data))
    monkeypatch.setattr(quote, "HERE", tmp_path)
    assert " ".join(render("bench_gate").split()) != quoted((ROOT / "docs" / "speed.md").read_text())["bench_gate"]


def test_user_facing_text_never_names_the_projects_own_issues() -> None:
    """Messages (every string in src/), the README, the docs, the changelog and the benchmarks' README speak of
    the product, never of how the work was organised ("issue 15's zoo")."""
    import re

    pattern = re.compile(r"\bissues? ?#?\d+", re.IGNORECASE)
    files = [*(ROOT / "src").rglob("*.py"), ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md",
             *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*.py")]
    found = [f"{f.relative_to(ROOT)}:{n}: {line.strip()[:120]}" for f in files
             for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    assert not found, found


def test_the_named_mutation_count_the_readme_quotes_is_the_lists() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from decision_mutations import MUTATIONS

    assert f"prints the table (all {len(MUTATIONS)} killed)" in (ROOT / "docs" / "development.md").read_text()
