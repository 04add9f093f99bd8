"""Hostile ONNX files, made on purpose: a small valid classifier and seeded mutants of it.

Structural mutants edit the model with the onnx API (one known way of being wrong each: a huge kernel,
a huge Tile, undefined or zero dimensions, weights that do not fit the kernel, a name that is not UTF-8,
external data far past its file's end, …); byte mutants flip, cut or repeat bytes of the serialized
file.  ``tests/test_fuzz.py`` runs the plugin on them; the generator needs onnx and numpy only.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["base_model", "external", "STRUCTURAL", "structural_mutants", "byte_mutants", "write_mutants"]


def base_model(seed: int = 0) -> Any:
    """Conv 3x3 → Relu → GlobalAveragePool → Flatten → Gemm → Softmax on a 1x3x16x16 input (opset 13)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "conv_b"),
             numpy_helper.from_array(rng.normal(0, 0.5, (4, 5)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(5, np.float32), "fc_b")]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])
    model = helper.make_model(helper.make_graph(nodes, "small", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _node(model: Any, name: str) -> Any:
    return next(n for n in model.graph.node if n.name == name)


def _set_ints(model: Any, node: str, attr: str, values: list[int]) -> None:
    from onnx import helper

    n = _node(model, node)
    kept = [a for a in n.attribute if a.name != attr]
    del n.attribute[:]
    n.attribute.extend([*kept, helper.make_attribute(attr, values)])


def _set_int(model: Any, node: str, attr: str, value: int) -> None:
    from onnx import helper

    n = _node(model, node)
    kept = [a for a in n.attribute if a.name != attr]
    del n.attribute[:]
    n.attribute.extend([*kept, helper.make_attribute(attr, value)])


def _input_dims(model: Any, dims: list[int]) -> None:
    shape = model.graph.input[0].type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        shape.dim.add().dim_value = d


def _tile(model: Any) -> None:
    from onnx import helper, numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 100000, 100000], np.int64), "reps"))
    _node(model, "gap").input[0] = "t"
    model.graph.node.insert(2, helper.make_node("Tile", ["r", "reps"], ["t"], name="tile"))


def _weights(model: Any, shape: tuple[int, ...]) -> None:
    from onnx import numpy_helper

    old = next(i for i in model.graph.initializer if i.name == "conv_w")
    old.CopyFrom(numpy_helper.from_array(np.ones(shape, np.float32), "conv_w"))


def external(model: Any, offset: int, location: str = "weights.bin") -> None:
    """The 80 bytes of ``fc_w`` stored in ``location`` at ``offset`` instead of inside the model."""
    from onnx import TensorProto

    w = next(i for i in model.graph.initializer if i.name == "fc_w")
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", "80")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value


def _raw_short(model: Any) -> None:
    w = next(i for i in model.graph.initializer if i.name == "conv_w")
    data = np.ones(10, np.float32).tobytes()
    w.ClearField("float_data")
    w.raw_data = data


def _reshape_huge(model: Any) -> None:
    from onnx import helper, numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 10**12], np.int64), "shape"))
    _node(model, "fc").input[0] = "h"
    model.graph.node.insert(4, helper.make_node("Reshape", ["f", "shape"], ["h"], name="reshape"))


def _cycle(model: Any) -> None:
    _node(model, "conv").input[0] = "r"  # conv reads relu's output, relu reads conv's


