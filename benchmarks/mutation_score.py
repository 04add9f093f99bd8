"""Mutation score of the pure modules, regenerated: runs mutmut (configured in pyproject.toml) and writes
benchmarks/results_mutation.json, from which benchmarks/quote.py renders the table benchmarks/README.md quotes.

    python benchmarks/mutation_score.py            # mutmut run --max-children 2, then the table
    python benchmarks/mutation_score.py --read     # the table of the last run (mutants/), without running

The score is killed (timeouts and type-check catches count as killed, as mutmut counts them) over every
mutant, "no tests" included: code the quick tier does not reach lowers the score."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results_mutation.json"

#: mutmut's exit code of a mutant's test run -> its status (mutmut.stats.status_by_exit_code, 3.8)
KILLED = {1, 3, 36, 24, -24, 152, 255, 37}
SURVIVED = {0}
NO_TESTS = {5, 33}


def tally(meta: dict) -> dict[str, int]:
    codes = list(meta["exit_code_by_key"].values())
    counts = {
        "mutants": len(codes),
        "killed": sum(c in KILLED for c in codes),
        "survived": sum(c in SURVIVED for c in codes),
        "no_tests": sum(c in NO_TESTS for c in codes),
        "not_checked": sum(c is None for c in codes),
    }
    counts["other"] = counts["mutants"] - sum(counts[k] for k in ("killed", "survived", "no_tests", "not_checked"))
    return counts


def read(seconds: float | None = None) -> dict:
    modules = {}
    for meta in sorted((ROOT / "mutants" / "src").rglob("*.py.meta")):
        counts = tally(json.loads(meta.read_text()))
        if counts["mutants"]:
            modules[meta.name.removesuffix(".meta")] = counts
    if not modules:
        raise SystemExit("no mutmut results under mutants/: run without --read")
    total = {k: sum(m[k] for m in modules.values()) for k in next(iter(modules.values()))}
    for counts in [*modules.values(), total]:
        counts["score"] = round(100.0 * counts["killed"] / counts["mutants"], 1)
    return {"date": date.today().isoformat(), "mutmut": version("mutmut"), "seconds": seconds,
            "modules": modules, "total": total}


def main(argv: list[str]) -> int:
    seconds = None
    if "--read" not in argv:
        resumed = (ROOT / "mutants").exists()  # (mutmut goes on from a stopped run: its time is not the run's)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", "2"], cwd=ROOT, check=False,
                       stdout=subprocess.DEVNULL)
        seconds = None if resumed else round(time.perf_counter() - start)
    result = read(seconds)
    if result["total"]["not_checked"]:
        raise SystemExit(f"{result['total']['not_checked']} mutants were not checked: the run was cut short")
    RESULT.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from quote import render

    print(render("mutation"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
