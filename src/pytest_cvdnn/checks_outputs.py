"""The checks of what comes out: output shapes, parity of two runners, batches, determinism, a bundle's files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .cache import slug
from .compare import COUNT_MISMATCH, compare, input_insensitive
from .core import Deployment
from .errors import CvdnnError, StageSkipped
from .runners import blame as runner_blame
from .verdicts import (CheckFailed, CheckResult, first_difference, not_finite, output_table_problems, shape_text,
                       softmax_only_failures)

__all__ = ["check_output_spec", "check_parity", "parity_diagnosis", "check_batch", "check_determinism",
           "check_verify", "check_bundle"]


def _check_finite(dep: Deployment, outputs: dict[str, list[np.ndarray]]) -> None:
    """NaN or Inf in any runner's outputs is a broken model (or runtime), whatever the parity says."""
    bad = not_finite(outputs, dep.output_names)
    if bad:
        raise CheckFailed(
            f"the outputs of {dep.label} are not finite on the check inputs: " + "; ".join(bad),
            fix="look for overflowing weights (inf/huge values), log/sqrt/division of values that reach 0 or "
            "negatives, or an input range the model was not trained on (check the input spec's scale)",
            data={"not_finite": bad},
        )


def check_output_spec(dep: Deployment) -> CheckResult:
    dep.require("cv2net")
    from .compare import align_outputs

    # the same inputs as the parity items: each runner's forward pass is shared with them
    full = {name: dep.run(name, per_sample=name == "cv2dnn") for name in list(dep.runners)}
    _check_finite(dep, full)
    results = {name: [o[:1] for o in outs] for name, outs in full.items()}
    ref_outs = results[list(dep.runners)[0]]
    notes: list[str] = []
    for name, outs in results.items():
        results[name], moved = align_outputs([o.shape for o in ref_outs], outs, dep.output_names,
                                             dep.reorder_outputs)
        notes += moved
    table = {name: [(tuple(o.shape), str(o.dtype)) for o in outs] for name, outs in results.items()}
    data = {"outputs": {name: [{"shape": list(s), "dtype": d} for s, d in rows] for name, rows in table.items()}}
    ref_name = list(dep.runners)[0]
    problems, same_data = output_table_problems(table, ref_name, dep.output_names)
    notes += same_data
    summary = "; ".join(f"{name}: " + ", ".join(f"{s} {d}" for s, d in rows) for name, rows in table.items())
    if problems:
        raise CheckFailed(
            "the runners disagree on the outputs: " + "; ".join(problems),
            fix=dep.outputs_fix,
            details=summary,
            data=data,
        )
    return CheckResult("outputs agree: " + summary + ("; note: " + "; ".join(notes) if notes else ""), data)


# -- parity ----------------------------------------------------------------------------------


