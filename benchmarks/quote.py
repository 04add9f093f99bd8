"""The documentation's measured numbers, rendered from the stored result files (one source of truth).

``python benchmarks/quote.py`` prints each block; the docs hold them between ``<!-- quote:NAME -->`` and
``<!-- /quote -->`` and ``tests/test_readme_numbers.py`` checks that every block equals what this renders from
the files (re-run a benchmark, then paste its block: the test says which one changed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent


def _gate(r: dict[str, Any]) -> str:
    return (
        f"cold gate {r['cold_s']:.1f} s against {r['plain_s']:.1f} s for a hand-written convert-and-compare script "
        f"({r['cold_over_plain']:.2f}×, with the checks that script does not do; {r['cold_in_process_s']:.1f} s "
        f"with TensorFlow in the pytest process), warm gate {r['warm_s']:.1f} s ({r['warm_over_cold']:.3f}× cold: "
        f"no conversion, no TensorFlow, onnx or onnxruntime) — {r['warm_over_floor']:.2f}× a script that only "
        f"loads the ONNX and runs the same 8 forwards (best of 7: {r['warm_best_of_7_s']:.2f} s against "
        f"{r['warm_floor_s']:.2f} s), an ONNX-only cold gate {r['onnx_cold_s']:.2f} s "
        f"({r['onnx_cold_over_floor']:.2f}× a script doing its forwards and validation by hand), a factory module "
        f"that imports Keras at its top {r['factory_cold_s']:.1f} s cold and {r['factory_warm_s']:.2f} s warm (no "
        f"TensorFlow), peak RSS of the pytest process {r['pytest_rss_cold_mib']} MiB cold "
        f"({r['pytest_rss_cold_in_process_mib']} MiB with TensorFlow in-process), four MobileNetV2 gates "
        f"{r['scale_serial_s']:.1f} s with `-n 0` and {r['scale_n2_s']:.1f} s with `-n 2` "
        f"({r['scale_speedup']:.2f}×, one conversion each)."
    )


def _mutation(r: dict[str, Any]) -> str:
    rows = ["| module | mutants | killed | survived | no tests | score |", "| --- | --- | --- | --- | --- | --- |"]
    for name, m in sorted(r["modules"].items()):
        rows.append(f"| {name} | {m['mutants']:,} | {m['killed']:,} | {m['survived']:,} | {m['no_tests']:,} | "
                    f"{m['score']:.1f} % |")
    t = r["total"]
    rows.append(f"| **all {len(r['modules'])}** | **{t['mutants']:,}** | **{t['killed']:,}** | **{t['survived']:,}** | "
                f"**{t['no_tests']:,}** | **{t['score']:.1f} %** |")
    took = f", {r['seconds'] / 60:.0f} minutes on 2 cores" if r.get("seconds") else ""
    return (f"mutmut {r['mutmut']} on {r['date']}{took} (`python benchmarks/mutation_score.py`):\n\n"
            + "\n".join(rows))


def _agreement(r: dict[str, Any]) -> str:
    return (f"{r['images']} images ({r['side']}×{r['side']} JPEG, model input {r['size']}×{r['size']}), measured "
            f"{r['measured']}, best of 3, whole processes: the agreement item {r['gate_s']:.2f} s with both sides "
            f"computed against {r['plain_s']:.2f} s for a plain script doing the same decodes and forwards "
            f"({r['ratio']:.2f}×); warm {r['warm_s']:.2f} s ({r['warm_ratio']:.2f}×: both sides' outputs cached by "
            f"content, no TensorFlow); both counted {r['agree_gate']} of {r['images']} images agreeing "
            f"(`python benchmarks/bench_agreement.py`).")


def _precision(r: dict[str, Any]) -> str:
    import sys

    if str(HERE.parent / "src") not in sys.path:  # (the wording of the summary's precision lines)
        sys.path.insert(0, str(HERE.parent / "src"))
    from pytest_cvdnn.report import precision_cell

    def version(row: dict[str, Any]) -> tuple[int, ...]:
        return tuple(int(v) for v in row["target"].removeprefix("opencv-").split(".")[:3])

    rows = ["| OpenCV | FP16 weights | INT8 (QDQ) |", "| --- | --- | --- |"]
    by = {(row["precision"], row["target"]): row for row in r["rows"]}
    for target in sorted({row["target"] for row in r["rows"]}, key=lambda t: version({"target": t})):
        cells = [precision_cell(by[(p, target)]) if (p, target) in by else "not checked" for p in ("fp16", "int8")]
        rows.append(f"| {target.removeprefix('opencv-')} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return (f"{r['model']} with `--cvdnn-quantize=fp16,int8` on {r['samples']} pictures of its classes, "
            f"{r['date']} (`python benchmarks/precision_table.py`):\n\n" + "\n".join(rows))


def corpus_table(r: dict[str, Any]) -> str:
    v = r["versions"]
    faults = [row for row in r["rows"] if row["kind"] == "fault"]
    correct = [row for row in r["rows"] if row["kind"] == "correct"]
    caught, alarms = sum(row["counted"] for row in faults), sum(row["counted"] for row in correct)
    rows = ["| case | kind | item | outcome |", "| --- | --- | --- | --- |"]
    rows += [f"| {row['case']} | {row['kind']} | {row['item']} | {row['outcome']} |" for row in faults + correct]
    return (f"Measured {r['date']} (OpenCV {v.get('opencv', '?')}, onnxruntime {v.get('onnxruntime', '?')}, tf2onnx "
            f"{v.get('tf2onnx', '?')}, Keras {v.get('keras', '?')}; `python benchmarks/fault_corpus.py`):\n\n"
            + "\n".join(rows) + f"\n\ndetection rate: {caught}/{len(faults)} "
            f"({100 * caught / max(len(faults), 1):.0f} %); false-alarm rate: {alarms}/{len(correct)} "
            f"({100 * alarms / max(len(correct), 1):.0f} %)")


#: block name -> (result file, renderer)
BLOCKS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "bench_gate": ("results.json", _gate),
    "mutation": ("results_mutation.json", _mutation),
    "agreement": ("results_agreement.json", _agreement),
    "precision": ("results_precision.json", _precision),
    "corpus": ("results_corpus.json", corpus_table),
}
#: the documents that quote the blocks
DOCUMENTS = ("docs/speed.md", "benchmarks/README.md", "docs/precision.md", "README.md", "docs/reliability.md")


def render(name: str) -> str:
    file, fn = BLOCKS[name]
    return fn(json.loads((HERE / file).read_text()))


def quoted(text: str) -> dict[str, str]:
    """The blocks a document holds: name -> its text (whitespace folded)."""
    return {m.group(1): " ".join(m.group(2).split())
            for m in re.finditer(r"<!-- quote:(\w+) -->(.*?)<!-- /quote -->", text, re.S)}


if __name__ == "__main__":
    for name in BLOCKS:
        print(f"<!-- quote:{name} -->\n{render(name)}\n<!-- /quote -->\n")
