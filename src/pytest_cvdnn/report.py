"""Results gathered from check items (also across xdist workers): terminal summary and JSON report.

Each check item attaches its result as JSON in ``user_properties``; reports travel to
the xdist controller with them, so the controller alone builds the summary and the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["Results", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1


class Results:
    """Check records keyed by model, then by check name."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}

    def add(self, record: dict[str, Any], nodeid: str) -> None:
        model = self.models.setdefault(
            record["model"], {"model": record["model"], "environment": {}, "spec": None, "checks": {}, "events": []}
        )
        model["events"] = sorted(set(model["events"]) | set(record.get("events", [])))
        if not record.get("extra_engine") and not record.get("extra_device"):  # (an item of another
            # --cvdnn-engine or --cvdnn-device keeps the session's settings)
            model["environment"] = record.get("environment") or model["environment"]
        model["spec"] = record.get("spec") or model["spec"]
        model["checks"][record["check"]] = {
            "nodeid": nodeid,
            "target": record.get("target", "local"),
            "format": record.get("format", "onnx"),
            "engine": (record.get("environment") or {}).get("engine"),
            "extra_engine": bool(record.get("extra_engine")),
            "device": record.get("device", "cpu"),
            "extra_device": bool(record.get("extra_device")),
            "outcome": record["outcome"],
            "message": record["message"],
            "seconds": record["seconds"],
            "data": record.get("data", {}),
        }

    def summary_lines(self) -> list[str]:
        lines = []
        for label, model in self.models.items():
            checks = model["checks"]
            counts: dict[str, int] = {}
            for c in checks.values():
                counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
            env = model["environment"]
            tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            lines.append(
                f"{label}: {tally} (opencv {env.get('opencv', '?')}, opset {env.get('opset', '?')}, "
                f"{str(env.get('layout', '?')).upper()})"
            )
            by_target: dict[str, dict[str, int]] = {}
            for c in checks.values():
                fmt = c.get("format", "onnx")
                where = c.get("target", "local") + (f" engine-{c['engine']}" if c.get("extra_engine") else "") \
                    + (f" device-{c['device']}" if c.get("extra_device") else "")
                cell = by_target.setdefault(where + ("" if fmt == "onnx" else f" {fmt}"), {})
                cell[c["outcome"]] = cell.get(c["outcome"], 0) + 1
            if len(by_target) > 1:  # the models x targets matrix, one cell per target
                cells = [f"{t}: " + ("OK" if set(cell) <= {"passed"} else "FAIL" if "failed" in cell
                                     else "PARTIAL" if "passed" in cell else "SKIP")
                         + " (" + ", ".join(f"{n} {k}" for k, n in sorted(cell.items())) + ")"
                         for t, cell in by_target.items()]
                lines.append("  targets  " + " | ".join(cells))
            for row in precision_rows(checks):
                lines.append(f"  {row['precision']:<5} {row['target']:<15} " + precision_cell(row))
            spec_check = checks.get("input_spec") or {}
            wrong = (checks.get("preprocessing") or {}).get("outcome") == "failed"  # (its Fix has the right code)
            if spec_check.get("outcome") == "passed" and not wrong:  # the code to ship, without -rA: what was verified
                data = spec_check.get("data") or {}
                for entry in data.get("inputs", [data]):  # (one input: its data; several: one entry each)
                    for k, line in enumerate(str(entry.get("code") or "").splitlines()):
                        lines.append(("  deploy   " if k == 0 else " " * 11) + line)
            for name in sorted(checks):
                c = checks[name]
                fmt, _, base = name.rpartition(":")
                if base.startswith("parity[") and c["outcome"] != "skipped" and "max_abs" in c["data"]:
                    lines += _parity_lines(f"{fmt}:{base[7:-1]}" if fmt else base[7:-1], c)
                elif c["outcome"] != "passed":
                    first = c["message"].split(". Fix:")[0]
                    if c["outcome"] == "skipped" and " failed: " in first:  # "load failed: <why>": said above
                        first = first.split(" failed: ")[0] + " failed"
                    lines.append(f"  {c['outcome'].upper():<7} {name}: {first[:200]}")
        return lines

    def as_json(self) -> dict[str, Any]:
        models = []
        for model in self.models.values():
            parity = {
                name.replace("parity[", "")[:-1]: c["data"] for name, c in model["checks"].items()
                if name.rpartition(":")[2].startswith("parity[") and "max_abs" in c["data"]
            }
            models.append(
                {
                    "model": model["model"],
                    "environment": model["environment"],
                    "input_spec": model["spec"],
                    "checks": model["checks"],
                    "parity": parity,
                    "diagnosis": _diagnosis(model["checks"]),
                    "precision": precision_rows(model["checks"]),
                    "events": model["events"],
                    "timings": {name: c["seconds"] for name, c in model["checks"].items()},
                }
            )
        return {"schema": SCHEMA_VERSION, "tool": "pytest-cvdnn", "models": models}

    def write_json(self, path: Path, protected: Any = None) -> None:
        publish(Path(path), json.dumps(self.as_json(), indent=2, default=str), "--cvdnn-report", protected)