def check_parity(dep: Deployment, expected: str, obtained: str) -> CheckResult:
    for name in (expected, obtained):
        dep.require_runner(name)
    result = dep.parity(expected, obtained)
    data = result.as_dict()
    data["inputs"] = dep.inputs_description
    if not result:
        misfits = [o for o in result.outputs if not o.shape_ok]
        if misfits:  # (no numbers: an error between arrays of different shapes means nothing)
            from .parity import BY_POSITION

            counted = [o for o in misfits if o.name == COUNT_MISMATCH]
            raise CheckFailed(
                (f"{obtained} returns {counted[0].shape[0]} output(s) where {expected} returns "
                 f"{counted[0].expected_shape[0]}" if counted else
                 f"{obtained} returns outputs of other shapes than {expected}: "
                 + "; ".join(f"{o.name!r} {shape_text(o.shape)} where {expected} has {shape_text(o.expected_shape)}"
                             for o in misfits))
                + (f" ({BY_POSITION})" if BY_POSITION in result.notes else ""),
                fix=dep.outputs_fix,
                details="\n\n".join(x for x in (result.format_failure(), data["inputs"]) if x), data=data)
        if dep.settings.format != "onnx":
            raise _artifact_parity_failure(dep, result, data)
        if dep.settings.bundle is None:  # (an INT8 graph that loses the predictions in onnxruntime already)
            from .quantize import precision_failure

            lost = precision_failure(dep, expected, obtained, result, data)
            if lost is not None:
                raise lost
        blame, extra = _blamed(dep, expected, obtained, data)
        raise CheckFailed(
            f"{blame} beyond {result.tolerance} "
            f"(max abs error {result.max_abs:.3g}, max|Δ|/max|ref| {result.max_signal_rel:.3g}, "
            f"max rel error {result.max_rel:.3g}, "
            f"{result.mismatches} mismatching element(s), cosine {result.min_cosine:.6f})"
            + (f"; {data['first_divergent_text']}" if data.get("first_divergent_text") else ""),
            fix=_PARITY_FIX["opencv" if blame.startswith("OpenCV") else "model"],
            details="\n\n".join(x for x in (result.format_failure(), extra, data["inputs"]) if x),
            data=data,
        )
    flat = _insensitive(dep, expected, obtained)
    data["input_insensitive"] = flat
    task = "".join(f"; {note}" for note in result.notes if note.startswith("a reduced-precision"))
    return CheckResult(result.summary_line() + task + _blind_note(result) + _insensitive_note(flat)
                       + f"; {data['inputs']}", data)


def _insensitive(dep: Deployment, expected: str, obtained: str) -> list[dict[str, Any]]:
    """The outputs whose reference the inputs hardly move (compare.input_insensitive)."""
    exhibit = dep.exhibits.get(f"parity[{expected}-{obtained}]")
    if exhibit is None:
        return []
    flat = input_insensitive(exhibit[0], exhibit[2], dep.settings.tolerance)
    names = {f["name"] for f in flat}
    # a saturated softmax is flat while its logits (compared too) are not: those logits carry the check
    return [f for f in flat if f"{f['name']} (logits)" not in exhibit[2] or f"{f['name']} (logits)" in names]


def _insensitive_note(found: list[dict[str, Any]]) -> str:
    flat = [f for f in found if f.get("kind", "flat") == "flat"]
    quiet = [f for f in found if f.get("kind") == "quiet"]
    note = ""
    if flat:
        names = ", ".join(f"{f['name']!r} (spread {f['spread']:.2g} over {f['samples']} inputs)" for f in flat)
        note += (f"; caution: the reference of {names} barely depends on the input, so a graph that ignores its "
                 "input would match it too (random weights? check a trained model, or --cvdnn-inputs the model "
                 "tells apart)")
    if quiet:
        names = ", ".join(f"{f['name']!r} (max |ref| {f['scale']:.2g})" for f in quiet)
        note += (f"; caution: the reference of {names} is nearly zero on every input checked (within a few atol), "
                 "so these inputs hardly exercise it — a detector's map on noise; check it on real data "
                 "(--cvdnn-inputs)")
    return note


def parity_diagnosis(dep: Deployment, expected: str, obtained: str, result: Any) -> str:
    """For a project's ``assert_parity(runner, runner)`` that fails: the blame, the first divergent node and the
    repro folder, as the generated parity item gives them ("" where there is nothing to add)."""
    if runner_blame(expected, obtained) is None or dep.settings.format != "onnx":
        return ""
    data = result.as_dict()
    try:
        text, extra = _blamed(dep, expected, obtained, data)
    except Exception as exc:  # noqa: BLE001 - a diagnosis is a bonus: the statistics stand without it
        return f"{runner_blame(expected, obtained)} (not localised: {type(exc).__name__}: {exc})"
    if data.get("first_divergent_text"):
        text += f"; {data['first_divergent_text']}"
    return text + (f"\n{extra}" if extra else "")


