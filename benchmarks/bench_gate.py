"""Cold gate, warm gate and xdist scale of `pytest --cvdnn-model=...`, as ratios measured in one run.

    python benchmarks/bench_gate.py            # prints a markdown table, writes benchmarks/results.json

* plain: a script doing the same core work by hand (tf2onnx conversion, Keras, onnxruntime and
  cv2.dnn on the same 4 inputs, compare) — what a user would write without the plugin;
* cold: the plugin on DenseNet121(weights=None) with an empty cache;
* warm: the same command again (nothing changed): no conversion, no TensorFlow import;
* scale: four MobileNetV2 (224x224, weights=None) with -n 2 against -n 0 (fresh caches, best of three),
  and four toy CNNs (128x128, 3 convolutions) where the fixed cost (starting the workers, importing
  TensorFlow) dominates.
* cold in-process: the cold gate with ``--cvdnn-tf-in-process`` (TensorFlow in the pytest process,
  not in the helper process), to show what the helper buys.
Peak RSS: the largest peak (VmHWM) of any process of the command's tree (the pytest process, the
TensorFlow helper and its job processes), and the pytest process's own peak (``getrusage(RUSAGE_SELF)``
at the end of the session).  Plain, cold and warm are each measured
twice (the best of two counts; run-to-run noise here is ~10 %).  Every command runs with bytecode
caching on (this machine sets PYTHONDONTWRITEBYTECODE=1, which makes every pytest start re-compile
and re-rewrite its plugins: about a second per command).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

PLAIN = r"""
import os, sys, numpy as np
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf, keras, tf2onnx, onnxruntime as ort, cv2
model = keras.models.load_model(sys.argv[1], compile=False)
sig = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="input"),)
tf2onnx.convert.from_keras(model, input_signature=sig, opset=13, output_path=sys.argv[2], inputs_as_nchw=["input"])
x = np.random.default_rng(0).uniform(-2, 2, (4, 224, 224, 3)).astype(np.float32)
ref = model(x, training=False).numpy()
nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
sess = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
o = sess.run(None, {sess.get_inputs()[0].name: nchw})[0]
net = cv2.dnn.readNetFromONNX(sys.argv[2])
c = []
for i in range(4):
    net.setInput(nchw[i:i + 1]); c.append(net.forward())
c = np.concatenate(c)
print("max abs", float(np.abs(ref - o).max()), float(np.abs(ref - c).max()))
"""

#: the floor of a warm gate: the same imports (pytest, numpy, cv2) and the same forwards of the shipped net a warm
#: run does (counted: the 4 samples, the blobs of the 3 photos of the preprocessing check, and sample 0 again for
#: determinism; the batch child's outputs are replayed from the cache)
WARM_FLOOR = r"""
import sys, numpy as np, pytest, cv2
net = cv2.dnn.readNetFromONNX(sys.argv[1])
x = np.random.default_rng(0).uniform(0, 255, (7, 3, 224, 224)).astype(np.float32)
for i in range(7):
    net.setInput(x[i:i + 1]); net.forward()
net.setInput(x[:1]); net.forward()
"""

#: the floor of a cold ONNX-only gate: validate the graph, onnxruntime on the 4 samples, cv2.dnn on each sample,
#: on the batch of 4 and on a fresh net (determinism) — the same imports as the plugin (pytest, onnx,
#: onnxruntime, cv2)
ONNX_FLOOR = r"""
import sys, numpy as np, pytest, onnx, onnxruntime as ort, cv2
onnx.checker.check_model(sys.argv[1])
x = np.random.default_rng(0).uniform(0, 255, (4, 3, 224, 224)).astype(np.float32)
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
net = cv2.dnn.readNetFromONNX(sys.argv[1])
out = []
for i in range(4):
    net.setInput(x[i:i + 1]); out.append(net.forward())
net.setInput(x); batch = net.forward()
fresh = cv2.dnn.readNetFromONNX(sys.argv[1])
fresh.setInput(x[:1]); again = fresh.forward()
print(float(np.abs(np.concatenate(out) - ref).max()), float(np.abs(batch - ref).max()),
      float(np.abs(again - out[0]).max()))