def publish(path: Path, text: str, option: str = "the report", protected: Any = None) -> None:
    """Write a report atomically (a reader never sees half a file), readable by others (0644, not mkstemp's 0600:
    a report is for CI artifacts and web servers; the umask is not read, as changing it to read it would race
    with the threads that write files meanwhile).  Never over an input, a link or a file the plugin did not write
    (ownership.check_report_path)."""
    from .ownership import Protected, check_report_path

    check_report_path(path, option, protected if protected is not None else Protected.of([]))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:  # (a non-UTF-8 file name)
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


_STAGE_ORDER = ("convert", "ops", "load", "input_spec", "preprocessing", "output_spec", "parity", "batch",
                "determinism", "remedies")


#: stages whose failures tell one story (the op scan and the remedies explain a failed load)
_STORIES = {"ops": "load", "remedies": "load"}


def _stage(name: str) -> str:
    """``tflite:parity[keras-cv2dnn@opencv-4.8.1]`` → ``parity``."""
    return name.rpartition(":")[2].split("[")[0].split("@")[0]


def _diagnosis(checks: dict[str, Any]) -> dict[str, Any] | None:
    """The first failing stage of a model and what is known about it (node, layer, remedies, repro)."""
    failed = [(name, c) for name, c in checks.items() if c["outcome"] == "failed"]
    if not failed:
        return None

    def rank(item: tuple[str, Any]) -> int:
        base = _stage(item[0])
        return _STAGE_ORDER.index(base) if base in _STAGE_ORDER else len(_STAGE_ORDER)

    failed.sort(key=rank)
    name, check = failed[0]
    all_failed = sorted(n for n, _ in failed)

    def holds(item: tuple[str, Any]) -> bool:  # node data: the load item, not the ops item that ranks first
        found = item[1].get("data") or {}
        return any(found.get(k) for k in ("node", "first_divergent", "remedies", "onnx_remedies", "repro"))

    # what is known about the node comes from the failing stage's own story (ops, load and the remedies tell one),
    # never from another failure (a parity item's divergent node is not the cause of a preprocessing failure)
    story = _STORIES.get(_stage(name), _stage(name))
    failed = [f for f in failed if _STORIES.get(_stage(f[0]), _stage(f[0])) == story]
    same_target = [f for f in failed if f[1].get("target", "local") == check.get("target", "local")]
    data = next((f[1].get("data") or {} for f in (*same_target, *failed) if holds(f)), check.get("data") or {})
    return {
        "failing_stage": name,
        "target": check.get("target", "local"),
        "message": check["message"],
        "node": data.get("node") or (data.get("first_divergent") or {}).get("node"),
        "op_type": data.get("op_type") or (data.get("first_divergent") or {}).get("op_type"),
        "keras_layer": data.get("keras_layer") or (data.get("first_divergent") or {}).get("keras_layer"),
        "first_divergent": data.get("first_divergent"),
        "remedies": data.get("remedies", []),
        "onnx_remedies": data.get("onnx_remedies", []),
        "fixed_onnx": data.get("fixed_onnx"),
        "repro": data.get("repro"),
        "failed_checks": all_failed,
    }