def _blamed(dep: Deployment, expected: str, obtained: str, data: dict[str, Any]) -> tuple[str, str]:
    """(who is to blame, extra text): the pair's blame, or where localisation puts it (it adds the first divergent
    node to ``data``)."""
    where, extra = _localise(dep, expected, obtained, data)
    return where or runner_blame(expected, obtained) or f"{obtained} does not reproduce {expected}", extra


def _blind_note(result: Any) -> str:
    """Outputs whose signal is below atol: the verdict rests on the rule relative to the signal; say so."""
    blind = [o for o in result.outputs if o.elementwise_blind]
    if not blind:
        return ""
    names = ", ".join(f"{o.name!r} (max|ref| {o.scale:.2g})" for o in blind)
    return (f"; {names}: below atol={result.tolerance.atol:g}, so judged by max|Δ|/max|ref| <= "
            f"{result.tolerance.srtol:g} (an error of {result.tolerance.srtol:g} of the signal fails)")


def _artifact_parity_failure(dep: Deployment, result: Any, data: dict[str, Any]) -> CheckFailed:
    """A TFLite / frozen graph disagrees with Keras: say whether only the final Softmax differs."""
    from .formats import format_label

    label = format_label(dep.settings.format)
    softmax_only = softmax_only_failures(data.get("outputs", []))
    message = (f"cv2.dnn runs the {label} differently from Keras beyond {result.tolerance} "
               f"(max abs error {result.max_abs:.3g}, {result.mismatches} mismatching element(s), "
               f"cosine {result.min_cosine:.6f})")
    if softmax_only:
        message += (f"; the logits agree, only the final Softmax of {', '.join(map(repr, softmax_only))} differs: "
                    f"OpenCV's importer applies it over another axis (a Softmax over the channels of an NHWC map)")
        fix = ("apply the softmax yourself after net.forward() (export the model without its final Softmax), "
               "or ship the ONNX if its parity items pass")
    else:
        fix = "ship the ONNX if its parity items pass; otherwise report the repro to OpenCV"
    return CheckFailed(message, fix=fix, details=result.format_failure(), data=data)


_PARITY_FIX = {
    "opencv": "report it to OpenCV with the repro folder; meanwhile try another --cvdnn-engine (OpenCV 5), "
    "another opset (--cvdnn-fix), or a different layer; if the error is small and expected (e.g. FP16), raise "
    "--cvdnn-atol/--cvdnn-rtol (element-wise) and --cvdnn-srtol (relative to the signal) to the minimum "
    "tolerance shown below",
    "model": "if the ONNX is not this model's, pass the right --cvdnn-onnx (or re-export it from this Keras model); "
    "if the error is small and expected (e.g. FP16), raise --cvdnn-atol/--cvdnn-rtol (element-wise) and "
    "--cvdnn-srtol (relative to the signal) to the minimum tolerance shown below",
}


def _runs_onnx(runner: str) -> bool:
    """Does this registered runner run the deployment's ONNX graph itself (its spec says so)?"""
    from .runners import REGISTRY, runner_spec

    return runner in REGISTRY and runner_spec(runner).runs_onnx


