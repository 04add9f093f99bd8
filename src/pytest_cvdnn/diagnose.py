"""When a deployment fails: which node, why, and what fixes it.

* :func:`op_scan` probes every distinct op pattern of the graph as an extracted one-node
  model in the target's cv2.dnn (cached per OpenCV version), so all unsupported nodes are
  listed at once;
* :func:`remedy_search` converts the Keras model at other opsets/layouts and reports which
  variants load and match in this OpenCV, with the options to use;
* :func:`first_divergence` exposes intermediate tensors (extra graph outputs) in two runners
  and names the first node whose output differs beyond tolerance;
* :func:`write_repro` saves the smallest subgraph, its inputs, reference outputs, versions
  and a script, ready to attach to an OpenCV or tf2onnx issue.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .scratch import prefix
from .compare import Tolerance, compare_arrays
from .errors import CvdnnError, StageSkipped
from .graph import keras_layer_of, op_pattern

if TYPE_CHECKING:
    from .core import Deployment

__all__ = ["op_scan", "remedy_search", "first_divergence", "write_repro", "KNOWN_IMPORTERS"]

#: what FIELD.md measured: OpenCV versions known to import these node patterns
KNOWN_IMPORTERS = {
    "Squeeze": "OpenCV >= 4.8 (measured: 4.8.1, 4.10, 4.12, 5.0); 4.5.5 needs opset <= 11",
    "Clip": "OpenCV >= 4.8 (measured: 4.8.1, 4.10, 4.12, 5.0); 4.5.5 needs opset <= 10 (min/max as attributes)",
    "Slice": "OpenCV >= 4.8 (measured: 4.8.1, 4.10, 4.12, 5.0)",
    "Gather": "OpenCV >= 4.8 (measured: 4.8.1 with VGG16's Flatten)",
}


# -- op support scan ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpResult:
    pattern: str
    op_type: str
    ok: bool
    nodes: tuple[str, ...]
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "op_type": self.op_type, "ok": self.ok, "nodes": list(self.nodes[:20]),
                "count": len(self.nodes), "error": self.error}


def op_scan(dep: "Deployment", whole_graph: bool = True) -> list[OpResult]:
    """Probe each distinct op pattern in the target's cv2.dnn; results cached per OpenCV version and engine.

    ``whole_graph``: first try the whole graph (the load stage, shared with the load item); when it loads,
    every pattern imports and nothing is probed.  The load stage itself passes False."""
    if whole_graph:
        try:  # the whole graph loads (the load stage, shared with the load item): every pattern imports
            dep.cv2net
        except (CvdnnError, StageSkipped):
            pass
        else:
            return [OpResult(pattern, op_type, True, tuple(names), "")
                    for pattern, (op_type, names) in dep.graph_summary["patterns"].items()]
    import onnx
    from onnx import utils as onnx_utils

    model = onnx.load(str(dep.onnx_path))
    inits = {i.name for i in model.graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in model.graph.node:
        groups.setdefault(op_pattern(node, inits), []).append(node)
    version_key = dep.target_label if not dep.target.is_local else f"local-{_local_version()}"
    from .cache import slug

    cache_name = f"ops4-{slug(version_key)}-{dep.settings.engine}.json"  # (ops-: named nodes of one model)
    known = dep.cache.get_json("ops", cache_name) or {}
    results: list[OpResult] = []
    fresh: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix=prefix("ops")) as tmp:
        source, suffix, computed = _probe_source(dep, model, Path(tmp))
        for pattern, nodes in groups.items():
            node = nodes[0]
            key = f"{dep.graph.opset}|{pattern}{suffix}"
            live = [n for n in nodes if computed is None or any(computed.get(o) is not None for o in n.output)]
            if not live:  # (every node of the pattern folded into constants once the input sizes are static)
                results.append(OpResult(pattern, node.op_type, True, tuple(n.name for n in nodes),
                                        "folded into a constant at the checked input size"))
                continue
            node = live[0]
            probed = node if computed is None else next(computed[o] for o in node.output if computed.get(o))
            constants = inits if computed is None else {k for k, v in computed.items() if v is None}
            if key not in known:
                sub = Path(tmp) / f"probe{len(fresh)}.onnx"
                inputs = [i for i in probed.input if i and i not in constants]
                try:
                    onnx_utils.extract_model(str(source), str(sub), inputs or [], list(probed.output),
                                             check_model=False)
                    fresh[key] = _probe_load(dep, sub, inputs, list(probed.output))
                except Exception as exc:  # noqa: BLE001 - a pattern that cannot be extracted is not judged
                    fresh[key] = {"ok": True, "error": f"not probed ({type(exc).__name__})"}
                fresh[key]["error"] = _anonymous(fresh[key]["error"], node)  # (the cache holds patterns, not names)
                known[key] = fresh[key]
            res = known[key]
            error = str(res["error"]).replace(_NODE_PLACEHOLDER, node.name or (node.output[0] if node.output else "?"))
            results.append(OpResult(pattern, node.op_type, res["ok"], tuple(n.name for n in nodes), error))
    if fresh:
        dep.cache.put_json(known, "ops", cache_name)
    return results


def _probe_source(dep: "Deployment", model: Any, tmp: Path) -> tuple[Path, str, dict[str, Any] | None]:
    """The graph the op patterns are cut from: with the inputs' dynamic sizes fixed to the ones the checks feed
    (a batch of 1) and shapes inferred, so that each probe sees the shapes the deployment gives it —
    probed with unknown sizes, ops that import fine fail (Shape: "!isDynamicShape") — and the shape computations
    that become constants folded.  (path, cache-key suffix, the copy's tensors: its node producing each, None for
    its constants); the file itself where nothing is dynamic or the static copy cannot be made."""
    from .feeds import static_shapes
    from .rewrites import fix_input_shapes

    import onnx

    static = static_shapes(dep)
    if not static or model.ByteSize() > (1 << 30):
        return dep.onnx_path, "", None
    try:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        fix_input_shapes(copy, tuple((name, tuple(1 if d is None else d for d in dims)) for name, dims in static))
        try:  # the shape computations a static size makes constant, folded (as an importer folds them)
            from .rewrites import simplify

            copy = simplify(copy)
        except Exception:  # noqa: BLE001 - onnxslim missing or failing: the static shapes alone
            pass
        path = tmp / "static.onnx"
        onnx.save(copy, str(path))
    except Exception:  # noqa: BLE001 - shape inference failed: probe the graph as it is
        return dep.onnx_path, "", None
    return path, "|static", {o: n for n in copy.graph.node for o in n.output} | {
        i.name: None for i in copy.graph.initializer}


#: stands for the probed node's name in the op cache (shared by every model with that op pattern)
_NODE_PLACEHOLDER = "<node>"


def _anonymous(error: str, node: Any) -> str:
    """A probe's error with the probed node's name and output names replaced by the placeholder: another model
    with the same op pattern reads it with its own node's name."""
    for name in sorted({node.name, *node.output} - {""}, key=len, reverse=True):
        error = error.replace(f"'{name}'", f"'{_NODE_PLACEHOLDER}'")
    return error


