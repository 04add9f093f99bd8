"""ONNX sanity before allocation: what a damaged or hostile file declares is checked before any runtime sees it.

An ONNX file from elsewhere can declare things no runtime should be asked to build: a name that is not
UTF-8, an input without an element type or with a negative dimension, external data past the end of its
file, a Conv whose weights do not fit its ``kernel_shape`` or its input's channels, or an attribute
(``pads`` of 10^6, a ``Tile`` by 10^5 x 10^5) that makes a tensor of terabytes.  Each is refused with
one paragraph naming the file, the node (or input, or tensor), the attribute and what is wrong.

:func:`check_structure` needs the ModelProto only; :func:`check_tensor_sizes` infers every tensor's shape
(onnx shape inference with the batch the checks use) and refuses a node whose output alone would exceed the
memory budget.  ``onnx`` is imported inside the functions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

from .errors import CvdnnError

__all__ = ["check_structure", "check_tensor_sizes", "largest_tensor", "check_declared_outputs", "check_strict_inference"]

_REEXPORT = "re-export the model from its framework (the file is damaged or was edited by hand)"


def _names(graph: Any) -> Iterator[tuple[str, Any]]:
    """(where, name) of every name a graph holds: nodes, their inputs/outputs/attributes, tensors, interface."""
    for k, node in enumerate(graph.node):
        yield f"the op type of node #{k}", node.op_type
        yield f"the domain of node #{k}", node.domain
        yield f"node #{k} ({node.op_type})", node.name
        for name in (*node.input, *node.output):
            yield f"an input or output of node #{k} ({node.op_type})", name
        for attr in node.attribute:
            yield f"an attribute of node #{k} ({node.op_type})", attr.name
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _names(sub)
    for where, items in (("graph input", graph.input), ("graph output", graph.output),
                         ("initializer", graph.initializer), ("value_info", graph.value_info)):
        for item in items:
            yield where, item.name


def _check_opsets(path: Path, model: Any) -> None:
    """One opset import per domain (two versions of one operator set leave every node's meaning open)."""
    seen: dict[str, int] = {}
    for op in model.opset_import:
        domain = op.domain or "ai.onnx"
        if domain in seen:
            raise CvdnnError(
                f"{path}: the model imports the operator set {domain!r} twice (versions {seen[domain]} and "
                f"{op.version}); which version its nodes follow is undefined",
                fix=f"{_REEXPORT}, or keep one import: del model.opset_import[k]; onnx.save(model, path)")
        seen[domain] = int(op.version)


def _check_names(path: Path, model: Any) -> None:
    domains = ((f"the domain of opset import #{k}", op.domain) for k, op in enumerate(model.opset_import))
    for where, name in (*domains, *_names(model.graph)):
        if isinstance(name, bytes):  # proto2 strings are not validated: invalid UTF-8 comes back as bytes
            raise CvdnnError(
                f"{path}: the name of {where} is not valid UTF-8 ({name[:40]!r}); no tool can report or match it",
                fix=f"{_REEXPORT}, or rename it with the onnx API (node.name = 'conv1'; onnx.save(model, path))")


def _check_interface(path: Path, graph: Any) -> None:
    from onnx import helper

    initializers = {i.name for i in graph.initializer}
    for kind, items in (("input", graph.input), ("output", graph.output)):
        for index, item in enumerate(items):
            if item.name in initializers:
                continue
            elem = item.type.tensor_type.elem_type
            try:
                helper.tensor_dtype_to_np_dtype(elem)
                known = elem != 0
            except (KeyError, ValueError, TypeError):
                known = False
            if not known:
                raise CvdnnError(
                    f"{path}: the graph {kind} {item.name!r} has no valid element type (elem_type {elem}); "
                    "a runtime cannot make or read its tensor",
                    fix=f"{_REEXPORT}, or set it: model.graph.{kind}[k].type.tensor_type.elem_type = "
                    "onnx.TensorProto.FLOAT")
            for axis, dim in enumerate(item.type.tensor_type.shape.dim if kind == "input" else ()):
                if dim.HasField("dim_value") and dim.dim_value < 1 and dim.dim_value != -1:  # (-1: dynamic, as
                    raise CvdnnError(  # paddle2onnx and others write it; onnxruntime holds an input to a 0)
                        f"{path}: the graph {kind} {item.name!r} declares the size {dim.dim_value} at axis {axis} "
                        f"(shape {_shape_text(item)}); a size below 1 cannot hold a sample (onnxruntime refuses "
                        "any other size for it), and a dynamic size is written as a name or -1",
                        fix=("re-export the model with a named (dynamic) size for that axis, or mark it dynamic in a copy: "
                             f"model.graph.input[{index}].type.tensor_type.shape"
                             f".dim[{axis}].dim_param = 'batch'; onnx.save(model, 'fixed.onnx')")
                        if dim.dim_value == 0 else f"{_REEXPORT} with a positive or named size, e.g. "
                        "dim.dim_param = 'batch' for a dynamic batch")


def _shape_text(item: Any) -> str:
    dims = item.type.tensor_type.shape.dim
    return "(" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + ")"


def _ints(node: Any, name: str) -> list[int] | None:
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints)
    return None