def _localise(dep: Deployment, expected: str, obtained: str, data: dict[str, Any]) -> tuple[str | None, str]:
    """Name the first divergent node (and write a repro); returns (blame, extra text)."""
    from .diagnose import first_divergence, repro_root, write_repro

    if dep.settings.format != "onnx":
        return None, ("not localised: node-by-node localisation needs the ONNX graph; compare with this model's "
                      "ONNX parity items")
    in_opencv = (expected, obtained) == ("onnxruntime", "cv2dnn")
    if obtained == "cv2dnn" and not in_opencv and (expected == "keras" or _runs_onnx(expected)):
        try:  # which half of keras -> ONNX -> cv2.dnn diverges, or which of two runtimes of the same ONNX is the
            # odd one: onnxruntime against cv2.dnn on this target says
            in_opencv = not dep.parity("onnxruntime", "cv2dnn")
        except (CvdnnError, StageSkipped):
            return None, ""
        if not in_opencv and expected != "keras":
            return None, (f"not localised: onnxruntime agrees with cv2.dnn on this graph, so {expected} is the "
                          "runtime that computes it differently")
    if in_opencv:
        blame = "OpenCV's importer/runtime computes the ONNX graph differently from onnxruntime"
    elif dep.settings.onnx and dep.has_keras:
        blame = "the provided ONNX does not reproduce Keras (compared with a fresh conversion of the Keras model)"
    else:
        return None, ("not localised: the plugin's own conversion disagrees with Keras and there is no second "
                      "graph to compare it with; report it to tf2onnx with the parity numbers")
    try:
        if in_opencv:
            div = first_divergence(dep, dep.onnx_path, dep.onnx_path, "cv2dnn", dep.settings.tolerance)
        else:
            own = dep.variant(replace(dep.settings, onnx=None, opset=dep.graph.opset, layout=dep.onnx_layouts[0]))
            div = first_divergence(dep, own.onnx_path, dep.onnx_path, "onnxruntime", dep.settings.tolerance)
    except (CvdnnError, StageSkipped) as exc:  # the blame stands; only the node is not named
        return blame, f"not localised: {exc}"
    except ImportError as exc:  # a bundle replayed without onnx/onnxruntime
        return blame, f"not localised here: {exc.name} is not installed"
    if div is None:
        return blame, "no intermediate tensor diverges beyond tolerance: the difference builds up across nodes"
    data["first_divergent"] = div.as_dict()
    data["first_divergent_text"] = div.describe()
    repro = None
    try:
        repro = write_repro(dep, repro_root(dep, dep.settings.repro) / slug(f"parity-{expected}-{obtained}-"
                            f"{dep.target_label}"), div.node, div.describe(),
                            div.reference if not in_opencv else None)
    except Exception:  # noqa: BLE001 - a repro is a bonus, never a second failure
        repro = None
    data["repro"] = str(repro) if repro else None
    return blame, f"repro folder: {repro}" if repro else ""


# -- batch / determinism -----------------------------------------------------------------------
def check_batch(dep: Deployment) -> CheckResult:
    dep.require("cv2net")
    dep.require("first_forward")
    n = len(dep.inputs[0])
    if n < 2:
        raise StageSkipped("batch check needs at least 2 samples (--cvdnn-samples=N with N >= 2)")
    if dep.fixed_batch_of_one:
        from .formats import format_label

        raise StageSkipped(f"the {format_label(dep.settings.format)} model fixes the batch size to 1 "
                           f"{shape_text(dep.graph.inputs[0].shape)}: "
                           "cv2.dnn must run one image per net.forward(); re-export with a dynamic batch to batch")
    single = dep.run("cv2dnn", per_sample=True)
    try:  # in a child process: some OpenCV builds segfault on batches they do not support
        batched = dep.from_onnx_outputs(dep.isolated_forwards().outputs(1))
    except CvdnnError as exc:
        verdict = (f"cv2.dnn cannot run a batch of {n} with this model ({exc.message}): "
                   "it needs a fixed batch of 1; call net.forward() once per image")
        if dep.spec.batch > 1:
            raise CheckFailed(verdict, fix=f"the input spec asks for batch={dep.spec.batch}: "
                              "re-export the model with a dynamic batch, or deploy with batch=1") from exc
        raise StageSkipped(verdict) from exc
    result = compare(single, batched, dep.settings.tolerance, expected_name="single", obtained_name=f"batch{n}",
                     output_names=dep.output_names)
    if not result:
        raise CheckFailed(
            f"a batch of {n} through cv2.dnn differs from {n} single forwards "
            f"(max abs error {result.max_abs:.3g})",
            fix="deploy with batch=1 (one net.forward per image) or check batch-dependent layers",
            details=result.format_failure(),
            data=result.as_dict(),
        )
    return CheckResult(f"batch of {n} agrees with {n} single runs (max abs error {result.max_abs:.3g})"
                       + _replayed(dep), result.as_dict() | {"replayed": bool(_replayed(dep))})


