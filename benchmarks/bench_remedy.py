"""The remedy search against the cold gate, measured in one run (issue 15).

    python benchmarks/bench_remedy.py     # prints a markdown table, writes benchmarks/results_remedy.json

DenseNet121 (weights=None, 224x224, seeded) converted at opset 13 does not load in OpenCV 4.5.5 (its
GlobalAveragePooling's Squeeze takes its axes as an input).  Measured, each with an empty cache:

* cold gate: ``pytest --cvdnn-model=densenet121.keras`` (this OpenCV: everything loads);
* the same gate with ``--cvdnn-target=opencv==4.5.5``: the load item's ``remedy_seconds`` (the ONNX
  rewrites, then — only if none works — the Keras-level re-conversions) against the cold gate;
* the same for the converted ``densenet121.onnx`` as the source: whether TensorFlow gets imported.
Before issue 15 the search re-converted the Keras model eight times (50 s here against a 10 s gate).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_gate import ENV, save_densenet121  # noqa: E402
PROBE = """
import json, sys
def pytest_sessionfinish(session):
    json.dump({"tf": "tensorflow" in sys.modules}, open("probe.json", "w"))
"""


def run(cmd: list[str], cwd: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, json.loads((cwd / "report.json").read_text())


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cvdnn-remedy-"))
    py = sys.executable
    save_densenet121(work)
    (work / "conftest.py").write_text(PROBE)
    pytest = [py, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "--cvdnn-report=report.json"]
    subprocess.run([*pytest, "--cvdnn-model=densenet121.keras", "--cvdnn-cache-dir=warmup",
                    "--cvdnn-target=opencv==4.5.5", "-k", "nothing"], cwd=work, env=ENV, capture_output=True)
    cold_s, _ = run([*pytest, "--cvdnn-model=densenet121.keras", "--cvdnn-cache-dir=cold"], work)
    target_s, report = run([*pytest, "--cvdnn-model=densenet121.keras", "--cvdnn-cache-dir=target",
                            "--cvdnn-target=opencv==4.5.5"], work)
    load = report["models"][0]["checks"]["load[opencv-4.5.5]"]
    remedy_s = float(load["data"].get("remedy_seconds", float("nan")))
    onnx = next((work / "target" / "onnx").glob("*/model.onnx"))
    shutil.copyfile(onnx, work / "densenet121.onnx")
    onnx_s, onnx_report = run([*pytest, "--cvdnn-model=densenet121.onnx", "--cvdnn-cache-dir=onnx",
                               "--cvdnn-target=opencv==4.5.5", "-k", "load"], work)
    onnx_load = onnx_report["models"][0]["checks"]["load[opencv-4.5.5]"]
    results = {
        "cold_gate_s": round(cold_s, 2),
        "gate_with_4_5_5_target_s": round(target_s, 2),
        "remedy_s": round(remedy_s, 2),
        "remedy_over_cold": round(remedy_s / cold_s, 3),
        "remedy": load["message"].split("; remedy: ", 1)[-1].split(":", 1)[0] if "; remedy: " in load["message"]
        else "none",
        "keras_reconversions": len(load["data"].get("remedies", [])),
        "onnx_source_remedy_s": float(onnx_load["data"].get("remedy_seconds", float("nan"))),
        "onnx_source_imports_tf": json.loads((work / "probe.json").read_text())["tf"],
        "onnx_source_fixed": bool(onnx_load["data"].get("fixed_onnx")),
    }
    rows = [("cold gate, DenseNet121 (s)", results["cold_gate_s"], ""),
            ("same gate + opencv==4.5.5 target (s)", results["gate_with_4_5_5_target_s"], ""),
            ("remedy search on 4.5.5 (s)", results["remedy_s"], ""),
            ("remedy / cold gate", results["remedy_over_cold"], "<= 0.3"),
            ("remedy found", results["remedy"], ""),
            ("Keras re-conversions", results["keras_reconversions"], "0"),
            ("ONNX source: remedy (s) / fixed / imports TensorFlow",
             f"{results['onnx_source_remedy_s']} / {results['onnx_source_fixed']} / {results['onnx_source_imports_tf']}",
             "- / True / False")]
    print("| measure | value | goal |\n| --- | --- | --- |")
    for name, value, goal in rows:
        print(f"| {name} | {value} | {goal} |")
    (HERE / "results_remedy.json").write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
