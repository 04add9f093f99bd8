"""The deployment checks, one function each, free of pytest.

A check takes a :class:`~pytest_cvdnn.deployment.Deployment` and returns a
:class:`CheckResult`; it raises :class:`CheckFailed` (a CvdnnError) when the
deployment is wrong, and :class:`StageSkipped` when a stage it needs failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from .cache import slug
from .compare import Tolerance, compare, compare_arrays, input_insensitive
from .errors import CvdnnError, StageSkipped, unrecognised
from .core import Deployment
from .runners import blame as runner_blame
from .spec import InputSpec

__all__ = ["CheckResult", "CheckFailed", "Check", "TABLE", "CHECKS", "PARITY_PAIRS", "TARGET_CHECKS", "checks_of",
           "check_names", "check_items", "run_check", "ItemSpec"]


@dataclass
class CheckResult:
    message: str
    data: dict[str, Any] = field(default_factory=dict)


class CheckFailed(CvdnnError):
    def __init__(self, message: str, *, fix: str | None = None, details: str | None = None,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(message, fix=fix, details=details)
        self.data = data or {}


def _shape(a: Any) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in a) + ")"


# -- convert / load ------------------------------------------------------------------------
def check_convert(dep: Deployment) -> CheckResult:
    try:
        conv = dep.conversion
    except CvdnnError as exc:
        failure = _convert_failure(dep, exc)
        if failure is None:
            raise
        raise failure from exc
    data = {"onnx": str(conv.onnx_path), "cached": conv.cached, "seconds": conv.seconds}
    if dep.source.is_onnx:
        return CheckResult(f"ONNX model {conv.onnx_path.name} is valid (onnx.checker + onnxruntime); no conversion", data)
    if dep.source.kind == "tflite":
        meta = conv.meta
        quantized = getattr(dep, "quantized", [])
        data.update(inputs=meta["inputs"], outputs=meta["outputs"], interpreter=meta.get("interpreter"))
        return CheckResult(
            f"TFLite model {conv.onnx_path.name} read by {meta.get('interpreter', 'the TFLite interpreter')}: inputs "
            + ", ".join(f"{i['name']!r} {tuple(i['shape'])} {i['dtype']}" for i in meta["inputs"]) + "; outputs "
            + ", ".join(f"{o['name']!r} {tuple(o['shape'])} {o['dtype']}" for o in meta["outputs"])
            + ("; quantized: " + "; ".join(quantized) + " (the reference quantizes the float inputs and dequantizes "
               "the outputs with these parameters; cv2.dnn is fed the float inputs)" if quantized else "")
            + "; no conversion", data)
    if dep.settings.onnx:
        return CheckResult(f"using the provided ONNX {conv.onnx_path} (valid; not converted)", data)
    how = "cache hit (not converted)" if conv.cached else f"converted in {conv.seconds:.2f} s {conv.where}".rstrip()
    if dep.settings.format != "onnx":
        from .formats import format_label

        rewritten = conv.meta.get("constants_rewritten")
        return CheckResult(f"{how}: {format_label(dep.settings.format)} -> {conv.onnx_path}"
                           + (f" ({rewritten} constants stored as tensor_content for OpenCV's importer)"
                              if rewritten else ""), data)
    warnings = conv.warnings
    data["tf2onnx_warnings"] = warnings
    return CheckResult(
        f"{how}: opset {dep.settings.opset}, layout {dep.settings.layout} -> {conv.onnx_path}"
        + (f"; tf2onnx warned: {'; '.join(warnings[:3])} (the graph may keep ops its optimizer meant to remove: a "
           "load failure on such a node can be tf2onnx's, see the load item)" if warnings else ""), data
    )


def _convert_failure(dep: Deployment, exc: CvdnnError) -> CheckFailed | None:
    """A Keras model tf2onnx cannot convert (an exception, or an invalid graph with TensorFlow-only nodes; the
    other conversion path is tried by convert.py): the other opsets are searched (--cvdnn-fix: both layouts),
    each converted, loaded and compared like a load remedy; when none converts, the Keras layer to change and how.
    None: nothing to search (an ONNX file, a bundle replay, another format)."""
    if not (dep.has_keras and dep.can_convert and dep.settings.format == "onnx" and not dep.settings.onnx):
        return None
    if not (exc.message.startswith("tf2onnx failed") or "the converted graph" in exc.message):
        return None  # (the model's inputs, a factory, the file: not what another opset changes)
    from .diagnose import conversion_help, invalid_nodes, no_fix_summary

    blocked = invalid_nodes(exc.message)
    op_type, layer = blocked[0]
    started = time.perf_counter()
    text, remedies = _remedies(dep, None, None, dep.settings.fix, converting=True)
    data = {"stage": "convert", "node": exc.node, "op_type": op_type, "keras_layer": layer, "remedies": remedies,
            "remedy_seconds": round(time.perf_counter() - started, 3)}
    message, fix = exc.message, exc.fix
    converted = [r for r in remedies if r["outcome"] != "convert failed"]
    working = [r for r in converted if r["outcome"] == "works"]
    tried = sorted({dep.settings.opset, *(r["opset"] for r in remedies)}, reverse=True)
    if working:
        best = working[0]
        message += (f"; remedy: --cvdnn-opset={best['opset']} --cvdnn-layout={best['layout']} converts it, "
                    "and the result loads and matches Keras here")
        fix = f"convert at opset {best['opset']} (--cvdnn-opset={best['opset']} --cvdnn-layout={best['layout']})"
    elif converted:
        message += f"; {no_fix_summary(converted, None, None)}"
        fix = (f"opset(s) {', '.join(str(r['opset']) for r in converted)} convert it, but none of them loads and "
               "matches here (see the search below): " + conversion_help(dep.keras_meta, blocked))
    elif remedies:
        message += (f"; no opset tried ({', '.join(map(str, tried))}; tf2onnx.convert.from_keras and "
                    "from_function each) converts it")
        fix = conversion_help(dep.keras_meta, blocked)
    return CheckFailed(message, fix=fix, details="\n\n".join(x for x in (exc.details, text) if x), data=data)


def check_load(dep: Deployment) -> CheckResult:
    dep.require("conversion")
    try:
        runner = dep.cv2net
    except CvdnnError as exc:
        raise _load_failure(dep, exc) from exc
    graph = dep.graph
    outs = dep.run("cv2dnn", [x[:1] for x in dep.inputs])  # shared with the parity items (row 0)
    if {"batch", "determinism"} & dep.upcoming:
        dep.isolated_forwards()  # starts the child now: it runs while the next checks do
    inputs = [f"{i.name} {_shape(i.shape)} {lay.upper()} {i.dtype}"
              for i, lay in zip(graph.inputs, dep.onnx_layouts, strict=True)]
    # (an importer may return another number of outputs: the output_spec item says so; listed here as named)
    outputs = [f"{name} {tuple(o.shape)} {o.dtype}" for name, o in zip(dep.output_names, outs, strict=False)]
    version = getattr(runner, "opencv", None) or _local_opencv()
    data = {
        "opencv": version,
        "target": dep.target_label,
        "engine": dep.settings.engine,
        "inputs": [i.as_dict() | {"layout": lay} for i, lay in zip(graph.inputs, dep.onnx_layouts, strict=True)],
        "outputs": [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype)}
                    for n, o in zip(dep.output_names, outs, strict=False)],
    }
    note = _engine_note(dep)
    if note:
        data["engine_note"] = note
    return CheckResult(
        f"cv2.dnn {version} reads it; inputs: {'; '.join(inputs)}; outputs: {'; '.join(outputs)}"
        + (f"; engine {dep.settings.engine}: {note}" if note else ""), data
    )


def _engine_note(dep: Deployment) -> str:
    """What the engine really is on the cv2 installed here (e.g. ENGINE_ORT without ONNX Runtime)."""
    if not dep.target.is_local:
        return ""
    from .runners.cv2dnn import engine_note

    return engine_note(dep.settings.engine)


def _node_info(dep: Deployment, node: str | None) -> dict[str, Any]:
    """op type and Keras layer of a node of the deployment's graph."""
    from .graph import keras_layer_for, keras_layer_of

    if not node:
        return {"node": None, "op_type": None, "keras_layer": None}
    try:
        import onnx
    except ImportError:  # a bundle replayed where only OpenCV is installed
        return {"node": node, "op_type": None, "keras_layer": None}

    graph = onnx.load(str(dep.onnx_path), load_external_data=False).graph
    found = next((n for n in graph.node if n.name == node or node in n.output), None)
    layers = dep.keras_layer_names
    if found is None:
        return {"node": node, "op_type": None, "keras_layer": keras_layer_for(node, layers)}
    inits = {i.name for i in graph.initializer}
    return {"node": found.name, "op_type": found.op_type, "keras_layer": keras_layer_of(found, inits, layers)}


