"""The agreement item on 500 images at 96x96 against a plain script doing the same decodes and forwards.

    python benchmarks/bench_agreement.py     # ~3 minutes; writes benchmarks/results_agreement.json

The model: a small CNN (96x96x3, ``weights`` seeded, Rescaling at its input).  The images: 500 JPEGs of 128x128
in 4 class folders.  Measured in one run, interleaved, best of 3:

- **plain**: a script, timed as a whole process (its imports and model loading included, as a user runs it),
  that reads every image with ``cv2.imread`` + ``blobFromImage`` and runs cv2.dnn on the converted ONNX (batches
  of 64), reads every image with ``keras.utils.load_img`` and runs the Keras model (batches of 64), and counts
  the images whose top-1 classes agree.
- **gate**: ``pytest --cvdnn-model=m.keras --cvdnn-images=imgs -k agreement``, timed as a whole process, with the
  conversion cached (by an earlier run) and the outputs cache emptied, so both sides are computed; and **warm**:
  the same command again (both sides' outputs cached by content: no TensorFlow imported).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
COUNT, SIDE, SIZE = 500, 128, 96

BUILD = f"""
import keras, numpy as np
keras.utils.set_random_seed(0)
inp = keras.Input(({SIZE}, {SIZE}, 3), name="image")
x = keras.layers.Rescaling(1 / 255.0)(inp)
for f in (8, 16, 32):
    x = keras.layers.Conv2D(f, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
x = keras.layers.GlobalAveragePooling2D()(x)
keras.Model(inp, keras.layers.Dense(4, activation="softmax", name="probs")(x)).save("m.keras")
"""

PLAIN = f"""
import sys, time, numpy as np, cv2, keras
from pathlib import Path
files = sorted(p for p in Path("imgs").rglob("*.jpg"))
model = keras.saving.load_model("m.keras")
net = cv2.dnn.readNetFromONNX(sys.argv[1])
deployed, training = [], []
for k in range(0, len(files), 64):
    chunk = files[k:k + 64]
    blob = cv2.dnn.blobFromImages([cv2.imread(str(p), cv2.IMREAD_COLOR) for p in chunk], 1.0, ({SIZE}, {SIZE}),
                                  (0, 0, 0), swapRB=True, crop=False)
    net.setInput(blob)
    deployed.append(net.forward().argmax(1))
    x = np.stack([keras.utils.img_to_array(keras.utils.load_img(str(p), target_size=({SIZE}, {SIZE})))
                  for p in chunk])
    training.append(np.asarray(model(x)).argmax(1))
agree = int((np.concatenate(deployed) == np.concatenate(training)).sum())
print(agree)
"""


def main() -> None:
    import cv2

    work = Path(tempfile.mkdtemp(prefix="cvdnn-bench-agreement-"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        subprocess.run([sys.executable, "-c", BUILD], cwd=work, check=True, env=env)
        rng = np.random.default_rng(0)
        for k in range(COUNT):
            folder = work / "imgs" / f"class{k % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, (SIDE // 8, SIDE // 8, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / f"{k:04d}.jpg"), cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC))
        gate = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "--cvdnn-model=m.keras",
                "--cvdnn-images=imgs", "--cvdnn-min-agreement=0.01", "--cvdnn-max-accuracy-drop=0.99",
                f"--cvdnn-cache-dir={work / 'cache'}", f"--cvdnn-report={work / 'r.json'}", "-q"]
        subprocess.run(gate, cwd=work, env=env, capture_output=True)  # (converts: cached from here on)
        onnx = next((work / "cache").rglob("*.onnx"))

        def item() -> tuple[float, int]:  # (the item's own seconds, and its count)
            data = json.loads((work / "r.json").read_text())["models"][0]["checks"]["agreement"]
            return float(data["seconds"]), int(data["data"]["agree"])

        plain, cold, warm = [], [], []

        def timed(cmd: list[str]) -> tuple[float, str]:
            start = time.perf_counter()
            out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            return time.perf_counter() - start, out.stdout

        for _ in range(3):
            seconds, out = timed([sys.executable, "-c", PLAIN, str(onnx)])
            plain.append(seconds)
            plain_agree = out.split()[-1]
            shutil.rmtree(work / "cache" / "outputs", ignore_errors=True)  # (both sides computed again)
            cold.append(timed([*gate, "-k", "agreement"])[0])
            agree = item()[1]
            warm.append(timed([*gate, "-k", "agreement"])[0])
        result = {"images": COUNT, "side": SIDE, "size": SIZE, "plain_s": min(plain), "gate_s": min(cold),
                  "warm_s": min(warm), "ratio": min(cold) / min(plain), "warm_ratio": min(warm) / min(plain),
                  "agree_plain": int(plain_agree), "agree_gate": agree,
                  "measured": time.strftime("%Y-%m-%d"), "runs": {"plain": plain, "gate": cold, "warm": warm}}
        (HERE / "results_agreement.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
