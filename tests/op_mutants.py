"""Operator-level ONNX mutants: seeded edits of the graph's nodes, the second family beside onnx_mutants.py.

Each mutant is the small valid classifier of ``onnx_mutants.base_model`` with one to three edits drawn from
what breaks real graphs: an op type swapped for another, an attribute set to a random (often absurd) value or
removed, an input dropped, rewired or duplicated, an output renamed (dangling consumers), a node removed,
duplicated or moved out of order, an initializer retyped, reshaped or filled with NaN/Inf, a graph output
pointed at an intermediate tensor, a Cast inserted.  Some mutants stay valid models (Relu -> Tanh): those may
pass.  ``tests/test_fuzz.py`` runs the plugin on them; the generator needs onnx and numpy only.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np

from onnx_mutants import base_model

__all__ = ["op_mutants", "EDITS"]

_UNARY = ("Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Identity", "Softmax", "Flatten", "GlobalAveragePool",
          "MaxPool", "Transpose", "Squeeze", "Unsqueeze", "Softplus", "Floor", "Log", "Sqrt", "Reciprocal")
_BINARY = ("Add", "Mul", "Sub", "Div", "MatMul", "Gemm", "Conv", "Pow", "Max", "Min", "Reshape", "Concat")
_ATTRS = ("axis", "kernel_shape", "pads", "strides", "group", "perm", "transA", "transB", "dilations", "axes",
          "alpha", "beta", "keepdims", "auto_pad", "ceil_mode")


def _values(rng: random.Random, name: str) -> Any:
    """A random value for the attribute ``name``: plausible, out of range, negative or huge."""
    from onnx import helper

    pick = rng.choice(("small", "negative", "huge", "empty", "wrong-type"))
    if name in ("alpha", "beta"):
        value: Any = rng.choice((0.0, -1.0, 1e30, float("nan"), 0.5))
    elif name == "auto_pad":
        value = rng.choice(("SAME_UPPER", "VALID", "NOTSET", "BOGUS"))
    elif pick == "wrong-type":
        value = "x"
    elif name in ("axis", "group", "transA", "transB", "keepdims", "ceil_mode"):
        value = {"small": rng.randint(0, 4), "negative": -rng.randint(1, 6), "huge": 10 ** rng.randint(3, 9),
                 "empty": 0}[pick]
    else:
        n = rng.randint(0 if pick == "empty" else 1, 5)
        value = [{"small": rng.randint(0, 4), "negative": -rng.randint(1, 6), "huge": 10 ** rng.randint(3, 9),
                  "empty": 0}[pick] for _ in range(n)]
    return helper.make_attribute(name, value)


def _node(model: Any, rng: random.Random) -> Any:
    return rng.choice(list(model.graph.node))


def _swap_op(model: Any, rng: random.Random) -> str:
    node = _node(model, rng)
    old = node.op_type
    node.op_type = rng.choice(_UNARY if len(node.input) == 1 else _BINARY + _UNARY)
    return f"op {node.name}: {old} -> {node.op_type}"


def _set_attr(model: Any, rng: random.Random) -> str:
    node = _node(model, rng)
    name = rng.choice(_ATTRS)
    attr = _values(rng, name)
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, attr])
    return f"attr {node.name}.{name}"


def _drop_attr(model: Any, rng: random.Random) -> str:
    node = next((n for n in rng.sample(list(model.graph.node), len(model.graph.node)) if n.attribute), None)
    if node is None:
        return _set_attr(model, rng)
    k = rng.randrange(len(node.attribute))
    name = node.attribute[k].name
    del node.attribute[k]
    return f"drop attr {node.name}.{name}"


def _tensor_names(model: Any) -> list[str]:
    names = [i.name for i in model.graph.input] + [i.name for i in model.graph.initializer]
    return names + [o for n in model.graph.node for o in n.output]


def _rewire(model: Any, rng: random.Random) -> str:
    node = _node(model, rng)
    how = rng.choice(("drop", "other", "duplicate", "missing"))
    if how == "drop" and node.input:
        del node.input[-1]
    elif how == "other" and node.input:
        node.input[rng.randrange(len(node.input))] = rng.choice(_tensor_names(model))
    elif how == "duplicate" and node.input:
        node.input.append(node.input[0])
    else:
        node.input.append("no_such_tensor")
    return f"input {how} {node.name}"


def _rename_output(model: Any, rng: random.Random) -> str:
    node = _node(model, rng)
    node.output[0] = node.output[0] + "_renamed"
    return f"rename output of {node.name}"


def _remove_node(model: Any, rng: random.Random) -> str:
    node = _node(model, rng)
    model.graph.node.remove(node)
    return f"remove {node.name}"


def _duplicate_node(model: Any, rng: random.Random) -> str:
    from onnx import NodeProto

    node = _node(model, rng)
    copy = NodeProto()
    copy.CopyFrom(node)
    model.graph.node.append(copy)  # (the same output twice: SSA broken)
    return f"duplicate {node.name}"


def _reorder(model: Any, rng: random.Random) -> str:
    nodes = list(model.graph.node)
    rng.shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return "shuffle node order"


def _initializer(model: Any, rng: random.Random) -> str:
    from onnx import TensorProto, numpy_helper

    k = rng.randrange(len(model.graph.initializer))
    tensor = model.graph.initializer[k]
    arr = numpy_helper.to_array(tensor)
    how = rng.choice(("nan", "inf", "flatten", "float16", "int64", "transpose", "empty"))
    if how == "nan":
        arr = arr.copy()
        arr.flat[rng.randrange(arr.size)] = np.nan
    elif how == "inf":
        arr = np.full_like(arr, np.inf)
    elif how == "flatten":
        arr = arr.reshape(-1)
    elif how == "float16":
        arr = arr.astype(np.float16)
    elif how == "int64":
        arr = arr.astype(np.int64)
    elif how == "transpose":
        arr = arr.T.copy()
    else:
        arr = np.zeros((0,), arr.dtype)
    new = numpy_helper.from_array(arr, tensor.name)
    if how == "float16" and rng.random() < 0.5:
        new.data_type = TensorProto.FLOAT  # (declared float, holding float16 bytes: a length mismatch)
    model.graph.initializer[k].CopyFrom(new)
    return f"initializer {tensor.name}: {how}"


def _output_to(model: Any, rng: random.Random) -> str:
    name = rng.choice(_tensor_names(model))
    model.graph.output[0].name = name
    return f"graph output -> {name}"


def _insert_cast(model: Any, rng: random.Random) -> str:
    from onnx import TensorProto, helper

    k = rng.randrange(len(model.graph.node))
    node = model.graph.node[k]
    out = node.output[0]
    node.output[0] = out + "_precast"
    to = rng.choice((TensorProto.INT64, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BOOL, TensorProto.UINT8))
    model.graph.node.insert(k + 1, helper.make_node("Cast", [out + "_precast"], [out], name=f"cast_{k}", to=to))
    return f"cast after {node.name} to {to}"


EDITS: tuple[Callable[[Any, random.Random], str], ...] = (
    _swap_op, _set_attr, _set_attr, _drop_attr, _rewire, _rename_output, _remove_node, _duplicate_node, _reorder,
    _initializer, _output_to, _insert_cast)


def op_mutants(count: int, seed: int = 0) -> dict[str, tuple[bytes, str]]:
    """``count`` seeded operator-level mutants: name -> (serialized model, what was edited)."""
    rng = random.Random(seed)
    out: dict[str, tuple[bytes, str]] = {}
    for k in range(count):
        model = base_model(seed)
        done = [rng.choice(EDITS)(model, rng) for _ in range(rng.choice((1, 1, 2, 3)))]
        out[f"op{k:03d}"] = (model.SerializeToString(), "; ".join(done))
    return out