def _probe_load(dep: "Deployment", path: Path, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    """Does cv2.dnn of the target import this one-node model?  In-process for the local OpenCV, unless reading
    the whole graph crashed it (then each probe runs in a child process too)."""
    from .runners.cv2dnn import read_net
    from .runners.isolated import ChildError, child_call

    if dep.target.is_local and "load-crashed" not in dep.events:
        try:
            read_net(path, dep.settings.engine)
        except Exception as exc:  # noqa: BLE001 - cv2.error
            return {"ok": False, "error": _probe_error(str(exc))}
        return {"ok": True, "error": ""}
    try:
        resp, _ = child_call(dep.target, path, dep.settings.engine, inputs, outputs)
    except ChildError as exc:  # this node alone crashes the importer
        return {"ok": False, "error": f"{exc.message} importing it alone"}
    return {"ok": bool(resp.get("ok")), "error": "" if resp.get("ok") else _probe_error(resp.get("error", ""))}


def _probe_error(text: str) -> str:
    """OpenCV's reason for rejecting a one-node probe, in one line."""
    from .runners.cv2dnn import opencv_error_line, unsupported_ops

    ops = unsupported_ops(text)
    if ops:
        return f"unsupported operation: this OpenCV's ONNX importer does not implement {', '.join(ops)}"
    return opencv_error_line(Exception(text))


def _local_version() -> str:
    from .runners.cv2dnn import opencv_version

    return opencv_version()


# -- remedy search -------------------------------------------------------------------------------------
def search_key(dep: "Deployment", *parts: str, converting: bool = False) -> str | None:
    """The cache key of a search on ``dep``'s target: ``parts`` (what is searched), the inputs, the tools and
    the OpenCV that judges it (this one's build, or a pinned ``opencv==X`` target).  None (not remembered) for a
    target that is a Python interpreter: its OpenCV can change behind the same path.  ``converting``: the
    model did not convert, so there are no inputs yet; what makes them (the options, and the files of
    ``--cvdnn-inputs``) stands for them."""
    from .cache import sha256_bytes
    from .convert import tool_versions

    target = dep.settings.target
    if target is not None and not target.startswith("opencv=="):
        return None
    inputs = _folder_digest(dep.settings.inputs, dep.rootdir) if converting else dep.inputs_hash(dep.inputs)
    text = "|".join([*parts, inputs, target or dep.opencv_build, json.dumps(tool_versions(), sort_keys=True)])
    return sha256_bytes(text.encode())[:40]


def _folder_digest(folder: str | None, rootdir: Path | None) -> str:
    """The digest of a folder's files (names and contents); "" for none."""
    from .cache import sha256_bytes

    if not folder:
        return ""
    root = (Path(rootdir or ".") / folder).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return sha256_bytes(b"".join(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() for p in files))


REMEDY_OPSETS = (17, 13, 11, 10)
REMEDY_LAYOUTS = ("nchw", "nhwc")


@dataclass(frozen=True)
class Remedy:
    opset: int
    layout: str
    outcome: str  # "works" | "convert failed" | "load failed" | "forward failed" | "forward crashed" | "parity failed"
    detail: str = ""
    op_type: str | None = None  # the op type of the node that blocks this variant's load
    keras_layer: str | None = None  # and the Keras layer it comes from

    @property
    def works(self) -> bool:
        return self.outcome == "works"

    def as_dict(self) -> dict[str, Any]:
        return {"opset": self.opset, "layout": self.layout, "outcome": self.outcome, "detail": self.detail,
                "op_type": self.op_type, "keras_layer": self.keras_layer}


#: how far a variant got (the one that gets furthest is the one to describe when none works)
_PROGRESS = {"convert failed": 0, "load failed": 1, "forward crashed": 2, "forward failed": 2, "parity failed": 3,
             "works": 4}


def no_fix_summary(remedies: Sequence[dict[str, Any]], op_type: str | None, blocking: str | None) -> str:
    """What to say when no variant works: the blocking node's text if it blocks every variant's load (and only
    then), else the variant that gets furthest and what stops it."""
    if blocking and remedies and all(r["outcome"] == "load failed" and r.get("op_type") == op_type for r in remedies):
        return blocking
    for stage, verb in (("load failed", "loads"), ("convert failed", "converts")):
        if remedies and all(r["outcome"] == stage for r in remedies):
            ops: dict[str, list[str]] = {}
            for r in remedies:
                ops.setdefault(r.get("op_type") or "an unnamed node", []).append(f"{r['opset']} {r['layout'].upper()}")
            return f"no variant {verb}: " + "; ".join(f"opset {', '.join(v)} stop at {op}" for op, v in ops.items())
    best = max(remedies, key=lambda r: _PROGRESS.get(r["outcome"], 0))
    return (f"no variant works; the one that gets furthest, opset {best['opset']} {best['layout'].upper()}, "
            f"{best['outcome']}" + (f": {best['detail'][:200]}" if best.get("detail") else ""))


#: the highest opset at which OpenCV 4.5's importer takes these op types (FIELD.md: Squeeze axes and Clip bounds
#: became inputs at opsets 13 and 11; 4.5 reads them only as attributes)
KNOWN_MAX_OPSET = {"Squeeze": 11, "Unsqueeze": 11, "Clip": 10}


def remedy_order(dep: "Deployment", blocking_op: str | None, converting: bool = False,
                 exhaustive: bool = True) -> list[tuple[int, str]]:
    """The variants in the order worth trying: the opsets known to take the blocking op type first (the highest
    first), the deployment's own layout before the other.  ``converting`` (a conversion failure): the other
    opsets in the deployment's layout first (the opset decides what tf2onnx can convert; the layout only moves
    transposes), the other layout only when ``exhaustive``."""
    layouts = sorted(REMEDY_LAYOUTS, key=lambda lay: lay != dep.settings.layout)
    if converting:
        mine = [(opset, dep.settings.layout) for opset in REMEDY_OPSETS if opset != dep.settings.opset]
        return mine + [(dep.settings.opset, dep.settings.layout)] * exhaustive + (
            [(opset, layouts[1]) for opset in REMEDY_OPSETS] if exhaustive else [])
    order = [(opset, layout) for opset in REMEDY_OPSETS for layout in layouts]
    limit = KNOWN_MAX_OPSET.get(blocking_op or "")
    return sorted(order, key=lambda v: limit is not None and v[0] > limit) if limit else order


def remedy_search(dep: "Deployment", make: Any, blocking_op: str | None = None,
                  exhaustive: bool = False, converting: bool = False) -> list[Remedy]:
    """Try the other opsets and layouts (``make(settings)`` returns the Deployment of a variant), in
    :func:`remedy_order`, until one works; every one with ``exhaustive`` (--cvdnn-fix)."""
    if not dep.has_keras or not dep.can_convert:
        return []
    found = []
    for opset, layout in remedy_order(dep, blocking_op, converting, exhaustive):
        spec = dep.settings.spec
        variant = make(replace(dep.settings, opset=opset, layout=layout, onnx=None,
                               spec=replace(spec, layout=layout) if spec is not None else None))
        found.append(_try_variant(variant, opset, layout))
        if found[-1].works and not exhaustive:
            break
    return found


def invalid_nodes(message: str) -> list[tuple[str | None, str | None]]:
    """(op type, Keras layer) of the invalid nodes an invalid-graph message names (graph.validate_onnx): the first
    node's, then one per other op type ("Erfc in layer 'gelu'"); [(None, None)] if it names none."""
    op_type = re.search(r"has op type '([^']+)'", message)
    layer = re.search(r"comes from the Keras layer '([^']+)'", message)
    first = (op_type.group(1) if op_type else None, layer.group(1) if layer else None)
    return [first] + [(kind, where) for kind, where in re.findall(r"(\w+) in layer '([^']+)'", message)
                      if kind != first[0]]


def _try_variant(variant: "Deployment", opset: int, layout: str) -> Remedy:
    try:
        variant.require("conversion")
    except StageSkipped as exc:
        text = str(exc).split(": ", 1)[-1].split(". Fix: ")[0]
        return Remedy(opset, layout, "convert failed", text[:200], *invalid_nodes(text)[0])
    try:
        variant.require("cv2net")
    except StageSkipped as exc:
        found = re.search(r"\(op (\w+)", str(exc))
        layer = re.search(r"Keras layer '([^']+)'", str(exc))
        return Remedy(opset, layout, "load failed", str(exc).split(": ", 2)[-1][:200], found.group(1) if found else None,
                      layer.group(1) if layer else None)
    worst = 0.0
    batch = len(variant.inputs[0])
    for whole in (False, True) if batch > 1 and not variant.fixed_batch_of_one else (False,):
        how = f"a batch of {batch}" if whole else "one sample at a time"
        try:
            result = variant.parity("keras", "cv2dnn", whole_batch=whole)
        except (CvdnnError, StageSkipped) as exc:  # a forward that fails or crashes is not a mismatch
            text = str(exc)
            return Remedy(opset, layout, "forward crashed" if "crashed" in text else "forward failed",
                          f"{how}: {text[:200]}")
        if not result:
            return Remedy(opset, layout, "parity failed", f"{how}: max abs error {result.max_abs:.3g}")
        worst = max(worst, result.max_abs)
    return Remedy(opset, layout, "works", f"max abs error {worst:.3g}" + (" at batch 1 and " + str(batch)
                                                                          if batch > 1 else ""))


def format_remedies(dep: "Deployment", remedies: Sequence[Remedy], blocking: str | None,
                    blocking_op: str | None = None) -> str:
    lines = [f"Remedy search on {dep.target_label} (OpenCV of the target), converting {dep.label} again:"]
    for r in remedies:
        lines.append(f"  opset {r.opset:<2} {r.layout.upper()}: {r.outcome}" + (f" ({r.detail})" if r.detail else ""))
    working = [r for r in remedies if r.works]
    if working:
        # the user's own settings if they work, else the same layout at the highest opset, else any
        current = (dep.settings.opset, dep.settings.layout)
        best = min(working, key=lambda r: ((r.opset, r.layout) != current, r.layout != current[1]))
        from .convert import ConversionOptions, tf2onnx_code

        code = tf2onnx_code(dep.keras_meta, ConversionOptions(best.opset, best.layout, dep.spec.size))
        lines.append(f"Ship this one: --cvdnn-opset={best.opset} --cvdnn-layout={best.layout}, i.e. {code}")
    elif remedies:
        summary = no_fix_summary([r.as_dict() for r in remedies], blocking_op, blocking)
        lines.append(summary[0].upper() + summary[1:] if summary.startswith("no variant") else
                     f"No variant works: {summary}")
    return "\n".join(lines)


#: what tf2onnx leaves unconverted in common Keras 3 layers (op type, layer class or None: any) → the change
#: that converts, each verified on a small model (tests/test_diagnose.py)
CONVERSION_FIXES = {
    ("StatefulPartitionedCall", "Conv2D"): (
        "a Conv2D with groups > 1 calls a function tf2onnx does not inline (ConvNeXt's depthwise_conv): use "
        "keras.layers.DepthwiseConv2D where groups equals the input channels, else one Conv2D per group and "
        "Concatenate"),
    ("Erfc", None): (
        "Keras 3's exact gelu computes erfc, which tf2onnx does not convert: compute the same function as "
        "0.5 * x * (1 + erf(x / sqrt(2))) (ONNX Erf; e.g. a Lambda with tf.math.erf), or use "
        "keras.activations.gelu(x, approximate=True) (the tanh form, not bit-identical)"),
}


def conversion_help(keras_meta: dict[str, Any], blocked: Sequence[tuple[str | None, str | None]]) -> str:
    """How to change the Keras layers that tf2onnx cannot convert at any opset tried: ``blocked`` is (op type,
    layer) per invalid op type."""
    classes = {x.get("name"): x.get("class") for x in keras_meta.get("layers", [])}
    advice = []
    for op_type, layer in blocked:
        kind = classes.get(layer)
        known = CONVERSION_FIXES.get((op_type or "", kind)) or CONVERSION_FIXES.get((op_type or "", None))
        op = f"the TensorFlow op {op_type!r}" if op_type else "what it computes"
        if layer is None:
            how = known or ("replace the custom or unsupported layer that makes it (tf2onnx's error above names the "
                            "op; a node's name carries its layer's scope) with standard Keras layers, or compute "
                            "that part outside the network on cv2.dnn's output")
            advice.append(f"{op_type}: {how}" if op_type else how)
            continue
        if known:
            how = known
        elif kind == "Lambda":
            how = (f"rewrite its function without {op} (tf2onnx converts the TensorFlow ops listed in its "
                   "support_status.md), or compute it outside the network on cv2.dnn's output")
        elif op_type == "StatefulPartitionedCall":
            how = ("tf2onnx left the function it calls un-inlined: build it from standard Keras layers, or write "
                   "its call() with standard ops")
        else:
            how = (f"build it from standard Keras layers whose ops tf2onnx converts (no runtime here implements "
                   f"{op}), or compute it outside the network on cv2.dnn's output")
        advice.append(f"change the Keras layer {layer!r}" + (f" ({kind})" if kind else "") + f": {how}")
    return "; ".join(advice)


def blocking_text(node: str | None, op_type: str | None, layer: str | None) -> str | None:
    if not op_type:
        return None
    known = KNOWN_IMPORTERS.get(op_type)
    return (f"node {node!r} (op {op_type}" + (f", Keras layer {layer!r}" if layer else "") + ") blocks every variant; "
            + (f"known to import: {known}" if known else "no OpenCV version that imports it is on record here (check a "
               "newer one with --cvdnn-target=opencv==X)"))


# -- first divergent node --------------------------------------------------------------------------------
def _topological_outputs(model: Any) -> list[tuple[str, Any]]:
    """(tensor name, producing node) in graph order, skipping constants."""
    out = []
    for node in model.graph.node:
        if node.op_type in ("Constant", "Identity"):
            continue
        for name in node.output:
            if name:
                out.append((name, node))
    return out


def _with_outputs(path: Path, names: Sequence[str], dest: Path) -> None:
    from .graph import with_extra_outputs

    with_extra_outputs(path, names, dest)


def _ort_tensors(path: Path, names: Sequence[str], feeds: dict[str, np.ndarray], tmp: Path) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    probe = tmp / f"ort-{abs(hash(tuple(names)))}.onnx"
    _with_outputs(path, names, probe)
    sess = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    have = {o.name for o in sess.get_outputs()}
    wanted = [n for n in names if n in have]
    return dict(zip(wanted, sess.run(wanted, feeds), strict=True))


def _match_tensors(ref_model: Any, obt_model: Any) -> dict[str, str]:
    """Tensor of ``obt_model`` → the same tensor of ``ref_model``: by name, else by structure.

    tf2onnx names fused nodes with a counter (``Conv__22`` holds conv2 + its BatchNorm), so the same
    tensor can carry different names in two conversions; a node with the same op type fed by the same
    (matched) tensors and initializer names is the same computation.
    """
    ref_outputs = {o for node in ref_model.graph.node for o in node.output if o}
    by_signature: dict[tuple[str, tuple[str, ...]], Any] = {}
    for node in ref_model.graph.node:
        by_signature.setdefault((node.op_type, tuple(node.input)), node)
    mapping: dict[str, str] = {}
    for node in obt_model.graph.node:
        twin = by_signature.get((node.op_type, tuple(mapping.get(i, i) for i in node.input)))
        for k, out in enumerate(node.output):
            if out in ref_outputs:
                mapping[out] = out
            elif twin is not None and k < len(twin.output):
                mapping[out] = twin.output[k]
    return mapping


def _origin(model: Any, node: Any, mapping: dict[str, str], inits: set[str]) -> Any | None:
    """The earliest node upstream of ``node`` with no counterpart in the reference graph (where the graphs
    part), or None when every input of ``node`` has one."""
    producers = {o: n for n in model.graph.node for o in n.output}
    graph_inputs = {i.name for i in model.graph.input}
    origin, frontier, seen = None, [node], set()
    while frontier:
        current = frontier.pop()
        for tensor in current.input:
            if not tensor or tensor in mapping or tensor in inits or tensor in graph_inputs or tensor in seen:
                continue
            seen.add(tensor)
            producer = producers.get(tensor)
            if producer is not None and producer.op_type not in ("Constant",):
                origin = producer
                frontier.append(producer)
    return origin


@dataclass(frozen=True)
class Divergence:
    node: str
    op_type: str
    tensor: str
    keras_layer: str | None
    stats: Any
    checked: int
    origin: dict[str, Any] | None = None  # a node upstream that has no counterpart in the reference graph
    reference: tuple[Path, str] | None = None  # (reference graph, its tensor paired with ``tensor``)

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "tensor": self.tensor, "keras_layer": self.keras_layer,
                "stats": self.stats.as_dict(), "tensors_checked": self.checked, "origin": self.origin}

    def describe(self) -> str:
        layer = f", Keras layer {self.keras_layer!r}" if self.keras_layer else ""
        text = (f"first divergent node: {self.node!r} (op {self.op_type}{layer}), output {self.tensor!r}: "
                f"max abs error {self.stats.max_abs:.3g} ({self.stats.signal_rel:.3g} of its signal "
                f"{self.stats.scale:.3g}), {self.stats.mismatches}/{self.stats.size} elements beyond atol/rtol "
                f"(checked {self.checked} intermediate tensors in graph order)")
        if self.origin:
            o = self.origin
            olayer = f", Keras layer {o['keras_layer']!r}" if o.get("keras_layer") else ""
            text += (f"; it is computed from {o['node']!r} (op {o['op_type']}{olayer}), which has no counterpart "
                     "in the reference graph: the graphs differ there")
        return text


