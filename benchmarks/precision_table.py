"""Which OpenCV loads, runs and agrees on the shipped example made FP16 and INT8, from a real run of the plugin.

    python benchmarks/precision_table.py     # one session: --cvdnn-quantize=fp16,int8 on every supported OpenCV

Runs ``pytest --cvdnn-model=examples/tiny_cnn.keras --cvdnn-quantize=fp16,int8`` with the local OpenCV and each
side-by-side target, on pictures of the model's classes (``--cvdnn-inputs``: what the INT8 variant is calibrated
on and what every item compares), and stores the JSON report's per-precision rows in
benchmarks/results_precision.json, from which benchmarks/quote.py renders the table docs/precision.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results_precision.json"
#: the side-by-side OpenCVs besides the local one (the supported range)
TARGETS = ("4.5.5", "4.8.1", "4.12.0", "5.0.0")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    import cv2

    from examples.build_tiny_cnn import make_images

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "samples").mkdir()
        for k, image in enumerate(make_images(8, seed=4)[0]):
            np.save(folder / "samples" / f"{k}.npy", image.astype(np.float32))
        (folder / "pytest.ini").write_text("[pytest]\n")
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
               f"--cvdnn-model={ROOT / 'examples' / 'tiny_cnn.keras'}", "--cvdnn-inputs=samples",
               "--cvdnn-quantize=fp16,int8", "--cvdnn-report=report.json", "-k", "fp16: or int8:",
               *(f"--cvdnn-target=opencv=={v}" for v in TARGETS)]
        subprocess.run(cmd, cwd=folder, check=False, stdout=subprocess.DEVNULL)
        report = json.loads((folder / "report.json").read_text())
    rows = report["models"][0]["precision"]
    for row in rows:  # (the local OpenCV by its version, as the targets are)
        if row["target"] == "local":
            row["target"] = f"opencv-{cv2.__version__.split('+')[0]}"
    RESULT.write_text(json.dumps({"date": date.today().isoformat(), "model": "examples/tiny_cnn.keras",
                                  "samples": 8, "rows": rows}, indent=1, sort_keys=True) + "\n")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from quote import render

    print(render("precision"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
