"""Reading an ONNX graph: inputs, outputs, layout, Softmax outputs, node → Keras layer.

Imports ``onnx`` lazily (inside functions).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import CvdnnError

__all__ = ["TensorInfo", "GraphInfo", "read_graph", "summarize", "op_pattern", "keras_layer_for", "guess_layout",
           "validate_onnx", "load_model"]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | None, ...]
    dtype: str
    #: the symbolic name of each dynamic axis (ONNX dim_param: "N", "batch_size"), None elsewhere; () unknown
    symbols: tuple[str | None, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "symbols": list(self.symbols)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorInfo":
        return cls(d["name"], tuple(d["shape"]), d["dtype"], tuple(d.get("symbols", ())))


@dataclass(frozen=True)
class GraphInfo:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    softmax_outputs: tuple[bool, ...]
    opset: int
    op_types: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"inputs": [i.as_dict() for i in self.inputs], "outputs": [o.as_dict() for o in self.outputs],
                "softmax_outputs": list(self.softmax_outputs), "opset": self.opset, "op_types": list(self.op_types)}

    @classmethod
    def from_dict(cls, g: dict[str, Any]) -> "GraphInfo":
        return cls(tuple(TensorInfo.from_dict(d) for d in g["inputs"]), tuple(TensorInfo.from_dict(d) for d in g["outputs"]),
                   tuple(g["softmax_outputs"]), int(g["opset"]), tuple(g["op_types"]))


def _symbols(type_proto: Any) -> tuple[str | None, ...]:
    return tuple(str(d.dim_param) if d.HasField("dim_param") and d.dim_param else None
                 for d in type_proto.tensor_type.shape.dim)


def _tensor_info(value: Any) -> TensorInfo:
    from onnx import helper

    return TensorInfo(value.name, _dims(value.type),
                      helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name, _symbols(value.type))


def _dims(type_proto: Any) -> tuple[int | None, ...]:
    dims = type_proto.tensor_type.shape.dim
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value != -1 else None for d in dims)  # (-1:
    # dynamic, as paddle2onnx and others write it)


def load_model(path: Path) -> Any:
    """The ModelProto (external data not loaded), with a clear error if the file is not ONNX."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise CvdnnError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc).strip()[:200] or 'parse error'}); "
            "it is truncated, corrupt or another format",
            fix="re-export the model (tf2onnx, or let pytest-cvdnn convert the Keras source)",
        ) from exc
    _check_external_data(path, model)
    from .sanity import check_structure

    check_structure(path, model)
    return model


def read_graph(path: Path) -> GraphInfo:
    """The interface of an ONNX file, with a clear error if it is not one."""
    return _graph_info(path, load_model(path))


def _graph_info(path: Path, model: Any) -> GraphInfo:
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = tuple(_tensor_info(i) for i in graph.input if i.name not in initializers)
    if not inputs or not graph.output:
        raise CvdnnError(f"{path} has no graph inputs or outputs", fix="re-export the model")
    producers = {o: n for n in graph.node for o in n.output}
    outputs = tuple(_tensor_info(o) for o in graph.output)
    softmax = tuple(
        o.name in producers and producers[o.name].op_type == "Softmax" for o in graph.output
    )
    opset = max((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), default=0)
    op_types = tuple(sorted({n.op_type for n in graph.node}))
    return GraphInfo(inputs, outputs, softmax, opset, op_types)


def op_pattern(node: Any, initializers: set[str]) -> str:
    """An op pattern: op type, how many inputs are data vs constants, and the attribute names."""
    data = sum(1 for i in node.input if i and i not in initializers)
    const = sum(1 for i in node.input if i and i in initializers)
    attrs = ",".join(sorted(a.name for a in node.attribute))
    return f"{node.op_type}/{data}d{const}c/{attrs}"


def summarize(path: Path) -> dict[str, Any]:
    """What the checks read from an ONNX graph, as JSON (cached by content hash: a warm run does not
    import onnx): its interface, the inputs of final Softmax nodes, and its nodes grouped by op pattern."""
    model = load_model(path)
    inits = {i.name for i in model.graph.initializer}
    patterns: dict[str, list[Any]] = {}
    for node in model.graph.node:
        patterns.setdefault(op_pattern(node, inits), [node.op_type, []])[1].append(node.name)
    return {"graph": _graph_info(path, model).as_dict(), "softmax_inputs": _softmax_inputs(model.graph),
            "patterns": patterns, "index_ranges": index_ranges(model.graph), "precision": precision_of(model)}


#: ops that carry integer (quantized) arithmetic
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                           "QLinearMatMul", "MatMulInteger", "ConvInteger", "QLinearAdd", "QLinearMul"})