def first_divergence(dep: "Deployment", reference: Path, obtained: Path, obtained_runner: str,
                     tol: Tolerance, chunk: int = 128) -> Divergence | None:
    """The first node of ``obtained`` whose output differs from the same tensor of ``reference``.

    ``reference`` runs in onnxruntime; ``obtained`` runs in onnxruntime or the target's cv2.dnn.
    Tensors are paired by name or, for renamed fused nodes, by structure (:func:`_match_tensors`),
    compared in graph order ``chunk`` at a time, stopping at the first chunk with a divergence.
    """
    import onnx

    ref_model = onnx.load(str(reference), load_external_data=False)
    obt_model = onnx.load(str(obtained), load_external_data=False)
    mapping = _match_tensors(ref_model, obt_model)
    inits = {i.name for i in obt_model.graph.initializer}
    order = [(n, node) for n, node in _topological_outputs(obt_model) if n in mapping]
    graph_inputs = [i.name for i in obt_model.graph.input if i.name not in inits]
    feeds = dict(zip(graph_inputs, dep.to_onnx_inputs([x[:1] for x in dep.inputs]), strict=True))
    ref_inputs = [i.name for i in ref_model.graph.input if i.name not in {x.name for x in ref_model.graph.initializer}]
    # (strict=False: the other graph is fed by position; an input it lacks is onnxruntime's to name)
    ref_feeds = dict(zip(ref_inputs, feeds.values(), strict=False))
    checked = 0
    with tempfile.TemporaryDirectory(prefix=prefix("div")) as tmp_dir:
        tmp = Path(tmp_dir)
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            names = [n for n, _ in part]
            expected = _ort_tensors(reference, [mapping[n] for n in names], ref_feeds, tmp)
            if obtained_runner == "onnxruntime":
                got = _ort_tensors(obtained, names, feeds, tmp)
            else:
                got = _cv2_tensors(dep, obtained, names, feeds, tmp)
            for name, node in part:
                if mapping[name] not in expected or name not in got:
                    continue
                checked += 1
                stats = compare_arrays(expected[mapping[name]], got[name], tol, name=name)
                if not stats.ok:
                    origin = _origin(obt_model, node, mapping, inits)
                    where = None if origin is None else {
                        "node": origin.name, "op_type": origin.op_type,
                        "keras_layer": keras_layer_of(origin, inits, dep.keras_layer_names)}
                    return Divergence(node.name, node.op_type, name, keras_layer_of(node, inits, dep.keras_layer_names),
                                      stats, checked, where, (Path(reference), mapping[name]))
    return None