def precision_rows(checks: dict[str, Any]) -> list[dict[str, Any]]:
    """Per reduced precision (``--cvdnn-quantize``) and OpenCV: whether cv2.dnn loads the artifact, runs it
    (output_spec) and agrees (parity with Keras' float model; for an ONNX source, with onnxruntime's run of the same
    reduced graph), each "passed" / "failed" / "skipped" / None, with the first failure's reason."""
    from .compare import top1_text
    from .errors import headline
    from .settings import PRECISIONS

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for name, c in checks.items():
        precision, _, base = name.partition(":")
        if precision not in PRECISIONS:
            continue
        row = rows.setdefault((precision, c.get("target", "local")), {
            "precision": precision, "target": c.get("target", "local"), "load": None, "run": None, "agrees": None,
            "top1": "", "why": ""})
        stage = base.split("[")[0]
        pair = base[len("parity["):].split("@")[0].rstrip("]") if stage == "parity" else ""
        column = {"load": "load", "output_spec": "run"}.get(stage) or (
            "agrees" if pair in ("keras-cv2dnn", "onnxruntime-cv2dnn") and (pair == "keras-cv2dnn" or row["agrees"]
                                                                           is None) else None)
        if column is None:
            continue
        row[column] = c["outcome"]
        if column == "agrees":  # (the first scored output's top-1: a logits twin would count each sample twice)
            scored = [o for o in (c.get("data") or {}).get("outputs", []) if o.get("topk")]
            row["top1"] = f"top1 {top1_text(scored[:1])}" if scored else ""
        if c["outcome"] == "failed" and not row["why"]:  # (what OpenCV said, after "cannot read X: ")
            said = c["message"].split(". Fix:")[0]
            row["why"] = headline(said.split(".onnx: ", 1)[-1], 120)
    return list(rows.values())


def precision_cell(row: dict[str, Any]) -> str:
    """One row of :func:`precision_rows` in words: "loads, runs, agrees (top1 4/4)" or where it stops."""
    words = {"load": ("loads", "does not load"), "run": ("runs", "does not run"), "agrees": ("agrees", "disagrees")}
    said = []
    for column in ("load", "run", "agrees"):
        outcome = row[column]
        if outcome == "passed":
            said.append(words[column][0] + (f" ({row['top1']})" if column == "agrees" and row["top1"] else ""))
        elif outcome == "failed":
            said.append(f"{words[column][1]}: {row['why']}")
            break
    return ", ".join(said) or "not checked"


def _parity_lines(pair: str, check: dict[str, Any]) -> list[str]:
    """A parity item's summary line (its numbers, or the outputs whose shapes differ), with its cautions."""
    d = check["data"]
    verdict = "ok  " if check["outcome"] == "passed" else "FAIL"
    misfits = [o for o in d.get("outputs", []) if o.get("shape_ok") is False]
    if misfits:  # (no error numbers between arrays of different shapes: they mean nothing)
        return [f"  {verdict} {pair:<22} " + "; ".join(_misfit(o) for o in misfits)]
    lines = [f"  {verdict} {pair:<22} max|Δ| {d['max_abs']:.3g}  max|Δ|/max|ref| "
             f"{d.get('max_signal_rel', 0.0):.3g}  max rel {d['max_rel']:.3g}  "
             f"cos {d['min_cosine']:.6f}  mismatches {d['mismatches']}{_top1(d)}"]
    for flat in d.get("input_insensitive") or []:  # a pass that shows little: say so
        lines.append(f"       caution: the reference of {flat['name']!r} barely depends on the "
                     f"input (spread {flat['spread']:.2g} over {flat['samples']} inputs)")
    blind = [o for o in d.get("outputs", []) if o.get("elementwise_blind")]
    if blind:  # an element-wise check alone could not have failed these: say what can
        lines.append("       " + "; ".join(
            f"{o['name']!r}: signal {o['scale']:.2g} < atol {d['atol']:g}, judged by "
            f"max|Δ|/max|ref| <= {d.get('srtol', 0):g}" for o in blind))
    return lines


def _misfit(output: dict[str, Any]) -> str:
    """An output whose shape (or the output count) differs, said as such."""
    from .compare import COUNT_MISMATCH

    got, want = output.get("shape") or [], output.get("expected_shape") or []
    if output.get("name") == COUNT_MISMATCH:
        return f"{got[0] if got else '?'} output(s) where the reference has {want[0] if want else '?'}"
    return f"{output.get('name')!r} shape {tuple(got)} where the reference has {tuple(want)}"


def _top1(data: dict[str, Any]) -> str:
    from .compare import top1_text

    text = top1_text(data.get("outputs", []))
    return f"  top1 {text}" if text else ""
