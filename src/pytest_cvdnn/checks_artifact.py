"""The checks of the artifact itself: it converts, cv2.dnn loads it, each op imports, and what fixes it."""

from __future__ import annotations

import time
from typing import Any


from .cache import slug
from .core import Deployment
from .errors import CvdnnError
from .verdicts import CheckFailed, CheckResult, shape_text

__all__ = ["check_convert", "check_load", "check_ops", "check_remedies"]


def check_convert(dep: Deployment) -> CheckResult:
    try:
        conv = dep.conversion
    except CvdnnError as exc:
        failure = _convert_failure(dep, exc)
        if failure is None:
            raise
        raise failure from exc
    data = {"onnx": str(conv.onnx_path), "cached": conv.cached, "seconds": conv.seconds}
    if dep.settings.precision:
        from .quantize import describe

        how = "cache hit (not made again)" if conv.cached else f"made in {conv.seconds:.2f} s"
        data["precision"] = {k: v for k, v in conv.meta.items() if k not in ("sha256", "versions")}
        return CheckResult(f"{how}: {describe(conv.meta)} -> {conv.onnx_path}", data)
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
    from .runners.cv2dnn import net_code

    dep.require("conversion")
    try:
        runner = dep.cv2net
    except CvdnnError as exc:
        raise _load_failure(dep, exc) from exc
    graph = dep.graph
    dep.inputs  # (inputs that cannot be made fail here, as themselves)
    try:
        outs = dep.first_forward  # sample 0, shared with the parity items (row 0)
    except CvdnnError as exc:  # read, but cannot run: the same search for a remedy as a graph it cannot read
        raise _load_failure(dep, exc) from exc
    assert outs is not None
    if {"batch", "determinism"} & dep.upcoming:
        dep.isolated_forwards()  # starts the child now: it runs while the next checks do
    inputs = [f"{i.name} {shape_text(i.shape)}{' ' + lay.upper() if len(i.shape) == 4 else ''} {i.dtype}"
              for i, lay in zip(graph.inputs, dep.onnx_layouts, strict=True)]
    # (an importer may return another number of outputs: the output_spec item says so; listed here as named;
    # an output batched on another axis than 0 is shown as the samples first, "(samples first)")
    moved = [bool(a) for a in dep.output_batch_axes] if dep.settings.format == "onnx" else []
    outputs = [f"{name} {tuple(o.shape)} {o.dtype}" + (" (samples first)" if k < len(moved) and moved[k] else "")
               for k, (name, o) in enumerate(zip(dep.output_names, outs, strict=False))]
    version = getattr(runner, "opencv", None) or _local_opencv()
    code = net_code(dep.onnx_path, dep.settings.engine, dep.settings.device)
    data = {
        "opencv": version,
        "target": dep.target_label,
        "engine": dep.settings.engine,
        "device": dep.settings.device,
        "code": code,
        "inputs": [i.as_dict() | {"layout": lay} for i, lay in zip(graph.inputs, dep.onnx_layouts, strict=True)],
        "outputs": [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype)}
                    for n, o in zip(dep.output_names, outs, strict=False)],
    }
    note = _engine_note(dep)
    if note:
        data["engine_note"] = note
    return CheckResult(
        f"cv2.dnn {version} reads it; inputs: {'; '.join(inputs)}; outputs: {'; '.join(outputs)}"
        + (f"; engine {dep.settings.engine}: {note}" if note else "") + f"; deployment code: {code}", data
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
    # (Keras: only when no rewrite works; never for a reduced-precision variant, which no opset or layout of the
    # float conversion makes load)
    remedy_text, remedies = (_remedies(dep, blocking, info["op_type"], dep.settings.fix)
                             if fixed is None and dep.settings.precision is None else ("", []))
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
    if fixed is not None and "fix the inputs to" in fixed.candidate and not any(
            "fix the inputs to" not in f.candidate and f.works for f in fixes):
        message += ("; the cause is the dynamic input sizes: with the inputs fixed to the checked sizes (the batch "
                    "left free) and the shape computations folded, it loads and runs")
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
    text = f"all {len(results)} op patterns import ({', '.join(data['op_types'])})"
    folded = [r.op_type for r in results if r.error.startswith("folded into a constant")]
    if folded:  # (probed at the sizes the checks feed: the shape computations are constants there)
        text += (f"; at the checked input sizes {', '.join(sorted(set(folded)))} fold into constants (probed "
                 "alone with those sizes)")
    return CheckResult(text, data)


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
