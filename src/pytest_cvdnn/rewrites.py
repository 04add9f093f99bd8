"""ONNX-level remedies: rewrites of the graph that compute the same thing in a form an OpenCV importer takes.

Each rewrite is a self-contained function of a ``ModelProto`` (edited in place; it returns the names of the
nodes it changed, empty where it does not apply).  Its source is what the generated ``fix.py`` holds, so the
script a user runs is the code that was verified.  :func:`candidates` lists what to try for a model: the
targeted rewrites of known importer limits, alone and together, then ``onnx.version_converter`` to the opsets
older importers read (with the targeted rewrites after it).  Proving a candidate (onnxruntime equivalence, the
target's cv2.dnn at batch 1 and the check batch) is the caller's job (checks.py); nothing here imports
TensorFlow, cv2 or onnxruntime.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Candidate", "REWRITES", "candidates", "apply", "fix_script", "simplify"]


def constant_tensors(model: Any) -> dict[str, Any]:
    """The graph's constants by name, as TensorProtos: the initializers and the outputs of Constant nodes
    (tf2onnx writes Clip bounds, Squeeze axes and Slice starts as initializers, PyTorch's exporter as Constant
    nodes)."""
    found = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attribute in node.attribute:
                if attribute.name == "value":
                    found[node.output[0]] = attribute.t
    return found


def sort_slice_axes(model: Any) -> list[str]:
    """Slice with constant axes out of ascending order (tf2onnx's NHWC Cropping2D: axes [0, 2, 3, 1]) → the
    same slice with axes, starts, ends and steps reordered ascending (OpenCV 4.5 rejects the first:
    "axes[i - 1] == axes[i] - 1")."""
    import numpy as np
    from onnx import numpy_helper

    inits = constant_tensors(model)
    changed: list[str] = []
    for node in model.graph.node:
        if node.op_type != "Slice" or len(node.input) < 4 or node.input[3] not in inits:
            continue
        axes = numpy_helper.to_array(inits[node.input[3]]).astype(np.int64)
        consts = [k for k in range(1, len(node.input)) if node.input[k]]
        if (axes < 0).any() or list(axes) == sorted(axes) or any(node.input[k] not in inits for k in consts):
            continue
        order = np.argsort(axes, kind="stable")
        for k in consts:  # starts, ends, axes, steps: new constants (another node may share the old ones)
            values = numpy_helper.to_array(inits[node.input[k]])[order]
            name = f"{node.input[k]}__sorted_{node.name or len(changed)}"
            model.graph.initializer.append(numpy_helper.from_array(values, name))
            node.input[k] = name
        changed.append(node.name)
    return changed


def conv_kernel_shape(model: Any) -> list[str]:
    """Conv/ConvTranspose without ``kernel_shape`` → the attribute written out from the weights' shape (ONNX
    makes it optional; OpenCV 4.5 says "kernel_size (or kernel_h and kernel_w) not specified")."""
    from onnx import helper

    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    changed = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2 or node.input[1] not in shapes:
            continue
        if any(a.name == "kernel_shape" for a in node.attribute) or len(shapes[node.input[1]]) < 3:
            continue
        node.attribute.append(helper.make_attribute("kernel_shape", shapes[node.input[1]][2:]))
        changed.append(node.name)
    return changed


def squeeze_as_reshape(model: Any) -> list[str]:
    """Squeeze/Unsqueeze whose axes are a constant input (opset >= 13; tf2onnx's GlobalAveragePooling2D) → a
    Reshape to the same shape (OpenCV 4.5 takes Squeeze axes only as an attribute: "node_proto.input_size()
    == 1").  The shape comes from ONNX shape inference; 0 keeps an unknown dimension (the batch) in place."""
    import numpy as np
    from onnx import numpy_helper, shape_inference

    inits = constant_tensors(model)
    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if info.type.tensor_type.HasField("shape"):  # (no shape: the rank is unknown, not 0)
            dims = info.type.tensor_type.shape.dim
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    changed = []
    for node in model.graph.node:
        if node.op_type not in ("Squeeze", "Unsqueeze") or len(node.input) != 2 or node.input[1] not in inits:
            continue
        shape = shapes.get(node.input[0])
        if shape is None:
            continue
        axes = [int(a) for a in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]
        rank = len(shape) + (len(axes) if node.op_type == "Unsqueeze" else 0)
        if rank == 0 or any(not -rank <= a < rank for a in axes):
            continue
        axes = sorted(a % rank for a in axes)
        if node.op_type == "Squeeze":
            if any(shape[a] != 1 for a in axes):
                continue
            kept = [i for i in range(len(shape)) if i not in axes]
            target = [shape[i] if shape[i] is not None else (0 if i == j else -1) for j, i in enumerate(kept)]
        else:
            rest = iter(range(len(shape)))
            source = [None if j in axes else next(rest) for j in range(rank)]
            target = [1 if i is None else shape[i] if shape[i] is not None else (0 if i == j else -1)
                      for j, i in enumerate(source)]
        if target.count(-1) > 1:
            continue
        name = f"{node.name or node.output[0]}__shape"
        model.graph.initializer.append(numpy_helper.from_array(np.array(target, np.int64), name))
        node.op_type = "Reshape"
        node.input[1] = name
        del node.attribute[:]
        changed.append(node.name)
    return changed


def clip_as_hardsigmoid(model: Any) -> list[str]:
    """Clip with constant bounds as inputs (opset >= 11; Keras ReLU6 in MobileNetV2) → (hi - lo) *
    HardSigmoid(x; alpha=1/(hi - lo), beta=-lo/(hi - lo)) + lo, the same for finite lo < hi within float32
    rounding of the output (OpenCV 4.5 reads Clip bounds only as opset-10 attributes: "node_proto.input_size()
    == 1"; it imports HardSigmoid).  The Add is left out for lo = 0."""
    import numpy as np
    from onnx import helper, numpy_helper

    consts = constant_tensors(model)
    nodes, changed = [], []
    for node in model.graph.node:
        bounds = ([numpy_helper.to_array(consts[name]) if name in consts else None for name in node.input[1:3]]
                  if node.op_type == "Clip" and len(node.input) == 3 else [None])  # (not every Conv's weights)
        if (any(b is None or b.size != 1 for b in bounds) or not np.isfinite(np.asarray(bounds, np.float64)).all()
                or not float(np.asarray(bounds[0])) < float(np.asarray(bounds[1]))):  # (asarray: not None here)
            nodes.append(node)
            continue
        lo, hi = (float(np.asarray(b).reshape(())) for b in bounds)
        dtype = np.asarray(bounds[0]).dtype
        tag = node.name or node.output[0]
        scale = f"{tag}__range"
        model.graph.initializer.append(numpy_helper.from_array(np.array(hi - lo, dtype), scale))
        made = [helper.make_node("HardSigmoid", [node.input[0]], [f"{tag}__unit"], name=f"{tag}__hardsigmoid",
                                 alpha=1.0 / (hi - lo), beta=-lo / (hi - lo))]
        if lo == 0.0:
            made.append(helper.make_node("Mul", [f"{tag}__unit", scale], [node.output[0]], name=node.name))
        else:
            model.graph.initializer.append(numpy_helper.from_array(np.array(lo, dtype), f"{tag}__lo"))
            made += [helper.make_node("Mul", [f"{tag}__unit", scale], [f"{tag}__scaled"], name=f"{tag}__scale"),
                     helper.make_node("Add", [f"{tag}__scaled", f"{tag}__lo"], [node.output[0]], name=node.name)]
        nodes += made
        changed.append(node.name)
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return changed


def drop_unused_initializers(model: Any) -> None:
    """Remove the constants no node reads any more (the rewrites replace some; onnxruntime warns of each); the
    nodes of subgraphs (If/Loop branches) count, as they may read the outer graph's constants."""
    used = {o.name for o in model.graph.output}
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            used.update(node.input)
            for attribute in node.attribute:
                graphs += ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
    kept = [t for t in model.graph.initializer if t.name in used]
    if len(kept) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)


#: targeted rewrites of known importer limits, in the order they are tried
REWRITES: dict[str, Callable[[Any], list[str]]] = {
    "sort-slice-axes": sort_slice_axes,
    "conv-kernel-shape": conv_kernel_shape,
    "squeeze-as-reshape": squeeze_as_reshape,
    "clip-as-hardsigmoid": clip_as_hardsigmoid,
}

#: opsets ``onnx.version_converter`` is asked for (OpenCV 4.5 reads Squeeze/ReduceMean axes and Clip bounds as
#: attributes: opset <= 12 and <= 10)
CONVERT_OPSETS = (13, 11, 10)


def simplify(model: Any) -> Any:
    """onnxslim's graph simplification: constant folding (Flatten's Shape -> Gather -> Concat chain that
    OpenCV 4.5 cannot import becomes a constant), dead-node removal, fusions; inputs and outputs keep their
    names and dynamic dimensions.  Chosen over onnxsim: pure Python (a 250 KB wheel whose dependencies
    onnxruntime and onnx already bring), where onnxsim is a 10 MB compiled extension built against one onnx."""
    import onnxslim

    return onnxslim.slim(model)


#: the inputs' shapes a "static" candidate fixes: (input name, (size or None per axis)); None keeps the axis
#: dynamic (the batch)
StaticShapes = tuple[tuple[str, tuple[int | None, ...]], ...]


@dataclass(frozen=True)
class Candidate:
    """Rewrites applied in order; ``opset``: convert to it first (None: keep the model's); ``simplified``:
    onnxslim before the rewrites; ``static``: the inputs' dynamic sizes fixed first (then shape inference), so that
    onnxslim folds the shape computations an importer fails on."""

    rewrites: tuple[str, ...]
    opset: int | None = None
    simplified: bool = False
    static: StaticShapes = ()

    @property
    def label(self) -> str:
        parts = ([f"convert to opset {self.opset}"] if self.opset is not None else [])
        if self.static:
            parts.append("fix the inputs to " + ", ".join(
                f"{name} {'x'.join('N' if d is None else str(d) for d in dims)}" for name, dims in self.static))
        parts += ["onnxslim"] * self.simplified + list(self.rewrites)
        return " + ".join(parts) or "no change"


def fix_input_shapes(model: Any, static: Any) -> list[str]:
    """Each named input's dynamic axes set to the given sizes (None: left as it is), the graph's intermediate
    shapes inferred again; returns the inputs changed."""
    import onnx

    sizes = dict(static)
    changed = []
    for value in model.graph.input:
        if value.name not in sizes:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, sizes[value.name]):
            if size is not None and not (dim.HasField("dim_value") and dim.dim_value == size):
                dim.Clear()
                dim.dim_value = size
                if value.name not in changed:
                    changed.append(value.name)
    del model.graph.value_info[:]  # (inferred again from the fixed inputs)
    model.CopyFrom(onnx.shape_inference.infer_shapes(model))
    return changed