def _int(node: Any, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def _check_convs(path: Path, graph: Any, channels: dict[str, int]) -> None:
    """A Conv/ConvTranspose whose constant weights contradict its kernel_shape, group or input channels."""
    weights = {i.name: tuple(int(d) for d in i.dims) for i in graph.initializer}
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2 or node.input[1] not in weights:
            continue
        w = weights[node.input[1]]
        label = f"{path}: node {node.name!r} ({node.op_type})"
        kernel = _ints(node, "kernel_shape")
        if len(w) < 3:
            raise CvdnnError(f"{label} has the weights {node.input[1]!r} of shape {w}, fewer than 3 dimensions",
                             fix=_REEXPORT, node=node.name)
        if kernel is not None and tuple(kernel) != w[2:]:
            raise CvdnnError(
                f"{label} declares kernel_shape={kernel} but its weights {node.input[1]!r} have the shape {w} "
                f"(a {'x'.join(map(str, w[2:]))} kernel); runtimes disagree on which one counts",
                fix=f"{_REEXPORT}, or make kernel_shape match the weights (or remove the attribute)", node=node.name)
        group = _int(node, "group", 1)
        if group < 1:
            raise CvdnnError(f"{label} declares group={group}; a group count is at least 1", fix=_REEXPORT,
                             node=node.name)
        have = channels.get(node.input[0])
        per_group = w[1] if node.op_type == "Conv" else None
        if have is not None and per_group is not None and per_group * group != have:
            raise CvdnnError(
                f"{label} reads {have} channels from {node.input[0]!r} but its weights "
                f"{node.input[1]!r} of shape {w} with group={group} expect {per_group * group}",
                fix=f"{_REEXPORT}; the weights do not belong to this input", node=node.name)


def check_structure(path: Path, model: Any) -> None:
    """Names, interface types and sizes, and Conv weights against their attributes (no allocation)."""
    graph = model.graph
    _check_opsets(path, model)
    _check_names(path, model)
    _check_interface(path, graph)
    channels = {}
    for item in graph.input:  # channels of NCHW graph inputs (the Conv's data input); the rest is inferred later
        dims = item.type.tensor_type.shape.dim
        if len(dims) >= 3 and dims[1].HasField("dim_value"):
            channels[item.name] = int(dims[1].dim_value)
    _check_convs(path, graph, channels)


def weightless_copy(model: Any) -> Any:
    """A copy of ``model`` whose large weights keep their dims but not their values: all that shape inference
    needs (serialising 30 MB of weights for it was most of its time); small constants stay, as shapes can depend
    on their values."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in copy.graph.initializer:
        if math.prod(tensor.dims) > 64:
            for name in ("raw_data", "float_data", "double_data", "int32_data", "int64_data"):
                tensor.ClearField(name)
    return copy


def _inferred(model: Any, batch: int) -> Any:
    """The model with every tensor's shape inferred (unknown batch sizes set to ``batch``); None if it fails."""
    from onnx import shape_inference

    copy = weightless_copy(model)
    inits = {i.name for i in copy.graph.initializer}
    for item in copy.graph.input:
        dims = item.type.tensor_type.shape.dim
        if item.name in inits:
            continue
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            dims[0].dim_value = batch
    for item in (*copy.graph.input, *copy.graph.output):  # (-1 means dynamic, as paddle2onnx and others write it)
        for axis, dim in enumerate(item.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value == -1:
                dim.dim_param = f"dynamic_{axis}"
    try:
        return shape_inference.infer_shapes(copy, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - a model shape inference cannot follow is judged by the checker and runtimes
        return None


def largest_tensor(model: Any, batch: int) -> tuple[int, Any, Any] | None:
    """(bytes, value_info, producing node) of the largest tensor with a known shape, at ``batch`` samples."""
    from onnx import helper

    inferred = _inferred(model, batch)
    if inferred is None:
        return None
    graph = inferred.graph
    producers = {o: n for n in graph.node for o in n.output}
    best: tuple[int, Any, Any] | None = None
    for info in (*graph.value_info, *graph.output):
        dims = info.type.tensor_type.shape.dim
        if any(d.HasField("dim_value") and d.dim_value < 0 for d in dims):
            return (-1, info, producers.get(info.name))  # a negative size: the node's attributes do not fit its input
        if not dims or not all(d.HasField("dim_value") for d in dims):
            continue
        try:
            size = helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type).itemsize
        except (KeyError, ValueError, TypeError):
            size = 4
        nbytes = math.prod(int(d.dim_value) for d in dims) * size
        if best is None or nbytes > best[0]:
            best = (nbytes, info, producers.get(info.name))
    return best


def _constants(node: Any, graph: Any) -> str:
    """The node's integer attributes and small constant inputs, as "name=[...]" (what decides its sizes)."""
    from onnx import numpy_helper

    parts = [f"{a.name}={list(a.ints)}" for a in node.attribute if a.ints]
    parts += [f"{a.name}={a.i}" for a in node.attribute if a.type == 2]  # AttributeProto.INT
    inits = {i.name: i for i in graph.initializer}
    for name in node.input:
        tensor = inits.get(name)
        if tensor is not None and math.prod(tensor.dims) <= 8 and tensor.data_type in (6, 7):  # INT32, INT64
            parts.append(f"{name}={numpy_helper.to_array(tensor).tolist()}")
    return ", ".join(parts)


def check_tensor_sizes(path: Path, model: Any, batch: int, budget_bytes: float) -> None:
    """Refuse a model one of whose tensors alone, at ``batch`` samples, would exceed ``budget_bytes``."""
    found = largest_tensor(model, batch)
    if found is None or 0 <= found[0] <= budget_bytes:
        return
    nbytes, info, node = found
    constants = _constants(node, model.graph) if node is not None else ""
    where = f"node {node.name!r} ({node.op_type}" + (f"; {constants}" if constants else "") + ")" if node else "the graph"
    if nbytes < 0:
        raise CvdnnError(
            f"{path}: {where} makes the tensor {info.name!r} of shape {_shape_text(info)}, a negative size: its "
            "attributes do not fit its input (a runtime asked to build it allocates terabytes or fails)",
            fix=f"check that node's attributes and constant inputs; {_REEXPORT}", node=node.name if node else None)
    raise CvdnnError(
        f"{path}: {where} makes the tensor {info.name!r} of shape {_shape_text(info)}: {nbytes / (1 << 30):.3g} GiB "
        f"at {batch} sample(s), more than the memory budget of {budget_bytes / (1 << 30):.3g} GiB; no runtime is "
        "asked to allocate it",
        fix=f"check that node's attributes and constant inputs ({_REEXPORT} if they are wrong); if the model is "
        "meant to be this large, raise --cvdnn-memory-budget (GiB) on a machine that has the memory",
        node=node.name if node else None)


def check_declared_outputs(path: Path, model: Any) -> None:
    """The shapes the graph declares for its outputs agree with the shapes its nodes make (what onnx.checker's full
    check finds with strict shape inference, without its false alarms on function ops): a runtime would either
    refuse the file or hand the user a tensor of another shape than the one the interface promises."""
    from onnx import shape_inference

    copy = weightless_copy(model)
    for item in copy.graph.output:
        item.type.tensor_type.ClearField("shape")
    try:
        inferred = shape_inference.infer_shapes(copy, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - a model inference cannot follow is judged by the checker and runtimes
        return
    declared = {item.name: item for item in model.graph.output}
    for item in inferred.graph.output:
        own = declared.get(item.name)
        if own is None or not own.type.tensor_type.HasField("shape") or not item.type.tensor_type.HasField("shape"):
            continue
        want, made = own.type.tensor_type.shape.dim, item.type.tensor_type.shape.dim
        axes = [k for k, (a, b) in enumerate(zip(want, made)) if a.HasField("dim_value") and b.HasField("dim_value")
                and a.dim_value > 0 and b.dim_value > 0 and a.dim_value != b.dim_value]
        if len(want) != len(made) or axes:
            what = (f"rank {len(want)}, the graph makes rank {len(made)}" if len(want) != len(made) else
                    f"size {want[axes[0]].dim_value} at axis {axes[0]}, the graph makes {made[axes[0]].dim_value}")
            raise CvdnnError(
                f"{path}: the graph output {item.name!r} is declared {_shape_text(own)} but its nodes make "
                f"{_shape_text(item)} ({what}); the interface contradicts the graph",
                fix=f"{_REEXPORT}, or correct the declared shape (or clear it: "
                "model.graph.output[k].type.tensor_type.ClearField('shape'); onnx.save(model, path))")


def check_strict_inference(path: Path, model: Any) -> None:
    """onnx.checker's full check (strict shape inference) on the path, as its users run it: a node whose inputs
    cannot meet (an Add of (1, 4) and (1, 9) after an If whose branches make the wrong shape) is refused here.
    Errors inside a function op's own body (MeanVarianceNormalization's expansion fails in strict mode though
    every runtime runs the op) and on nodes of other domains (onnxruntime's contrib ops) are left to the
    runtimes: they are onnx's limits, not the file's."""
    import re

    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx.checker.ValidationError, InferenceError
        text = " ".join(str(exc).split())
        found = re.search(r"op_type:([\w.]+), node name: ([^)]*)\)", text)
        if found is None:
            return  # (not a node's inference error: the plain checker, run before, judged the rest)
        node = next((n for n in model.graph.node if n.name == found.group(2)), None)
        if node is not None and (node.domain not in ("", "ai.onnx") or _is_function_op(model, node)):
            return
        raise CvdnnError(
            f"{path}: onnx.checker's full check (strict shape inference) rejects node {found.group(2)!r} "
            f"({found.group(1)}): {text[:300]}",
            fix=f"{_REEXPORT}; onnx.checker.check_model(path, full_check=True) shows the same",
            node=found.group(2) or None) from None


def _is_function_op(model: Any, node: Any) -> bool:
    """Is the node's operator defined by a function body (expanded by shape inference)?"""
    import onnx

    version = next((o.version for o in model.opset_import if (o.domain or "") == ""), None)
    try:
        schema = onnx.defs.get_schema(node.op_type, version or onnx.defs.onnx_opset_version(), "")
    except Exception:  # noqa: BLE001 - no schema: not a standard op
        return False
    return bool(getattr(schema, "has_function", False) or getattr(schema, "has_context_dependent_function", False))