#: name → edit of the base model (in place); each is one way an ONNX file from elsewhere can be wrong
STRUCTURAL: dict[str, Callable[[Any], None]] = {
    "conv_kernel_huge": lambda m: _set_ints(m, "conv", "kernel_shape", [10**6, 10**6]),
    "conv_pads_huge": lambda m: _set_ints(m, "conv", "pads", [10**6] * 4),
    "conv_dilations_huge": lambda m: _set_ints(m, "conv", "dilations", [10**6, 10**6]),
    "conv_strides_zero": lambda m: _set_ints(m, "conv", "strides", [0, 0]),
    "conv_pads_negative": lambda m: _set_ints(m, "conv", "pads", [-5, -5, -5, -5]),
    "conv_group_wrong": lambda m: _set_int(m, "conv", "group", 2),
    "conv_group_zero": lambda m: _set_int(m, "conv", "group", 0),
    "tile_huge": _tile,
    "reshape_huge": _reshape_huge,
    "input_dims_negative": lambda m: _input_dims(m, [-7, -7, -7, -7]),
    "input_rank_one": lambda m: _input_dims(m, [768]),
    "input_batch_zero": lambda m: _input_dims(m, [0, 3, 16, 16]),
    "input_height_zero": lambda m: _input_dims(m, [1, 3, 0, 16]),
    "input_huge": lambda m: _input_dims(m, [1, 3, 10**9, 10**9]),
    "weights_bigger_than_kernel": lambda m: _weights(m, (4, 3, 5, 5)),
    "weights_wrong_channels": lambda m: _weights(m, (4, 7, 3, 3)),
    "weights_raw_data_short": _raw_short,
    "input_dtype_undefined": lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 0),
    "input_dtype_string": lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 8),
    "external_offset_huge": lambda m: external(m, 2**62),
    "external_offset_negative": lambda m: external(m, -80),
    "missing_initializer": lambda m: _node(m, "fc").input.__setitem__(1, "nowhere"),
    "output_not_produced": lambda m: setattr(m.graph.output[0], "name", "ghost"),
    "graph_cycle": _cycle,
    "no_nodes": lambda m: m.graph.ClearField("node"),
    "opset_future": lambda m: setattr(m.opset_import[0], "version", 99),
    "opset_ancient": lambda m: setattr(m.opset_import[0], "version", 1),
    "unknown_op": lambda m: setattr(_node(m, "relu"), "op_type", "NoSuchOp"),
    "custom_domain": lambda m: setattr(_node(m, "relu"), "domain", "com.example"),
    "duplicate_output_name": lambda m: _node(m, "gap").output.__setitem__(0, "r"),
    "softmax_axis_out_of_range": lambda m: _set_int(m, "softmax", "axis", 7),
}


def structural_mutants(seed: int = 0) -> dict[str, bytes]:
    """Each structural mutant of the base model, serialized (non-UTF-8 node name made at byte level)."""
    out: dict[str, bytes] = {}
    for name, edit in STRUCTURAL.items():
        model = base_model(seed)
        edit(model)
        out[name] = model.SerializeToString()
    raw = base_model(seed).SerializeToString()
    out["node_name_not_utf8"] = raw.replace(b"\n\x04relu", b"\n\x04re\xff\xfe", 1) if b"\n\x04relu" in raw \
        else raw.replace(b"relu", b"re\xff\xfe", 1)
    return out


def byte_mutants(count: int, seed: int = 0) -> dict[str, bytes]:
    """``count`` seeded byte-level mutants of the serialized base model: flips, cuts, repeats, zeroed runs."""
    raw = base_model(seed).SerializeToString()
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    for k in range(count):
        data = bytearray(raw)
        kind = ("flip", "cut", "repeat", "zero")[k % 4]
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "cut":
            data = data[: rng.randrange(1, len(data))]
        elif kind == "repeat":
            a = rng.randrange(len(data))
            b = min(len(data), a + rng.randint(1, 64))
            data[b:b] = data[a:b]
        else:
            a = rng.randrange(len(data))
            data[a : a + rng.randint(1, 32)] = bytes(min(len(data) - a, 32))[: rng.randint(1, 32)]
        out[f"bytes_{kind}_{k:03d}"] = bytes(data)
    return out