"""

#: a factory module the way most users write it: Keras imported at the top
FACTORY = """
import keras


def densenet121():
    keras.utils.set_random_seed(121)
    return keras.applications.DenseNet121(weights=None)
"""

TF_PROBE = """
import json, resource, sys
def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        json.dump({"tf": "tensorflow" in sys.modules,
                   "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, open("probe.json", "w"))
"""

MOBILENETS = r"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
for i in range(4):
    keras.utils.set_random_seed(100 + i)
    keras.applications.MobileNetV2(weights=None).save(f"mnv2_{i}.keras")
"""

SMALL = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
for i in range(4):
    keras.utils.set_random_seed(i)
    inp = keras.Input((128, 128, 3))
    x = inp
    for f in (16, 32, 64):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x), name=f"small{i}").save(f"small{i}.keras")
"""


def _tree(root: int) -> set[int]:
    """``root`` and its descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, grown = {root}, True
    while grown:
        grown = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grown = True
    return tree


def _peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def quick(cmd: list[str], cwd: Path) -> float:
    """Seconds of a short command, nothing sampled beside it (on 2 cores a sampler would slow what it times)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return seconds


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(seconds, peak RSS in MiB of the largest process of the command's tree, result).

    The tree (the pytest process, the TensorFlow helper and its job processes, xdist workers) is
    sampled every 0.2 s for each process's VmHWM (its own peak so far: a high-water mark).
    """
    peaks: dict[int, int] = {}
    start = time.perf_counter()
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) as popen:

        def sample() -> None:  # beside the wait, so the time is not rounded up to the sampling period
            while popen.returncode is None and popen.poll() is None:
                for pid in _tree(popen.pid) if Path("/proc").is_dir() else ():
                    peaks[pid] = max(peaks.get(pid, 0), _peak_kib(pid))
                time.sleep(0.2)

        sampler = ThreadPoolExecutor(1).submit(sample)
        out, err = popen.communicate()
        seconds = time.perf_counter() - start
        sampler.result()
    proc = subprocess.CompletedProcess(cmd, popen.returncode, out, err)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return seconds, max(peaks.values(), default=0) / 1024 or float("nan"), proc