def _remedies(dep: Deployment, blocking: str | None, blocking_op: str | None = None,
              exhaustive: bool = False, converting: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """The Keras-level search (remembered): until a variant works, or all of them with ``exhaustive``;
    ``converting``: for a conversion failure (the other opsets first, the other layout only with ``exhaustive``)."""
    from .diagnose import Remedy, format_remedies, remedy_search

    key = _remedy_key(dep, exhaustive, "convert" if converting else "")
    found = dep.cache.get_json("remedies", f"{key}.json") if key else None
    try:  # (a damaged entry is searched again)
        remedies = [Remedy(int(r["opset"]), str(r["layout"]), str(r["outcome"]), str(r["detail"]), r.get("op_type"),
                           r.get("keras_layer")) for r in found["remedies"]]  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        found = None
    if found is None:
        remedies = remedy_search(dep, dep.variant, blocking_op, exhaustive, converting)
        if key:
            dep.cache.put_json({"remedies": [r.as_dict() for r in remedies]}, "remedies", f"{key}.json")
    if not remedies:
        return "", []
    return format_remedies(dep, remedies, blocking, blocking_op), [r.as_dict() for r in remedies]


def _remedy_key(dep: Deployment, exhaustive: bool = False, kind: str = "") -> str | None:
    """What decides the remedy search's outcome (:func:`~pytest_cvdnn.diagnose.search_key`): the model and the
    options besides; a warm run replays it instead of loading eight variants again."""
    from .diagnose import search_key

    if not dep.has_keras or not dep.can_convert:
        return None
    options = dep.settings.key()[1:]  # (the model's path is not what it is: its hash is)
    version = "v4-all" if exhaustive else "v4"  # (v2: batch checked, v3: stops at the first, v4: op types)
    return search_key(dep, version + kind, dep.model_hash, repr(options), converting=kind == "convert")


def _load_failure(dep: Deployment, exc: CvdnnError) -> CheckFailed:
    """The load error, with the node's op type and Keras layer, the remedies that work, and a repro."""
    from .diagnose import blocking_text, repro_root, write_repro

    if dep.settings.format != "onnx":  # no ONNX graph: no node lookup, remedy search or repro
        return CheckFailed(exc.message, fix=exc.fix, details=exc.details,
                           data={"stage": "load", "format": dep.settings.format})
    info = _node_info(dep, exc.node)
    blocking = blocking_text(info["node"], info["op_type"], info["keras_layer"])
    started = time.perf_counter()
    fixes, fixes_text = _onnx_fixes(dep)
    fixed = next((f for f in fixes if f.works), None)
    remedy_text, remedies = (_remedies(dep, blocking, info["op_type"], dep.settings.fix) if fixed is None
                             else ("", []))  # (Keras: only when no rewrite works)
    searched = round(time.perf_counter() - started, 3)
    repro = None
    if info["node"]:
        try:
            repro = write_repro(dep, repro_root(dep, dep.settings.repro) / slug(f"load-{dep.target_label}"),
                                info["node"], str(exc))
        except Exception:  # noqa: BLE001 - a repro is a bonus, never a second failure
            repro = None
    working = [r for r in remedies if r["outcome"] == "works"]
    working.sort(key=lambda r: r["layout"] != dep.settings.layout)  # keep the user's layout if possible
    message, fix = exc.message, exc.fix
    warned = dep.conversion.warnings[:2]
    if warned and not dep.settings.onnx:  # (the optimizer left part of the graph as it was)
        message += f"; tf2onnx warned while converting it: {'; '.join(warned)}"
    if fixed is not None:
        where = f" on node(s) {', '.join(map(repr, fixed.nodes[:3]))}" if fixed.nodes else ""
        message += (f"; remedy: the ONNX rewrite '{fixed.candidate}'{where} {fixed.detail}: "
                    f"{fixed.folder}/fixed.onnx (made by fix.py)")
        fix = (f"ship {fixed.folder}/fixed.onnx, or add {fixed.folder}/fix.py to your export (python fix.py "
               "model.onnx writes fixed.onnx beside fix.py)")
    elif working:
        message += (f"; remedy: --cvdnn-opset={working[0]['opset']} --cvdnn-layout={working[0]['layout']} "
                    "loads and matches Keras here")
    elif remedies:  # the search tried every opset and layout: advise only what it did not disprove
        from .diagnose import no_fix_summary

        message += f"; {no_fix_summary(remedies, info['op_type'], blocking)}"
        fix = ("no opset/layout variant and no ONNX rewrite loads and matches here (see the search below): change "
               "the layer that makes the node, compute it outside the network" + _newer_than(dep))
    details = "\n\n".join(x for x in (exc.details or "", fixes_text, remedy_text,
                                       f"repro folder: {repro}" if repro else "") if x)
    return CheckFailed(message, fix=fix, details=details,
                       data={**info, "stage": "load", "remedies": remedies, "repro": str(repro) if repro else None,
                             "onnx_remedies": [f.as_dict() for f in fixes], "remedy_seconds": searched,
                             "fixed_onnx": f"{fixed.folder}/fixed.onnx" if fixed else None})


def _newer_than(dep: Deployment) -> str:
    from .load import newer_opencv

    return newer_opencv(dep.target_opencv_version())


def _onnx_fixes(dep: Deployment) -> tuple[list[Any], str]:
    """The ONNX-level remedy search (fixes.py) and its lines for the details; never a second failure."""
    from .diagnose import repro_root
    from .fixes import onnx_remedies

    if not dep.can_convert:  # a bundle replay (OpenCV only): the fix is made where the model is
        return [], ""
    try:
        fixes = onnx_remedies(dep, repro_root(dep, dep.settings.repro) / slug(f"fix-{dep.target_label}"))
    except Exception as exc:  # noqa: BLE001 - a remedy is a bonus: the load error stands without it
        return [], f"ONNX rewrites not tried: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    if not fixes:
        return [], ""
    lines = [f"ONNX rewrites on {dep.target_label} (each checked with onnxruntime, then loaded and run in cv2.dnn):"]
    lines += [f"  {f.candidate}: {f.outcome}" + (f" ({f.detail})" if f.detail else "") for f in fixes]
    return fixes, "\n".join(lines)


def check_ops(dep: Deployment) -> CheckResult:
    """Every distinct op pattern of the graph, probed alone in the target's cv2.dnn: all unsupported at once."""
    dep.require("conversion")
    from .diagnose import KNOWN_IMPORTERS, op_scan

    results = op_scan(dep)
    bad = [r for r in results if not r.ok]
    data: dict[str, Any] = {"patterns": [r.as_dict() for r in results], "op_types": sorted({r.op_type for r in results}),
            "unsupported": [r.as_dict() for r in bad], "target": dep.target_label}
    if bad:
        lines = []
        for r in bad:
            info = _node_info(dep, r.nodes[0])
            layer = f", Keras layer {info['keras_layer']!r}" if info["keras_layer"] else ""
            known = KNOWN_IMPORTERS.get(r.op_type)
            lines.append(f"{r.op_type} ({len(r.nodes)} node(s), first {r.nodes[0]!r}{layer}): {r.error}"
                         + (f" [known to import: {known}]" if known else ""))
        raise CheckFailed(
            f"{len(bad)} of {len(results)} op patterns do not import in cv2.dnn ({dep.target_label}): "
            + "; ".join(lines),
            fix="see the load item: the ONNX rewrites and the remedy search it tried (--cvdnn-fix: every variant)",
            data=data,
        )
    return CheckResult(f"all {len(results)} op patterns import ({', '.join(data['op_types'])})", data)


def check_remedies(dep: Deployment) -> CheckResult:
    """--cvdnn-fix: which opset/layout variants load and match in this OpenCV."""
    dep.require("conversion")
    text, remedies = _remedies(dep, None, exhaustive=True)
    data = {"remedies": remedies}
    if not any(r["outcome"] == "works" for r in remedies):
        raise CheckFailed("no opset/layout variant loads and matches Keras in this OpenCV",
                          fix="use a newer OpenCV or change the blocking layer", details=text, data=data)
    return CheckResult(text.replace("\n", "; "), data)


def _local_opencv() -> str:
    from .runners.cv2dnn import opencv_version

    return opencv_version()


# -- specs -----------------------------------------------------------------------------------
def check_input_spec(dep: Deployment) -> CheckResult:
    """Each input's spec builds a blob of the model input's shape, layout and dtype that cv2.dnn accepts."""
    dep.require("cv2net")
    results = [_input_spec_one(dep, n) for n in range(len(dep.graph.inputs))]
    if len(results) == 1:
        return results[0]
    return CheckResult("; ".join(r.message for r in results), {"inputs": [r.data for r in results]})


def _input_spec_one(dep: Deployment, n: int) -> CheckResult:
    from .preprocess import cv2_call, make_blob

    spec = dep.spec_for(n)
    graph = dep.graph
    info, layout = graph.inputs[n], dep.onnx_layouts[n]
    data: dict[str, Any] = {"spec": spec.as_dict(), "expected": info.as_dict() | {"layout": layout}}
    if len(info.shape) != 4 or n not in dep.image_inputs:
        if info.dtype != "float32":
            raise CheckFailed(f"input {info.name!r} is {info.dtype}; the deployment feeds float32",
                              fix="cast the input in the model, or feed the right dtype", data=data)
        return CheckResult(f"non-image input {info.name!r} {_shape(info.shape)} {info.dtype}: no blob to check"
                           + (" (4-D, but not 1, 3 or 4 channels)" if len(info.shape) == 4 else ""), data)
    height, width = dep.input_shapes()[n][1:3]
    image = np.random.default_rng(dep.settings.seed).integers(0, 256, (height + 7, width + 5, 3), dtype=np.uint8)
    blob = make_blob([image], spec)
    code = cv2_call(spec)
    data.update(blob_shape=list(blob.shape), blob_dtype=str(blob.dtype), code=code)
    want = info.shape
    wrong = _blob_misfit(dep, n, spec, blob, data)
    if wrong is not None:
        raise wrong
    _blob_forward(dep, n, blob, data)
    return CheckResult(f"blob {tuple(blob.shape)} {blob.dtype} {spec.layout.upper()} fits {info.name!r} "
                       f"{_shape(want)}; deployment code: {code}", data)


def _blob_misfit(dep: Deployment, n: int, spec: InputSpec, blob: np.ndarray, data: dict[str, Any]) -> CheckFailed | None:
    """What is wrong with the spec's blob for graph input ``n``: its layout, channels, size or dtype (None: it fits)."""
    info, layout = dep.graph.inputs[n], dep.onnx_layouts[n]
    want = info.shape
    if layout != spec.layout:
        nhwc = layout == "nhwc"
        return CheckFailed(
            f"the model {dep.onnx_path.name} expects {_shape(want)} {layout.upper()} but the spec's blob is "
            f"{tuple(blob.shape)} {spec.layout.upper()} (input {info.name!r})",
            fix=(
                "build the blob with cv2.dnn.blobFromImageWithParams(img, Image2BlobParams(..., "
                "datalayout=DNN_LAYOUT_NHWC)) or convert with --cvdnn-layout=nchw"
                if nhwc
                else "use layout=nchw in the input spec (what blobFromImage gives) or convert with --cvdnn-layout=nhwc"
            ),
            data=data,
        )
    # (the ranks may differ: said below)
    bad = [k for k, (b, w) in enumerate(zip(blob.shape[1:], want[1:], strict=False), start=1) if w is not None and b != w]
    axis = 1 if layout == "nchw" else 3
    if len(blob.shape) == len(want) and axis in bad:
        channels = want[axis]
        how = {1: "gray: cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) or cv2.imread(path, cv2.IMREAD_GRAYSCALE)",
               3: "colour: cv2.imread(path, cv2.IMREAD_COLOR)",
               4: "BGRA: cv2.imread(path, cv2.IMREAD_UNCHANGED) of a PNG with alpha"}.get(channels or 0, "")
        return CheckFailed(
            f"the spec's blob {tuple(blob.shape)} has {blob.shape[axis]} channel(s) but the model input {info.name!r} "
            f"{_shape(want)} ({layout.upper()}) takes {channels}; spec: {spec.describe()}",
            fix=(f"set channels={channels} in the input spec (or leave it out: it is taken from the model) and feed "
                 f"the image {how}" if how else f"the input takes {channels} channels: feed a tensor, not an image blob"),
            data=data,
        )
    if bad or len(blob.shape) != len(want):
        return CheckFailed(
            f"the spec's blob {tuple(blob.shape)} does not fit the model input {info.name!r} {_shape(want)} "
            f"({layout.upper()}); spec: {spec.describe()}",
            fix=f"set size=({want[3] if layout == 'nchw' else want[2]}, {want[2] if layout == 'nchw' else want[1]}) "
            "in the input spec",
            data=data,
        )
    if info.dtype != str(blob.dtype):
        return CheckFailed(f"the model input {info.name!r} is {info.dtype} but the blob is {blob.dtype}",
                           fix="use ddepth=cv2.CV_32F (float32) for the blob", data=data)
    return None


def _blob_forward(dep: Deployment, n: int, blob: np.ndarray, data: dict[str, Any]) -> None:
    """cv2.dnn takes the blob as graph input ``n`` (CheckFailed with OpenCV's words if it does not)."""
    from .runners.cv2dnn import opencv_error_line

    first = [x[:1] for x in dep.inputs]
    feeds = dep.to_onnx_inputs(first)
    same = feeds[n].shape == blob.shape and feeds[n].dtype == blob.dtype
    feeds[n] = blob  # the other inputs (if any) keep their sample values
    try:
        if same:  # cv2.dnn takes or rejects a blob by its shape and type: sample 0's forward (shared) says it
            dep.run("cv2dnn", first)
        else:
            dep.cv2net.infer(feeds)
    except Exception as exc:  # noqa: BLE001 - cv2.error
        raise CheckFailed(
            f"cv2.dnn rejects the spec's blob {tuple(blob.shape)}: {opencv_error_line(exc)}",
            fix="make the blob match the model input " + _shape(dep.graph.inputs[n].shape), details=str(exc),
            data=data,
        ) from exc


def check_preprocessing(dep: Deployment) -> CheckResult:
    """The blob the deployment builds from real photos equals what Keras feeds the model."""
    dep.require("conversion")
    if not dep.has_keras:
        raise StageSkipped(
            f"{dep.label} is an ONNX model: the preprocessing it expects is unknown; check it from its Keras "
            "source (--cvdnn-model=model.keras --cvdnn-onnx=model.onnx)"
        )
    images = dep.image_inputs
    if not images:
        raise StageSkipped(f"{dep.label} has no image input (inputs "
                           + ", ".join(_shape(i.shape) for i in dep.graph.inputs) + "): no photos to preprocess")
    if len(images) == 1:
        return _preprocessing_one(dep, images[0])
    names = [i.name for i in dep.graph.inputs]
    results, failures = [], []
    for n in images:
        try:
            results.append(_preprocessing_one(dep, n))
        except CheckFailed as exc:
            failures.append((names[n], exc))
    if failures:
        raise CheckFailed("; ".join(f"input {name!r}: {exc.message}" for name, exc in failures),
                          fix="; ".join(f"input {name!r}: {exc.fix}" for name, exc in failures),
                          details="\n\n".join(exc.details or "" for _, exc in failures),
                          data={"inputs": {name: exc.data for name, exc in failures}})
    return CheckResult("; ".join(f"input {names[n]!r}: {r.message}" for n, r in zip(images, results, strict=True)),
                       {"inputs": {names[n]: r.data for n, r in zip(images, results, strict=True)}})


def _preprocessing_unknown(dep: Deployment, n: int) -> StageSkipped:
    """Nothing independent to compare the blob of input ``n`` with: not a pass."""
    what = (f"the declared spec ({dep.spec_for(n).describe()}) is used as given" if dep.declared_for(n)
            else "the checks assumed raw 0..255 RGB pixels")
    return StageSkipped(
        f"cannot verify the blob: the preprocessing {dep.keras_meta['name']!r} expects cannot be derived (it is not a "
        f"keras.applications model and has no Rescaling/Normalization layer at its input); {what}. Declare "
        "the preprocessing the model was trained with in the model (a Rescaling layer) or check your spec "
        "against the training pipeline; --cvdnn-input-range sets the range of the check inputs"
    )


@dataclass(frozen=True)
class _BlobMatch:
    ok: bool
    stats: Any  # compare.ArrayStats of the blob against Keras' arithmetic on the same pixels
    pixels: float  # pixel levels against Keras' own resize
    blob: np.ndarray  # (NHWC)


@dataclass
class _BlobJudge:
    """Does a spec's blob of the photos equal Keras' reference?  The blob's own tolerances (pixels, not the parity
    outputs'): the arithmetic on the same pixels to ARITHMETIC_TOL of the tensor's magnitude, and the whole
    pipeline, resize included, to a pixel level."""

    photos: list[np.ndarray]
    ref: np.ndarray  # Keras' arithmetic on OpenCV's resized pixels
    keras_resized: np.ndarray  # and on Keras' own resize
    expected: InputSpec

    def match(self, spec: InputSpec) -> _BlobMatch | None:
        """None where the blob's geometry (layout, size, channels) cannot be the model's."""
        from . import preprocess as pp

        want = self.expected
        if (spec.layout, spec.size, spec.n_channels) != (want.layout, want.size, want.n_channels):
            return None
        blob = pp.to_nhwc(spec.blob(self.photos), spec.layout)
        magnitude = max(1.0, float(np.abs(self.ref).max()))
        arithmetic = Tolerance(atol=pp.ARITHMETIC_TOL * magnitude, rtol=0.0, srtol=pp.ARITHMETIC_TOL)
        stats = compare_arrays(self.ref, blob, arithmetic, name="blob")
        pixels = pp.pixel_error(blob, self.keras_resized, want)
        return _BlobMatch(stats.ok and pixels <= pp.pixel_limit(want), stats, pixels, blob)

    def accepts(self, spec: InputSpec) -> bool:
        found = self.match(spec)
        return found is not None and found.ok


def _preprocessing_one(dep: Deployment, n: int) -> CheckResult:
    """The preprocessing check of image input ``n``."""
    from . import preprocess as pp

    if not dep.preprocessing_known:
        raise _preprocessing_unknown(dep, n)
    declared, expected = dep.spec_for(n), dep.preprocessing_reference_spec(n)
    photos = dep.photos()
    judge = _BlobJudge(photos, dep.reference_tensor(photos, expected), dep.reference_tensor(photos, expected, "keras"),
                       expected)
    data: dict[str, Any] = {
        "declared": declared.as_dict(), "expected": expected.as_dict(), "expected_note": expected.note,
        "photos": len(photos), "method": pp.blob_method(declared), "code": pp.cv2_call(declared),
    }
    found = judge.match(declared)
    if found is not None:
        dep.exhibits[f"preprocessing:{n}"] = (found.blob, judge.ref)
        data["tensor"], data["keras_resize_pixels"] = found.stats.as_dict(), found.pixels
    effect = _preprocessing_effect(dep, declared, photos, judge.ref, n)
    data["effect"] = effect.as_dict() if effect is not None else None
    notes = _resize_note(dep, expected, photos, judge.ref, data, n)
    if found is not None and found.ok:
        return CheckResult(
            f"the blob equals Keras' reference ({expected.note or expected.describe()}) on {len(photos)} photos: "
            f"max |Δ| {found.stats.max_abs:.3g} (mean {found.stats.mean_abs:.3g}) against preprocess_input on the "
            f"same resized pixels, {found.pixels:.2f} pixel levels against Keras' own resize (OpenCV rounds to "
            f"uint8; limit {pp.pixel_limit(expected):g})"
            + (f"; cv2.dnn(blob) vs the model on Keras' tensor: {effect.summary_line()}" if effect is not None else "")
            + f"; deployment code: {pp.cv2_call(declared)}" + notes,
            data,
        )
    raise _preprocessing_failure(dep, judge, declared, found, effect, data)


def _diagnosed(judge: _BlobJudge, declared: InputSpec, model: str) -> tuple[list[Any], InputSpec]:
    """The usual mistakes whose correction makes the blob match (one, else all of them together), and the
    corrected spec (the declared one where none does)."""
    from . import preprocess as pp

    mistakes = pp.candidate_mistakes(declared, judge.expected, model)
    confirmed = [m for m in mistakes if judge.accepts(m.corrected)]
    if confirmed:
        return confirmed, confirmed[0].corrected
    if len(mistakes) > 1:  # several mistakes at once: all fixes together
        combined = declared
        for m in mistakes:
            combined = replace(combined, **{k: getattr(m.corrected, k) for k in _changed(declared, m.corrected)})
        if judge.accepts(combined):
            return mistakes, combined
    return [], declared


def _preprocessing_failure(dep: Deployment, judge: _BlobJudge, declared: InputSpec, found: _BlobMatch | None,
                           effect: Any, data: dict[str, Any]) -> CheckFailed:
    """The blob differs: the mistakes that explain it and the corrected code, or the difference alone."""
    from . import preprocess as pp

    expected = judge.expected
    confirmed, corrected = _diagnosed(judge, declared, dep.keras_meta["name"])
    data["diagnosis"] = [m.name for m in confirmed]
    data["corrected_code"] = pp.cv2_call(corrected) if confirmed else None
    tensor = (f"the blob differs from Keras' reference by max |Δ| {found.stats.max_abs:.3g} (mean "
              f"{found.stats.mean_abs:.3g}; {found.pixels:.3g} pixel levels)"
              if found is not None else f"the blob {declared.size} {declared.n_channels}-channel "
              f"{declared.layout.upper()} does not fit the model input {expected.size} {expected.n_channels}-channel "
              f"{expected.layout.upper()}")
    outputs = f"; the model's outputs move by max |Δ| {effect.max_abs:.3g}{_top1_text(effect)}" if effect else ""
    if confirmed:
        return CheckFailed(
            "; ".join(m.message for m in confirmed) + f" ({tensor}{outputs})",
            fix=f"{pp.cv2_call(corrected)}",
            details=f"declared: {declared.describe()}\nexpected: {expected.describe()}\n  because {expected.note}",
            data=data,
        )
    return CheckFailed(
        f"{tensor}{outputs}; no single usual mistake explains it (declared: {declared.describe()}; "
        f"expected: {expected.describe()})",
        fix="compare your preprocessing with the model's preprocess_input step by step",
        data=data,
    )


def _changed(a: InputSpec, b: InputSpec) -> list[str]:
    return [k for k in ("swap_rb", "scale", "mean", "std", "layout", "size", "crop", "interpolation")
            if getattr(a, k) != getattr(b, k)]


def _top1_text(result: Any) -> str:
    from .compare import top1_text

    text = top1_text([o.as_dict() for o in result.outputs])
    return f", top-1 agreement {text}" if text else ""


def _feeding(dep: Deployment, n: int, tensor: np.ndarray) -> list[np.ndarray]:
    """The model's inputs with ``tensor`` at input ``n``; the other inputs repeat their first sample."""
    return [tensor if k == n else np.repeat(x[:1], len(tensor), axis=0) for k, x in enumerate(dep.inputs)]


def _preprocessing_effect(dep: Deployment, declared: InputSpec, photos: list[np.ndarray], ref: np.ndarray,
                          n: int = 0) -> Any:
    """cv2.dnn on the deployment's blob vs Keras on the reference tensor (None if the blob cannot run)."""
    from . import preprocess as pp

    if declared.layout != dep.onnx_layouts[n] or declared.size != dep.expected_spec_for(n).size:
        return None
    try:
        dep.require("cv2net")
    except StageSkipped:
        return None
    blob_nhwc = pp.to_nhwc(declared.blob(photos), declared.layout)
    # the model on Keras' tensor: onnxruntime where it runs this artifact (the same graph as cv2.dnn, and far
    # faster than an eager Keras pass; parity[keras-onnxruntime] holds it to Keras), else Keras itself
    reference = "onnxruntime" if "onnxruntime" in dep.runners else "keras"
    try:
        dep.require_runner(reference)
    except StageSkipped:
        reference = "keras"
    exp = dep.run(reference, _feeding(dep, n, ref))
    obt = dep.run("cv2dnn", _feeding(dep, n, blob_nhwc), per_sample=True)
    return compare(exp, obt, dep.settings.tolerance, expected_name=f"{reference}(reference)",
                   obtained_name="cv2dnn(blob)", output_names=dep.output_names, softmax=dep.softmax_outputs)


def _resize_note(dep: Deployment, expected: InputSpec, photos: list[np.ndarray], ref: np.ndarray,
                 data: dict[str, Any], n: int = 0) -> str:
    """How much a keras.utils.load_img pipeline (PIL nearest) would move the outputs vs OpenCV bilinear."""
    from . import preprocess as pp

    if expected.interpolation != "bilinear" or expected.crop != "none":
        return ""
    try:
        pil = pp.pil_nearest_tensor(photos, expected)
        a = dep.run("onnxruntime", _feeding(dep, n, ref))
        b = dep.run("onnxruntime", _feeding(dep, n, pil))
    except (StageSkipped, ImportError):  # e.g. a bundle replayed without PIL/onnxruntime
        return ""
    moved = compare(a, b, dep.settings.tolerance, output_names=dep.output_names, softmax=dep.softmax_outputs)
    data["resize_note"] = {"tensor_max_abs": float(np.abs(ref - pil).max()), "outputs": moved.as_dict()}
    return (f"; note: a training pipeline that loads images with keras.utils.load_img (PIL, nearest) feeds tensors "
            f"that differ from OpenCV's bilinear resize by max {np.abs(ref - pil).max():.3g} and move the outputs "
            f"by max |Δ| {moved.max_abs:.3g}{_top1_text(moved)}")


def _check_finite(dep: Deployment, outputs: dict[str, list[np.ndarray]]) -> None:
    """NaN or Inf in any runner's outputs is a broken model (or runtime), whatever the parity says."""
    bad = []
    for runner, outs in outputs.items():
        for k, out in enumerate(outs):
            if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
                name = dep.output_names[k] if k < len(dep.output_names) else str(k)
                bad.append(f"{runner} output {name!r}: {int(np.isnan(out).sum())} NaN, {int(np.isinf(out).sum())} Inf "
                           f"of {out.size}")
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
    ref = table[ref_name]
    problems: list[str] = []
    for name, rows in table.items():
        if len(rows) != len(ref):
            problems.append(f"{name} returns {len(rows)} output(s), {ref_name} {len(ref)}")
            continue
        for k, ((shape, dtype), (rshape, rdtype)) in enumerate(zip(rows, ref, strict=True)):
            if shape != rshape:
                same_data = int(np.prod(shape)) == int(np.prod(rshape)) and \
                    tuple(d for d in shape if d != 1) == tuple(d for d in rshape if d != 1)
                msg = f"output {k} ({dep.output_names[k] if k < len(dep.output_names) else k}): {name} {shape} vs {ref_name} {rshape}"
                (notes if same_data else problems).append(msg + (" (only size-1 axes differ)" if same_data else ""))
            if dtype != rdtype:
                problems.append(f"output {k}: {name} dtype {dtype} vs {ref_name} {rdtype}")
    summary = "; ".join(f"{name}: " + ", ".join(f"{s} {d}" for s, d in rows) for name, rows in table.items())
    if problems:
        raise CheckFailed(
            "the runners disagree on the outputs: " + "; ".join(problems),
            fix="check that the ONNX file belongs to this Keras model (--cvdnn-onnx) and that outputs were not "
            "reordered or transposed by the converter",
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
        if dep.settings.format != "onnx":
            raise _artifact_parity_failure(dep, result, data)
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
    return CheckResult(result.summary_line() + _blind_note(result) + _insensitive_note(flat)
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


def _insensitive_note(flat: list[dict[str, Any]]) -> str:
    if not flat:
        return ""
    names = ", ".join(f"{f['name']!r} (spread {f['spread']:.2g} over {f['samples']} inputs)" for f in flat)
    return (f"; caution: the reference of {names} barely depends on the input, so a graph that ignores its input "
            "would match it too (random weights? check a trained model, or --cvdnn-inputs the model tells apart)")


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
    by_name = {o["name"]: o for o in data.get("outputs", [])}
    softmax_only = [n for n, o in by_name.items()
                    if not o["ok"] and by_name.get(f"{n} (logits)", {}).get("ok")]
    failing = [n for n, o in by_name.items() if not o["ok"]]
    message = (f"cv2.dnn runs the {label} differently from Keras beyond {result.tolerance} "
               f"(max abs error {result.max_abs:.3g}, {result.mismatches} mismatching element(s), "
               f"cosine {result.min_cosine:.6f})")
    if softmax_only and softmax_only == failing:
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


def _localise(dep: Deployment, expected: str, obtained: str, data: dict[str, Any]) -> tuple[str | None, str]:
    """Name the first divergent node (and write a repro); returns (blame, extra text)."""
    from .diagnose import first_divergence, repro_root, write_repro

    if dep.settings.format != "onnx":
        return None, ("not localised: node-by-node localisation needs the ONNX graph; compare with this model's "
                      "ONNX parity items")
    in_opencv = (expected, obtained) == ("onnxruntime", "cv2dnn")
    if (expected, obtained) == ("keras", "cv2dnn"):
        try:
            in_opencv = not dep.parity("onnxruntime", "cv2dnn")
        except (CvdnnError, StageSkipped):
            return None, ""
    try:
        if in_opencv:
            blame = "OpenCV's importer/runtime computes the ONNX graph differently from onnxruntime"
            div = first_divergence(dep, dep.onnx_path, dep.onnx_path, "cv2dnn", dep.settings.tolerance)
        elif dep.settings.onnx and dep.has_keras:
            blame = "the provided ONNX does not reproduce Keras (compared with a fresh conversion of the Keras model)"
            own = dep.variant(replace(dep.settings, onnx=None, opset=dep.graph.opset, layout=dep.onnx_layouts[0]))
            div = first_divergence(dep, own.onnx_path, dep.onnx_path, "onnxruntime", dep.settings.tolerance)
        else:
            return None, ("not localised: the plugin's own conversion disagrees with Keras and there is no second "
                          "graph to compare it with; report it to tf2onnx with the parity numbers")
    except (CvdnnError, StageSkipped) as exc:
        return None, f"not localised: {exc}"
    except ImportError as exc:  # a bundle replayed without onnx/onnxruntime
        return None, f"not localised here: {exc.name} is not installed"
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
    n = len(dep.inputs[0])
    if n < 2:
        raise StageSkipped("batch check needs at least 2 samples (--cvdnn-samples=N with N >= 2)")
    if dep.fixed_batch_of_one:
        from .formats import format_label

        raise StageSkipped(f"the {format_label(dep.settings.format)} model fixes the batch size to 1 "
                           f"{_shape(dep.graph.inputs[0].shape)}: "
                           "cv2.dnn must run one image per net.forward(); re-export with a dynamic batch to batch")
    single = dep.run("cv2dnn", per_sample=True)
    try:  # in a child process: some OpenCV builds segfault on batches they do not support
        batched = dep.isolated_forwards().outputs(1)
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
    sample = [x[:1] for x in dep.inputs]
    if hasattr(runner, "infer_repeat"):  # a target: two forwards in one child
        first, second = runner.infer_repeat(dep.to_onnx_inputs(sample), 2)
    else:  # the forward the load and parity checks shared, then the same net again
        first = dep.run("cv2dnn", sample)
        second = runner.infer(dep.to_onnx_inputs(sample))
    try:
        fresh = dep.isolated_forwards().outputs(0)  # a net loaded afresh in a child process
    except CvdnnError as exc:
        raise CheckFailed(f"a freshly loaded net (in a child process) could not forward sample 0: {exc.message}",
                          fix="see the load and batch items; the child's OpenCV output is below",
                          details=exc.details or getattr(exc, "raw", None)) from exc
    for label, other in (("a second forward of the same net", second), ("a freshly loaded net", fresh)):
        if len(other) != len(first):
            raise CheckFailed(f"cv2.dnn is not deterministic: {label} returns {len(other)} output(s), the first "
                              f"forward {len(first)}", fix="report it to OpenCV with the repro of the load item")
        for k, (a, b) in enumerate(zip(first, other, strict=True)):
            if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
                diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.shape == b.shape else float("inf")
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


#: what is checked (see Deployment.kind)
KINDS = ("keras", "onnx", "export", "tflite", "bundle")


@dataclass(frozen=True)
class Check:
    """One check and where it applies: the deployment kinds it runs for, whether it runs again on every other
    OpenCV target and cv2.dnn engine, the runners it compares (an item only where each has a model: no Keras
    item for an ONNX source), and the option that turns it on (None: always)."""

    name: str
    run: Callable[[Deployment], CheckResult]
    kinds: frozenset[str]
    per_target: bool = False
    runners: tuple[str, ...] = ()
    option: str | None = None


def _parity_check(expected: str, obtained: str) -> Check:
    """The parity check of a registered pair: for the kinds where both runners run (a bundle compares what
    runs where it is replayed, cv2.dnn, with the references it stores), on every target where cv2.dnn is one."""
    from .runners import runner_spec

    kinds = runner_spec(expected).kinds & runner_spec(obtained).kinds
    if obtained != "cv2dnn":
        kinds -= {"bundle"}
    return Check(f"parity[{expected}-{obtained}]", lambda dep: check_parity(dep, expected, obtained),
                 frozenset(kinds), per_target="cv2dnn" in (expected, obtained), runners=(expected, obtained))


def _table() -> tuple[Check, ...]:
    from .runners import parity_pairs

    everywhere, replayable = frozenset(KINDS), frozenset({"keras", "onnx", "bundle", "tflite"})
    return (
        Check("verify", check_verify, frozenset({"bundle"})),
        Check("convert", check_convert, everywhere - {"bundle"}),
        Check("ops", check_ops, frozenset({"keras", "onnx"}), per_target=True),
        Check("load", check_load, everywhere, per_target=True),
        Check("remedies", check_remedies, frozenset({"keras"}), per_target=True, option="fix"),
        Check("input_spec", check_input_spec, replayable),
        Check("preprocessing", check_preprocessing, replayable - {"tflite"}),
        Check("output_spec", check_output_spec, everywhere, per_target=True),
        *(_parity_check(a, b) for a, b in parity_pairs()),
        Check("batch", check_batch, replayable, per_target=True),
        Check("determinism", check_determinism, replayable, per_target=True),
        Check("bundle", check_bundle, frozenset({"keras", "onnx"}), option="save_bundle"),
    )


#: every check, in the order its items run
TABLE = _table()
CHECKS: dict[str, Callable[[Deployment], CheckResult]] = {c.name: c.run for c in TABLE}
PARITY_PAIRS = tuple(c.runners for c in TABLE if c.runners)
#: checks that run again on every extra OpenCV target and engine (the rest use the cv2 installed here)
TARGET_CHECKS = tuple(c.name for c in TABLE if c.per_target and c.option is None)


def checks_of(kind: str, has_keras: bool = True, **options: bool) -> list[Check]:
    """The checks of a deployment ``kind`` (see KINDS), with the options that are on (``fix``, ``save_bundle``)."""
    return [c for c in TABLE if kind in c.kinds and (c.option is None or options.get(c.option, False))
            and (has_keras or "keras" not in c.runners)]


def check_names(has_keras: bool, fix: bool = False, save_bundle: bool = False) -> list[str]:
    return [c.name for c in checks_of("keras" if has_keras else "onnx", has_keras, fix=fix, save_bundle=save_bundle)]


def item_name(check: str, label: str) -> str:
    """``load`` → ``load[opencv-4.5.5]``; ``parity[a-b]`` → ``parity[a-b@opencv-4.5.5]``."""
    return f"{check[:-1]}@{label}]" if check.endswith("]") else f"{check}[{label}]"


class ItemSpec(NamedTuple):
    """One generated item: its name, the check it runs, and where: target (None: the cv2 installed here),
    artifact format, and cv2.dnn engine (None: the session's)."""

    name: str
    check: str
    target: str | None = None
    fmt: str = "onnx"
    engine: str | None = None


def check_items(has_keras: bool, targets: list[str], fix: bool = False, save_bundle: bool = False,
                bundle: bool = False, formats: tuple[str, ...] = ("onnx",),
                engines: tuple[str, ...] = (), source_kind: str = "") -> list[ItemSpec]:
    """The items of a model: every check here, the cv2 checks again per target (``load[opencv-4.5.5]``) and
    per extra engine (``parity[keras-cv2dnn@engine-ort]``), and the cv2 checks of each other artifact format
    (``tflite:load``, ``tf:parity[keras-cv2dnn@opencv-4.5.5]``)."""
    from .settings import target_label

    kind = "bundle" if bundle else "tflite" if source_kind == "tflite" else "keras" if has_keras else "onnx"
    local = checks_of(kind, has_keras, fix=fix, save_bundle=save_bundle)
    items = [ItemSpec(c.name, c.name) for c in local]
    again = [c.name for c in local if c.per_target]
    items += [ItemSpec(item_name(c, target_label(t)), c, t) for t in targets for c in again]
    items += [ItemSpec(item_name(c, f"engine-{e}"), c, None, "onnx", e) for e in engines for c in again]
    exported = checks_of("export") if kind == "keras" else []
    for fmt in (f for f in formats if f != "onnx"):
        items += [ItemSpec(f"{fmt}:{c.name}", c.name, None, fmt) for c in exported]
        items += [ItemSpec(f"{fmt}:{item_name(c.name, target_label(t))}", c.name, t, fmt)
                  for t in targets for c in exported if c.per_target]
    return items


def run_check(dep: Deployment, name: str) -> tuple[CheckResult, float]:
    """The check's result and its time; an exception the plugin did not foresee becomes one paragraph that
    names the model and the check (the traceback in its details), never a bare traceback."""
    if name not in CHECKS:
        raise CvdnnError(f"there is no check {name!r}", fix=f"use one of {', '.join(sorted(CHECKS))}")
    start = time.perf_counter()
    try:
        result = CHECKS[name](dep)
    except (CvdnnError, StageSkipped, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - said with the model and the check, traceback kept
        raise unrecognised(f"{dep.label}: the {name} check", exc) from exc
    return result, time.perf_counter() - start