def quantized(op_types: Iterable[str]) -> bool:
    """Does a graph with these op types carry integer (quantized) arithmetic?"""
    return not QUANTIZED_OPS.isdisjoint(op_types)


def precision_of(model: Any) -> str:
    """"int8" for a quantized graph (QDQ or integer ops), "fp16" for one whose weights or arithmetic are float16,
    else "fp32"."""
    from onnx import TensorProto

    graph = model.graph
    if quantized(node.op_type for node in graph.node):
        return "int8"
    half = TensorProto.FLOAT16
    if any(init.data_type == half for init in graph.initializer) or any(
            node.op_type == "Cast" and any(a.name == "to" and a.i == half for a in node.attribute) for node in graph.node):
        return "fp16"
    return "fp32"


#: ops an integer input's values pass through on their way to a Gather's indices: reshapes, casts, and the
#: element-wise arithmetic exporters wrap around an index (Keras' Embedding: where(x < 0, x + rows, x))
_PASS_THROUGH = {"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Transpose", "Add",
                 "Sub", "Mul", "Where", "Less", "Greater", "Not", "Clip", "Min", "Max", "Mod", "Abs"}


def index_ranges(graph: Any) -> dict[str, list[int]]:
    """Integer graph inputs used as indices into a table (a Gather's indices, an Embedding's tokens), through
    casts and reshapes: input name -> [0, rows - 1], the values a valid input may hold."""
    from onnx import TensorProto

    shapes = {i.name: list(i.dims) for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    integer = {TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8,
               TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64}
    found: dict[str, list[int]] = {}
    for value in graph.input:
        if value.name in shapes or value.type.tensor_type.elem_type not in integer:
            continue
        rows: list[int] = []
        seen: set[int] = set()
        todo = [value.name]
        while todo:
            tensor = todo.pop()
            for node in consumers.get(tensor, ()):
                if node.op_type in _PASS_THROUGH and id(node) not in seen and len(seen) < 64:
                    seen.add(id(node))
                    todo.extend(node.output)
                elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor \
                        and node.input[0] in shapes:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    table = shapes[node.input[0]]
                    rows.append(int(table[axis]))
        if rows and min(rows) > 0:
            found[value.name] = [0, min(rows) - 1]
    return found


def all_tensors(graph: Any) -> Any:
    """Every tensor of a graph: initializers and tensors in node attributes (Constant), subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from all_tensors(attr.g)
            for sub in attr.graphs:
                yield from all_tensors(sub)


def _check_external_data(path: Path, model: Any) -> None:
    """Refuse external-data references that leave the model's folder (``../x``, absolute paths):
    loading the model would read files the model's author chose, anywhere on the machine."""
    from onnx import TensorProto

    folder = Path(path).resolve().parent
    for tensor in all_tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise CvdnnError(
                f"{path} refers to external data outside its folder: tensor {tensor.name!r} is stored in "
                f"{location!r}; it is not read",
                fix="keep the external data files beside the .onnx (onnx.save_model(..., save_as_external_data=True, "
                "location='weights.bin')), or save the model as one file",
            )
        if target == Path(path).resolve():
            raise CvdnnError(
                f"{path}: tensor {tensor.name!r} says its external data is stored in the .onnx file itself "
                f"({location!r}); its values would be the model's own bytes read as numbers",
                fix="the file was edited or written wrongly: re-export it (onnx.save_model(..., "
                "save_as_external_data=True, location='weights.bin') keeps the weights in their own file)")
        if not target.is_file():
            raise CvdnnError(f"{path}: the external data file {location!r} of tensor {tensor.name!r} is missing"
                             + (" or not a regular file" if target.exists() else ""),
                             fix="copy it next to the .onnx file")
        _check_extent(path, tensor, location, target.stat().st_size)


def _check_extent(path: Path, tensor: Any, location: str, size: int) -> None:
    """The offset and length of a tensor's external data lie inside its file (else nothing is read)."""
    entries = {e.key: e.value for e in tensor.external_data}
    try:
        offset, length = int(entries.get("offset") or 0), int(entries.get("length") or 0)
    except ValueError:
        offset, length = -1, -1
    if offset < 0 or length < 0 or offset + length > size:
        raise CvdnnError(
            f"{path}: tensor {tensor.name!r} is stored at offset {entries.get('offset', 0)} with length "
            f"{entries.get('length', '?')} in {location!r}, a file of {size:,} bytes; that is not inside it",
            fix="the .onnx and its external data file do not belong together: copy both from the same export",
        )


def guess_layout(onnx_shape: Sequence[int | None], keras_shape: Sequence[int | None] | None, default: str) -> str:
    """Is a 4-D ONNX input NCHW or NHWC?  Decided from the Keras (NHWC) shape when known."""
    if len(onnx_shape) != 4:
        return "nhwc"

    def fits(dims: Sequence[int | None], want: Sequence[int | None]) -> bool:
        return all(d is None or w is None or d == w for d, w in zip(dims, want, strict=True))

    if keras_shape is not None and len(keras_shape) == 4:
        _, h, w, c = keras_shape
        as_nchw = fits(onnx_shape[1:], (c, h, w))
        as_nhwc = fits(onnx_shape[1:], (h, w, c))
        if as_nchw != as_nhwc:
            return "nchw" if as_nchw else "nhwc"
    if onnx_shape[1] in (1, 3, 4) and onnx_shape[3] not in (1, 3, 4):
        return "nchw"
    if onnx_shape[3] in (1, 3, 4) and onnx_shape[1] not in (1, 3, 4):
        return "nhwc"
    return default


_SUFFIX = re.compile(r"_\d+$")


def keras_layer_for(node_name: str, layer_names: Sequence[str]) -> str | None:
    """The Keras layer a tf2onnx node came from (tf2onnx keeps ``model_1/layer_1/op`` names).

    Keras 3 on TensorFlow scopes each call as ``<name>_1`` (the model too): when the outer
    scope carries that suffix, ``conv2d_1`` means layer ``conv2d``, not layer ``conv2d_1``.
    """
    known = set(layer_names)
    segments = [s for s in re.split(r"[/:]", node_name) if s]
    call_suffix = bool(segments) and _SUFFIX.search(segments[0]) is not None
    # the innermost matching segment is the layer (the outer one is the model's name)
    for seg in reversed(segments[1:-1] or segments[:-1] or segments):
        stripped = _SUFFIX.sub("", seg)
        for cand in ((stripped, seg) if call_suffix else (seg, stripped)):
            if cand in known:
                return cand
    return None


#: where onnx.checker and onnxruntime name the node in their messages, most specific first
_NODE_IN_MESSAGE = (r"node with name '([^']+)'", r"of node:\s*name:\s*([\w/.:-]+)", r"Node \(([^)]+)\)",
                    r"in '([^' ]+) : \w+'", r"node[^\n]*?name[:=]?\s*['\"]?([\w/.:-]+)")


def validate_onnx(path: Path, layer_names: Sequence[str] = (), provided: bool = False, model: Any = None) -> None:
    """onnx.checker + an onnxruntime session; a failure names the node (and Keras layer).  ``provided``: the
    user's ONNX file (its fix is a re-export), not one this plugin converted (its fix is another opset);
    ``model``: its ModelProto from :func:`load_model` (read again otherwise)."""
    import onnx

    model = load_model(path) if model is None else model
    what = f"the ONNX file {path.name}" if provided else f"the converted graph {path.name}"
    fix = ("re-export the model, or fix the node with the onnx API (onnx.checker.check_model(path) "
           "names it too)" if provided else "try another --cvdnn-opset, or report the conversion problem to tf2onnx")
    bad = [n for n in model.graph.node if not _known_op(model, n)]
    if bad:
        node = bad[0]
        layer = keras_layer_for(node.name, layer_names)
        firsts: dict[str, Any] = {}
        for n in bad:
            firsts.setdefault(n.op_type, n)
        kinds = [kind + (f" in layer {found!r}" if (found := keras_layer_for(first.name, layer_names)) else "")
                 for kind, first in sorted(firsts.items())]
        others = (f" ({len(bad) - 1} more invalid node(s); op types: {', '.join(kinds)})" if len(bad) > 1 else "")
        raise CvdnnError(
            f"{what} is invalid: node {node.name!r} has op type {node.op_type!r}, "
            f"which is not an ONNX operator{others}"
            + (f"; it comes from the Keras layer {layer!r}" if layer else ""),
            fix=("replace that node with standard ONNX operators when exporting (no runtime here implements it)"
                 if provided else "tf2onnx could not convert that layer: try another --cvdnn-opset, or replace the "
                 "layer with standard Keras layers; report it to tf2onnx with the repro"),
            node=node.name,
        )
    try:  # (on the path: external data is read from its file, a model over 2 GiB works)
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx.checker.ValidationError and friends
        raise _rejected(f"onnx.checker rejects {what}", exc, layer_names, fix) from exc
    from .sanity import check_declared_outputs, check_strict_inference

    check_declared_outputs(path, model)
    check_strict_inference(path, model)
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise _rejected(f"onnxruntime cannot load {what}", exc, layer_names, fix) from exc


def _known_op(model: Any, node: Any) -> bool:
    """Is the node's op type an ONNX operator of the model's opset (other domains: not judged here)?"""
    import onnx

    domain = node.domain or ""
    if domain not in ("", "ai.onnx"):
        return True
    if not onnx.defs.has(node.op_type, domain):
        return False
    version = next((o.version for o in model.opset_import if (o.domain or "") == domain), None)
    if version is None:
        return True
    try:
        onnx.defs.get_schema(node.op_type, version, domain)
    except Exception:  # noqa: BLE001
        return False
    return True


def _rejected(what: str, exc: BaseException, layer_names: Sequence[str], fix: str) -> CvdnnError:
    """A validator's error as a CvdnnError naming the node (where its message names one) and its layer."""
    text = str(exc).strip()
    match = next((m for p in _NODE_IN_MESSAGE if (m := re.search(p, text, re.IGNORECASE))), None)
    node = match.group(1) if match else None
    layer = keras_layer_for(node, layer_names) if node else None
    where = f" (node {node!r}" + (f", Keras layer {layer!r})" if layer else ")") if node else ""
    text = re.sub(r"/\S+\.(?:h|cc|cpp):\d+ [^(]*\([^)]*\)\s*", "", text)  # onnxruntime's C++ source location
    first = " ".join(text.split())[:300] if text else type(exc).__name__
    return CvdnnError(f"{what}: {first}{where}", fix=fix, node=node)


def _softmax_inputs(graph: Any) -> list[tuple[int, str]]:
    """(output index, tensor name) of the input of each graph output produced by a Softmax."""
    producers = {o: n for n in graph.node for o in n.output}
    found = []
    for k, out in enumerate(graph.output):
        node = producers.get(out.name)
        if node is not None and node.op_type == "Softmax":
            found.append((k, node.input[0]))
    return found


def with_extra_outputs(path: Path, names: Sequence[str], out_path: Path, final: Path | None = None) -> None:
    """Write a copy of the model that also outputs the given intermediate tensors (``final``: the name
    ``out_path`` is moved to afterwards, which its external data files are named after)."""
    import onnx

    from .sanity import weightless_copy  # (shapes inferred without the weights' values: DenseNet121 0.13 → 0.02 s)

    model = onnx.load(str(path), load_external_data=False)
    _link_external_data(Path(path), model, Path(out_path), Path(final or out_path).name)
    try:
        known = {v.name: v for v in onnx.shape_inference.infer_shapes(weightless_copy(model)).graph.value_info}
    except Exception:  # noqa: BLE001 - shape inference is best effort
        known = {}
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name in existing:
            continue
        existing.add(name)
        # OpenCV's importer needs a typed value_info on every graph output
        info = known.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        model.graph.output.append(info)
    onnx.save(model, str(out_path))


def external_bytes(path: Path, model: Any) -> int:
    """The bytes of the model's weights kept in external data files (0 for a self-contained file)."""
    import onnx

    total = 0
    for tensor in all_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            try:
                total += int(entries.get("length") or 0) or (Path(path).parent / entries["location"]).stat().st_size
            except (KeyError, OSError, ValueError):
                continue
    return total


def relocate_external_data(path: Path, model: Any, name_of: Callable[[Path], str]) -> dict[str, Path]:
    """Point the external tensors of ``model`` (loaded from ``path`` without its weights) at new file names,
    ``name_of(data file)`` once per data file it names; returns {new name: data file} (what to link or copy
    beside the copy of the model, so that a model over protobuf's 2 GiB is written without its weights)."""
    import onnx

    renamed: dict[str, str] = {}
    sources: dict[str, Path] = {}
    for tensor in all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entry = next(e for e in tensor.external_data if e.key == "location")
        if entry.value not in renamed:
            source = (Path(path).parent / entry.value).resolve()  # (load_model checked: inside the model's folder)
            renamed[entry.value] = name_of(source)
            sources[renamed[entry.value]] = source
        entry.value = renamed[entry.value]
    return sources


def _link_external_data(path: Path, model: Any, out_path: Path, stem: str) -> None:
    """The external data of ``model`` linked beside ``out_path`` (hard link, else symbolic link, else copied),
    each file under a name of its own (relocate_external_data)."""
    import itertools
    import shutil

    count = itertools.count()
    for name, source in relocate_external_data(path, model, lambda _: f"{stem}.{next(count)}.data").items():
        target = out_path.parent / name
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            try:
                target.symlink_to(source)
            except OSError:
                shutil.copyfile(source, target)


def keras_layer_of(node: Any, initializers: set[str], layer_names: Sequence[str]) -> str | None:
    """The Keras layer of an ONNX node: from its name, its outputs, or its weights' names.

    tf2onnx renames fused nodes (``Conv__36``) but their weights keep the layer's name
    (``model/conv2d_1/convolution/merged_input:0``).
    """
    for name in (node.name, *node.output, *(i for i in node.input if i in initializers)):
        layer = keras_layer_for(name, layer_names) if name else None
        if layer:
            return layer
    return None
