"""The README quotes measured numbers from stored result files only: each quoted block equals what
benchmarks/quote.py renders from its file, and the constants it names are the code's (quick tier)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from quote import BLOCKS, quoted, render  # noqa: E402


def test_every_quoted_block_is_rendered_from_its_result_file() -> None:
    found = quoted((ROOT / "README.md").read_text())
    assert set(found) == set(BLOCKS), f"README blocks {sorted(found)}, renderers {sorted(BLOCKS)}"
    for name in BLOCKS:
        assert found[name] == " ".join(render(name).split()), (
            f"the README's {name} block differs from benchmarks/{BLOCKS[name][0]}: paste the output of "
            "`python benchmarks/quote.py`")


def test_the_memory_per_value_the_readme_quotes_is_the_codes() -> None:
    from pytest_cvdnn.inputs import PEAK_BYTES_PER_VALUE

    assert f"({PEAK_BYTES_PER_VALUE} bytes per input value and sample at their peak" in (ROOT / "README.md").read_text()


def test_a_changed_result_file_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a result that moves changes the rendered block."""
    import json

    import quote

    data = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    data["cold_s"] = data["cold_s"] + 1.0
    (tmp_path / "results.json").write_text(json.dumps(data))
    monkeypatch.setattr(quote, "HERE", tmp_path)
    assert " ".join(render("bench_gate").split()) != quoted((ROOT / "README.md").read_text())["bench_gate"]
