"""Detection and false-alarm rates of the fault corpus, measured by running it.

    python benchmarks/fault_corpus.py        # ~6 minutes on 2 cores; writes results_corpus.json, prints the table
    python benchmarks/fault_corpus.py --targets 4.12.0,5.0.0   # the correct zoo on two more OpenCVs too

Runs tests/test_corpus.py, the planted preprocessing mistakes of tests/test_preprocessing.py and
the crash of tests/test_hostile.py (with pytest-xdist when installed) and reads what each case
recorded (``corpus_*`` properties in the JUnit XML): a fault counts as caught only when its test
passed, i.e. every assertion held — the right item failed, with the right explanation and the
right localisation, fixed in the test before the run; a correct deployment counts as a false
alarm when any of its items failed, and its skipped items are listed (a skip is not a pass).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from datetime import date
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results_corpus.json"
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

from pytest_cvdnn.convert import tool_versions  # noqa: E402


def main() -> int:
    import os

    env = dict(os.environ)
    if "--targets" in sys.argv:
        env["CVDNN_CORPUS_TARGETS"] = sys.argv[sys.argv.index("--targets") + 1]
    env["CVDNN_ZOO"] = "1"  # the corpus is in the zoo, which a plain `pytest` leaves out
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "corpus.xml"
        # pytest-benchmark (if installed) turns xdist into a warning, an error under filterwarnings=error
        parallel = ["-n", "2", "-p", "no:benchmark"] if find_spec("xdist") else []
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *parallel, "tests/test_corpus.py",
               "tests/test_preprocessing.py::test_planted_mistake_is_diagnosed",
               "tests/test_hostile.py::test_an_opencv_crash_in_a_child_fails_one_item_not_the_session",
               f"--junitxml={xml}"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        if not xml.is_file():
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            return 1
        rows = []
        for case in ET.parse(xml).getroot().iter("testcase"):
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            if "corpus_kind" in props:
                props["test_passed"] = str(case.find("failure") is None and case.find("error") is None
                                           and case.find("skipped") is None)
                rows.append(props)
    faults = [r for r in rows if r["corpus_kind"] == "fault"]
    correct = [r for r in rows if r["corpus_kind"] == "correct"]
    for r in faults:  # caught = the test passed: item, explanation and localisation all asserted
        r["corpus_detected"] = r["test_passed"]
    for r in correct:  # a false alarm = a failed item (the test fails too)
        r["corpus_detected"] = str(r.get("corpus_detected") == "True" or r["test_passed"] != "True")
    table = []
    for r in faults + correct:
        if r["corpus_kind"] == "fault":
            outcome = ("caught" if r["corpus_detected"] == "True" else "**missed**") + (
                f" — {r['corpus_explanation']}" if r.get("corpus_explanation") else "")
        else:
            skipped = r.get("corpus_skipped") or ""
            outcome = ("**false alarm**" if r["corpus_detected"] == "True"
                       else f"no failure; skipped: {skipped}" if skipped else "all pass")
        table.append({"case": r["corpus_case"], "kind": r["corpus_kind"], "item": r["corpus_item"], "outcome": outcome,
                      "counted": r["corpus_detected"] == "True"})
    result = {"date": date.today().isoformat(), "targets": env.get("CVDNN_CORPUS_TARGETS", ""),
              "versions": {k: v for k, v in tool_versions().items() if k in ("opencv", "onnxruntime", "tf2onnx", "keras")},
              "rows": table, "pytest_exit": proc.returncode}
    if not result["targets"]:  # (the stored table is the plain run's; a run with targets only prints)
        RESULT.write_text(json.dumps(result, indent=1) + "\n")
    from quote import corpus_table

    print(corpus_table(result))
    return 0 if proc.returncode == 0 else proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