def _cv2_tensors(dep: "Deployment", path: Path, names: Sequence[str], feeds: dict[str, np.ndarray],
                 tmp: Path) -> dict[str, np.ndarray]:
    from .runners.isolated import child_call

    import onnx

    probe = tmp / f"cv2-{abs(hash(tuple(names)))}.onnx"
    _with_outputs(path, names, probe)
    outputs = [o.name for o in onnx.load(str(probe), load_external_data=False).graph.output]
    resp, outs = child_call(dep.target, probe, dep.settings.engine, list(feeds), outputs, list(feeds.values()),
                            partial=True)
    if not resp.get("ok"):
        from .runners.cv2dnn import opencv_error_line

        raise CvdnnError(f"cv2.dnn could not expose intermediate tensors: "
                         f"{opencv_error_line(Exception(resp.get('error', '')))}")
    missing = set(resp.get("missing", ()))  # (tensors OpenCV fused away: not compared, their consumers are)
    return {n: o for k, (n, o) in enumerate(zip(outputs, outs[0], strict=True)) if k not in missing}


# -- repro folder ---------------------------------------------------------------------------------------
REPRO_SCRIPT = '''"""Repro written by pytest-cvdnn: run `python repro.py` with the OpenCV under test."""
import json, pathlib
import numpy as np
import cv2

here = pathlib.Path(__file__).parent
info = json.loads((here / "repro.json").read_text())
print("OpenCV", cv2.__version__, "- recorded with", info["versions"])
try:
    net = cv2.dnn.readNetFromONNX(str(here / "subgraph.onnx"))
except cv2.error as exc:  # OpenCV 4.x / 5.0: the import error names the node
    raise SystemExit(f"REPRODUCED: readNetFromONNX cannot import the {info['op_type']} node: {exc}")
if net.empty():  # OpenCV 5.1: an empty network, the reason only in OpenCV's log above
    raise SystemExit(f"REPRODUCED: readNetFromONNX returned an empty network for the {info['op_type']} node")
for i, name in enumerate(info["inputs"]):
    net.setInput(np.load(here / f"input{i}.npy"), name)
outs = net.forward(info["outputs"])
for k, (name, out) in enumerate(zip(info["outputs"], outs)):
    if not (here / f"expected{k}.npy").is_file():
        continue
    ref = np.load(here / f"expected{k}.npy")
    print(name, f"max abs error vs {info.get('expected_from', 'onnxruntime')}:",
          float(np.abs(out.reshape(ref.shape) - ref).max()))
'''