def check_determinism(dep: Deployment) -> CheckResult:
    runner = dep.require("cv2net")
    dep.require("first_forward")
    sample = [x[:1] for x in dep.inputs]
    if hasattr(runner, "infer_repeat"):  # a target: two forwards in one child
        first, second = (dep.from_onnx_outputs(o) for o in runner.infer_repeat(dep.to_onnx_inputs(sample), 2))
    else:  # the forward the load and parity checks shared, then the same net again
        first = dep.run("cv2dnn", sample)
        second = dep.from_onnx_outputs(runner.infer(dep.to_onnx_inputs(sample)))
    try:  # a net loaded afresh in a child process
        fresh = dep.from_onnx_outputs(dep.isolated_forwards().outputs(0))
    except CvdnnError as exc:
        raise CheckFailed(f"a freshly loaded net (in a child process) could not forward sample 0: {exc.message}",
                          fix="see the load and batch items; the child's OpenCV output is below",
                          details=exc.details or getattr(exc, "raw", None)) from exc
    for label, other in (("a second forward of the same net", second), ("a freshly loaded net", fresh)):
        found = first_difference(first, other)
        if found is None:
            continue
        k, diff = found
        if k < 0:
            raise CheckFailed(f"cv2.dnn is not deterministic: {label} returns {len(other)} output(s), the first "
                              f"forward {len(first)}", fix="report it to OpenCV with the repro of the load item")
        raise CheckFailed(
            f"cv2.dnn is not deterministic: output {k} of {label} differs from the first forward "
            f"(max abs difference {diff:.3g})",
            fix="pin the backend/target (DNN_BACKEND_OPENCV, DNN_TARGET_CPU) and thread count, "
            "and compare with a tolerance instead of bit-exactly",
            data={"max_abs": diff},
        )
    return CheckResult("two forwards and a fresh net give bit-identical outputs" + _replayed(dep),
                       {"bit_identical": True, "replayed": bool(_replayed(dep))})


def _replayed(dep: Deployment) -> str:
    from .runners.isolated import ReplayedRun

    if not isinstance(dep.isolated_forwards(), ReplayedRun):
        return ""
    return ("; the child process's forwards (batch, fresh net) replayed from the cache: same graph, inputs, "
            "OpenCV build and threads, compared with this session's forwards")


def check_verify(dep: Deployment) -> CheckResult:
    """A bundle's files match its manifest's checksums."""
    verify = getattr(dep, "verify", None)
    if verify is None:
        raise StageSkipped("not a bundle")
    bad = verify()
    if bad:
        raise CheckFailed(f"the bundle {getattr(dep, 'folder', '')} was changed or corrupted: " + "; ".join(bad),
                          fix="regenerate it with --cvdnn-save-bundle; never edit a bundle by hand",
                          data={"problems": bad})
    files = getattr(dep, "manifest", {}).get("files", {})
    return CheckResult(f"{len(files)} files match the manifest's SHA-256 checksums", {"files": sorted(files)})


def check_bundle(dep: Deployment) -> CheckResult:
    """--cvdnn-save-bundle: write the golden bundle of this model."""
    dep.require("conversion")
    from .bundle import save_bundle

    assert dep.settings.save_bundle is not None
    folder = save_bundle(dep, Path(dep.settings.save_bundle))
    size = sum(p.stat().st_size for p in folder.iterdir())
    return CheckResult(f"bundle written to {folder} ({size / 1024:.0f} KiB); run it where only OpenCV is installed "
                       f"with: pytest --cvdnn-bundle={folder}", {"bundle": str(folder)})