def candidates(model: Any, static: StaticShapes = ()) -> list[Candidate]:
    """What to try for ``model``: each targeted rewrite that changes it, all of them together, then each
    opset conversion (with those rewrites after it); with ``static`` (the sizes the checks feed, for inputs
    with dynamic sizes besides the batch) the inputs fixed to them and the graph simplified, last."""
    import onnx

    found: list[Candidate] = []
    applies = []
    for name, rewrite in REWRITES.items():
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        try:
            changed = rewrite(trial)
        except Exception:  # noqa: BLE001 - a rewrite that cannot read this graph does not apply to it; the
            continue  # others (and the simplifier) are still tried
        if changed:
            applies.append(name)
            found.append(Candidate((name,)))
    if len(applies) > 1:
        found.append(Candidate(tuple(applies)))
    if _simplifier():
        found.append(Candidate(tuple(applies), simplified=True))
    current = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    for opset in CONVERT_OPSETS:
        if opset != current:
            found.append(Candidate(tuple(applies), opset))
    if static and _simplifier():
        found.append(Candidate(tuple(applies), simplified=True, static=static))
    return found


def _simplifier() -> bool:
    """Is onnxslim installed (a dependency; a missing one only removes its candidates)?"""
    import importlib.util

    return importlib.util.find_spec("onnxslim") is not None