def write_repro(dep: "Deployment", folder: Path, node_name: str, problem: str,
                reference: tuple[Path, str] | None = None) -> Path | None:
    """Extract the node as a subgraph with its real inputs and onnxruntime outputs; returns the folder.

    ``reference`` (graph, tensor): the expected output is that tensor of another graph (a fresh conversion of
    the Keras model) instead of onnxruntime on the node itself: an artifact fault then reproduces too."""
    import onnx

    model = onnx.load(str(dep.onnx_path), load_external_data=False)
    node = next((n for n in model.graph.node if n.name == node_name or node_name in n.output), None)
    if node is None:
        return None
    from .ownership import publish_folder

    return publish_folder(folder, lambda staging: _fill_repro(dep, staging, model, node, problem, reference),
                          "--cvdnn-repro", dep.settings.protected_paths())


def _fill_repro(dep: "Deployment", folder: Path, model: Any, node: Any, problem: str,
                reference: tuple[Path, str] | None) -> None:
    import onnx
    from onnx import utils as onnx_utils

    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in node.input if i and i not in inits]
    outputs = [o for o in node.output if o]
    onnx_utils.extract_model(str(dep.onnx_path), str(folder / "subgraph.onnx"), inputs, outputs, check_model=False)
    graph_inputs = [i.name for i in model.graph.input if i.name not in inits]
    feeds = dict(zip(graph_inputs, dep.to_onnx_inputs([x[:1] for x in dep.inputs]), strict=True))
    with tempfile.TemporaryDirectory(prefix=prefix("repro")) as tmp:
        values = _ort_tensors(dep.onnx_path, [*inputs, *outputs], feeds, Path(tmp))
    for i, name in enumerate(inputs):
        np.save(folder / f"input{i}.npy", np.asanyarray(values.get(name, feeds.get(name))))  # (what np.save does)
    expected_from = "onnxruntime"
    if reference is not None:  # the node's first output, as the reference graph computes it
        ref_model = onnx.load(str(reference[0]), load_external_data=False)
        ref_inits = {i.name for i in ref_model.graph.initializer}
        # (strict=False: the other graph is fed by position; an input it lacks is onnxruntime's to name)
        ref_feeds = dict(zip([i.name for i in ref_model.graph.input if i.name not in ref_inits], feeds.values(),
                             strict=False))
        with tempfile.TemporaryDirectory(prefix=prefix("repro")) as tmp:
            values = {outputs[0]: _ort_tensors(reference[0], [reference[1]], ref_feeds, Path(tmp))[reference[1]]}
        expected_from = "a fresh conversion of the Keras model (onnxruntime)"
    for k, name in enumerate(outputs):
        if name in values:
            np.save(folder / f"expected{k}.npy", values[name])
    info = {"problem": problem, "expected_from": expected_from, "node": node.name, "op_type": node.op_type, "inputs": inputs, "outputs": outputs,
            "keras_layer": keras_layer_of(node, inits, dep.keras_layer_names), "model": dep.label,
            "versions": dep.environment()}
    (folder / "repro.json").write_text(json.dumps(info, indent=2, default=str))
    (folder / "repro.py").write_text(REPRO_SCRIPT)


def repro_root(dep: "Deployment", configured: str | None) -> Path:
    base = Path(configured) if configured else dep.cache.root / "repro"
    from .cache import slug

    return base / f"{slug(Path(dep.label).name)}-{os.getpid()}"