def write_mutants(folder: Path, mutants: dict[str, bytes]) -> list[Path]:
    """The mutants as ``folder/<name>.onnx`` (a weights.bin of 80 bytes beside them for external data)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(np.ones(20, np.float32).tobytes())
    paths = []
    for name, data in mutants.items():
        path = folder / f"{name}.onnx"
        path.write_bytes(data)
        paths.append(path)
    return paths


def importer_limits_model(kind: str, seed: int = 0) -> Any:
    """A small model with one construct OpenCV 4.5.5's importer rejects though ONNX allows it: ``slice``
    (constant Slice axes [0, 2, 3, 1], as tf2onnx writes an NHWC Cropping2D), ``squeeze`` (Squeeze axes as an
    input, opset 13), ``kernel`` (a Conv without kernel_shape), ``flatten`` (Keras Flatten's shape computed
    by Shape -> Gather -> Slice -> Concat at run time, as in VGG16) ``clip`` (ReLU6-like Clip, bounds as
    inputs) or ``reduce`` (opset 18: ReduceMean's axes as an input).  Dynamic batch N, 1x3x8x8 samples."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1],
                            **({} if kind == "kernel" else {"kernel_shape": [3, 3]}))
    inits, nodes, out = [w], [conv], ["N", 4, 8, 8]
    if kind == "slice":
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                  (("starts", [0, 1, 1, 0]), ("ends", [2**62, 7, 7, 2**62]), ("axes", [0, 2, 3, 1]))]
        nodes.append(helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["y"], name="crop"))
        out = ["N", 4, 6, 6]
    elif kind == "flatten":  # tf2onnx's Keras Flatten after NCHW input: the NHWC shape gathered at run time
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                  (("perm", [0, 2, 3, 1]), ("zero", [0]), ("one", [1]))]
        inits.append(numpy_helper.from_array(np.array([256], np.int32), "rest"))
        nodes += [helper.make_node("Transpose", ["c"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
                  helper.make_node("Shape", ["c"], ["s"], name="shape"),
                  helper.make_node("Gather", ["s", "perm"], ["g"], name="gather"),
                  helper.make_node("Cast", ["g"], ["g32"], name="to_int32", to=TensorProto.INT32),
                  helper.make_node("Slice", ["g32", "zero", "one", "zero"], ["n"], name="batch"),
                  helper.make_node("Concat", ["n", "rest"], ["shape32"], name="target", axis=0),
                  helper.make_node("Cast", ["shape32"], ["shape64"], name="to_int64", to=TensorProto.INT64),
                  helper.make_node("Reshape", ["t", "shape64"], ["y"], name="flatten")]
        out = ["N", 256]
    elif kind == "clip":  # Keras ReLU6 at opset >= 11: the bounds are inputs
        inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0.0), ("hi", 0.5))]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="relu6"))
    elif kind == "reduce":  # opset 18: ReduceMean's axes became an input (OpenCV 4.5 reads the attribute only)
        inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "mean_axes"))
        nodes.append(helper.make_node("ReduceMean", ["c", "mean_axes"], ["y"], name="mean", keepdims=0))
        out = ["N", 4]
    elif kind == "squeeze":
        inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "sq_axes"))
        nodes += [helper.make_node("ReduceMean", ["c"], ["m"], name="mean", axes=[2, 3], keepdims=1),
                  helper.make_node("Squeeze", ["m", "sq_axes"], ["y"], name="squeeze")]
        out = ["N", 4]
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out)
    model = helper.make_model(helper.make_graph(nodes, kind, [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 18 if kind == "reduce" else 13)])
    model.ir_version = 8 if kind == "reduce" else 7
    return model


def as_constant_nodes(model: Any) -> Any:
    """The model with every initializer but the weights turned into a Constant node (as PyTorch exports)."""
    import onnx
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    moved = [t for t in out.graph.initializer if t.name != "w"]
    kept = [t for t in out.graph.initializer if t.name == "w"]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    nodes = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t) for t in moved]
    old = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes + old)
    return out