def apply(model: Any, candidate: Candidate) -> tuple[Any, list[str]]:
    """A rewritten copy of ``model`` and the nodes changed (ValueError: the rewrite cannot be made)."""
    import onnx
    from onnx import version_converter

    result = onnx.ModelProto()
    result.CopyFrom(model)
    changed: list[str] = []
    if candidate.opset is not None:
        try:
            result = version_converter.convert_version(result, candidate.opset)
        except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError and friends
            raise ValueError(f"onnx.version_converter cannot convert it to opset {candidate.opset}: "
                             f"{' '.join(str(exc).split())[:200]}") from None
        changed.append(f"(every node: opset {candidate.opset})")
    if candidate.static:
        try:
            fixed = fix_input_shapes(result, candidate.static)
        except Exception as exc:  # noqa: BLE001 - shape inference raises what its ops raise
            raise ValueError(f"the inputs cannot be fixed to the checked sizes: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}") from None
        changed += [f"(input {name}: static size)" for name in fixed]
    if candidate.simplified:
        before = [n.name for n in result.graph.node]
        try:
            result = simplify(result)
        except Exception as exc:  # noqa: BLE001 - onnxslim raises what its passes raise
            raise ValueError(f"onnxslim cannot simplify it: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}") from None
        kept = {n.name for n in result.graph.node}
        changed += [name for name in before if name not in kept]  # (folded or fused away)
    for name in candidate.rewrites:
        changed += REWRITES[name](result)
    drop_unused_initializers(result)
    return result, changed