def save_densenet121(work: Path) -> None:
    """DenseNet121(weights=None), seeded, saved as ``work/densenet121.keras`` (the model the benchmarks measure)."""
    subprocess.run([sys.executable, "-c", "import os; os.environ['TF_CPP_MIN_LOG_LEVEL']='3'\nimport keras\n"
                    "keras.utils.set_random_seed(121)\n"
                    "keras.applications.DenseNet121(weights=None).save('densenet121.keras')"], cwd=work, check=True,
                   env=ENV)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cvdnn-bench-"))
    env_py = sys.executable
    save_densenet121(work)
    (work / "conftest.py").write_text(TF_PROBE)
    pytest = [env_py, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    results: dict[str, float | str | bool] = {}

    gate = [*pytest, "--cvdnn-model=densenet121.keras", "--cvdnn-cache-dir=cache"]
    plain, cold, warm, inproc = [], [], [], []

    def probe() -> dict[str, float | bool]:
        return json.loads((work / "probe.json").read_text())

    for attempt in range(2):
        plain.append(timed([env_py, "-c", PLAIN, "densenet121.keras", "plain.onnx"], work)[:2])
        shutil.rmtree(work / "cache", ignore_errors=True)
        cold.append((*timed(gate, work)[:2], probe()["rss_mib"]))
        cold_tf = probe()["tf"]
        warm.append((*timed(gate, work)[:2], probe()["rss_mib"]))
        warm_tf = probe()["tf"]
        shutil.rmtree(work / "cache", ignore_errors=True)
        inproc.append((*timed([*gate, "--cvdnn-tf-in-process"], work)[:2], probe()["rss_mib"]))
    (plain_s, plain_rss), (cold_s, cold_rss, cold_own), (warm_s, warm_rss, warm_own) = min(plain), min(cold), min(warm)
    inproc_s, inproc_rss, inproc_own = min(inproc)
    conversions = len((work / "cache" / "events.jsonl").read_text().splitlines())

    # floors, interleaved with the runs they bound (best of five: these are short)
    shutil.rmtree(work / "cache", ignore_errors=True)
    subprocess.run(gate, cwd=work, env=ENV, capture_output=True, check=True)  # the cache, for the warm runs
    onnx_path = next((work / "cache" / "onnx").glob("*/model.onnx"))
    shutil.copyfile(onnx_path, work / "densenet121.onnx")
    warm2, warm_floor, onnx_cold, onnx_floor, polygraphy = [], [], [], [], []
    onnx_gate = [*pytest, "--cvdnn-model=densenet121.onnx", "--cvdnn-cache-dir=onnx-cache"]
    for attempt in range(7):
        warm2.append(quick(gate, work))
        warm_floor.append(quick([env_py, "-c", WARM_FLOOR, "densenet121.onnx"], work))
        shutil.rmtree(work / "onnx-cache", ignore_errors=True)
        onnx_cold.append(quick(onnx_gate, work))
        onnx_floor.append(quick([env_py, "-c", ONNX_FLOOR, "densenet121.onnx"], work))
        if shutil.which("polygraphy"):  # side by side, when installed (not a dependency)
            polygraphy.append(quick(["polygraphy", "run", "densenet121.onnx", "--onnxrt"], work))

    # a factory module importing Keras at its top: cold, then warm (nothing changed)
    (work / "factories.py").write_text(FACTORY)
    factory_gate = [*pytest, "--cvdnn-model=factories:densenet121", "--cvdnn-cache-dir=factory-cache"]
    factory_cold, factory_warm = [], []
    for attempt in range(2):
        shutil.rmtree(work / "factory-cache", ignore_errors=True)
        factory_cold.append(timed(factory_gate, work)[0])
        factory_warm.append(quick(factory_gate, work))
        factory_warm_tf = probe()["tf"]

    scale = {}
    for label, script, stem in (("mnv2", MOBILENETS, "mnv2_"), ("small", SMALL, "small")):
        subprocess.run([env_py, "-c", script], cwd=work, check=True, env=ENV)
        models = [f"--cvdnn-model={stem}{i}.keras" for i in range(4)]
        serial, par = [], []
        for attempt in range(3):  # best of three, fresh caches each time
            for folder in (f"{label}0", f"{label}2"):
                shutil.rmtree(work / folder, ignore_errors=True)
            serial.append(timed([*pytest, *models, f"--cvdnn-cache-dir={label}0", "-n", "0"], work)[0])
            par.append(timed([*pytest, "-p", "no:benchmark", *models, f"--cvdnn-cache-dir={label}2", "-n", "2"],
                             work)[0])
        par_count = len((work / f"{label}2" / "events.jsonl").read_text().splitlines())
        scale[label] = (min(serial), min(par), par_count)
    serial_s, par_s, par_conversions = scale["mnv2"]
    small_serial_s, small_par_s, _ = scale["small"]

    results.update(
        machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        plain_s=round(plain_s, 1), cold_s=round(cold_s, 1), warm_s=round(warm_s, 1),
        cold_over_plain=round(cold_s / plain_s, 2), warm_over_cold=round(warm_s / cold_s, 3),
        cold_imports_tf=cold_tf, warm_imports_tf=warm_tf, densenet_conversions=conversions,
        scale_serial_s=round(serial_s, 1), scale_n2_s=round(par_s, 1), scale_speedup=round(serial_s / par_s, 2),
        scale_conversions=par_conversions, scale_small_serial_s=round(small_serial_s, 1),
        scale_small_n2_s=round(small_par_s, 1), scale_small_speedup=round(small_serial_s / small_par_s, 2),
        cold_in_process_s=round(inproc_s, 1), cold_in_process_over_plain=round(inproc_s / plain_s, 2),
        peak_rss_plain_mib=round(plain_rss), peak_rss_cold_mib=round(cold_rss), peak_rss_warm_mib=round(warm_rss),
        peak_rss_cold_in_process_mib=round(inproc_rss),
        pytest_rss_cold_mib=round(cold_own), pytest_rss_warm_mib=round(warm_own),
        pytest_rss_cold_in_process_mib=round(inproc_own),
        warm_best_of_7_s=round(min(warm2), 2), warm_floor_s=round(min(warm_floor), 2),
        warm_over_floor=round(min(warm2) / min(warm_floor), 2),
        onnx_cold_s=round(min(onnx_cold), 2), onnx_floor_s=round(min(onnx_floor), 2),
        onnx_cold_over_floor=round(min(onnx_cold) / min(onnx_floor), 2),
        polygraphy_s=round(min(polygraphy), 2) if polygraphy else "not installed",
        factory_cold_s=round(min(factory_cold), 1), factory_warm_s=round(min(factory_warm), 2),
        factory_warm_over_cold=round(min(factory_warm) / min(factory_cold), 3), factory_warm_imports_tf=factory_warm_tf,
    )
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    print("| measure | value | goal |\n| --- | --- | --- |")
    rows = [
        ("plain script (s)", results["plain_s"], ""),
        ("cold gate (s)", results["cold_s"], ""),
        ("cold / plain", results["cold_over_plain"], "<= 1.15"),
        ("cold gate, TensorFlow in-process (s)", results["cold_in_process_s"], ""),
        ("cold in-process / plain", results["cold_in_process_over_plain"], ""),
        ("warm gate (s)", results["warm_s"], ""),
        ("warm / cold", results["warm_over_cold"], "<= 0.1"),
        ("warm run imports TensorFlow", results["warm_imports_tf"], "False"),
        ("warm gate, best of 7 / its floor (s)", f"{results['warm_best_of_7_s']} / {results['warm_floor_s']}", ""),
        ("warm / floor", results["warm_over_floor"], "<= 1.25"),
        ("ONNX-only cold gate / its floor (s)", f"{results['onnx_cold_s']} / {results['onnx_floor_s']}", ""),
        ("ONNX-only cold / floor", results["onnx_cold_over_floor"], "<= 1.5"),
        ("polygraphy run --onnxrt, one sample (s)", results["polygraphy_s"], ""),
        ("factory (Keras imported at its top) cold / warm (s)",
         f"{results['factory_cold_s']} / {results['factory_warm_s']}", ""),
        ("factory warm / cold", results["factory_warm_over_cold"], ""),
        ("factory warm run imports TensorFlow", results["factory_warm_imports_tf"], "False"),
        ("4 MobileNetV2 -n 0 (s)", results["scale_serial_s"], ""),
        ("4 MobileNetV2 -n 2 (s)", results["scale_n2_s"], ""),
        ("speed-up -n 2", results["scale_speedup"], ">= 1.6"),
        ("conversions with -n 2", results["scale_conversions"], "4"),
        ("4 toy CNNs -n 0 / -n 2 (s)", f"{results['scale_small_serial_s']} / {results['scale_small_n2_s']}", ""),
        ("speed-up -n 2, toy CNNs", results["scale_small_speedup"], ""),
        ("peak RSS, largest process: plain / cold / warm / cold in-process (MiB)",
         f"{results['peak_rss_plain_mib']} / {results['peak_rss_cold_mib']} / {results['peak_rss_warm_mib']} / "
         f"{results['peak_rss_cold_in_process_mib']}", ""),
        ("peak RSS of the pytest process cold / warm / cold in-process (MiB)",
         f"{results['pytest_rss_cold_mib']} / {results['pytest_rss_warm_mib']} / "
         f"{results['pytest_rss_cold_in_process_mib']}", ""),
    ]
    for name, value, goal in rows:
        print(f"| {name} | {value} | {goal} |")
    print(f"\nmachine: {results['machine']}")


if __name__ == "__main__":
    main()