def _own_source(function: Callable[..., Any]) -> str:
    """The function's definition as the script holds it: from its ``def`` on (the rewrites have no decorators; a
    tool that wraps them, such as a mutation tester's trampoline, adds one the script could not resolve)."""
    lines = inspect.getsource(function).splitlines()
    start = next(k for k, line in enumerate(lines) if line.lstrip().startswith("def "))
    return "\n".join(lines[start:]).rstrip()


def fix_script(candidate: Candidate, source: str) -> str:
    """A script that applies ``candidate`` to ``source`` (an ONNX path) with the onnx API and writes
    fixed.onnx next to itself: the rewrite functions' own source, then the calls."""
    parts = ['"""Applies the ONNX rewrite pytest-cvdnn verified: python fix.py [model.onnx] -> fixed.onnx here."""',
             "import sys", "from pathlib import Path", "from typing import Any", "", "import onnx", "", ""]
    for name in ("fix_input_shapes",) * bool(candidate.static) + ("simplify",) * candidate.simplified \
            + candidate.rewrites:
        helpers: dict[str, Callable[..., Any]] = {"simplify": simplify, "fix_input_shapes": fix_input_shapes}
        function = helpers.get(name) or REWRITES[name]
        parts += [_own_source(function), "", ""]
    for helper in (constant_tensors, drop_unused_initializers):
        parts += [_own_source(helper), "", ""]
    parts += [f"source = sys.argv[1] if len(sys.argv) > 1 else {source!r}",
              "model = onnx.load(source)"]
    if candidate.opset is not None:
        parts += ["from onnx import version_converter", "",
                  f"model = version_converter.convert_version(model, {candidate.opset})"]
    if candidate.static:
        parts += [f"fix_input_shapes(model, {candidate.static!r})"]
    if candidate.simplified:
        parts += ["model = simplify(model)"]
    parts += [f"{REWRITES[name].__name__}(model)" for name in candidate.rewrites]
    parts += ["drop_unused_initializers(model)", "onnx.checker.check_model(model)",
              'onnx.save(model, str(Path(__file__).with_name("fixed.onnx")))',
              'print("wrote", Path(__file__).with_name("fixed.onnx"))', ""]
    return "\n".join(parts)
