"""The load stage: cv2.dnn reads the deployment's artifact on its target, and when it cannot, the error names
the node (as the ONNX graph calls it), its op type and Keras layer, and what to change."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import CvdnnError, StageSkipped
from .graph import keras_layer_for
from .runners import Runner

if TYPE_CHECKING:
    from .core import Deployment

__all__ = ["load_runner", "forward_error", "newer_opencv", "NEWEST_OPENCV"]

#: the newest OpenCV release this plugin is tested on (pyproject.toml's bound; README "Supported OpenCV")
NEWEST_OPENCV = (5, 1)


def newer_opencv(version: str) -> str:
    """", or an OpenCV newer than X" where a newer release than ``version`` exists ("" on the newest)."""
    try:
        here = tuple(int(v) for v in version.split(".")[:2])
    except ValueError:
        return ""
    return f", or an OpenCV newer than {version}" if here < NEWEST_OPENCV else ""


def load_runner(dep: Deployment) -> Runner:
    """The cv2.dnn runner of ``dep``'s artifact on its target; a CvdnnError saying why cv2.dnn cannot read it."""
    from .runners.cv2dnn import opencv_version
    from .runners.isolated import ChildError

    try:
        return dep.cv2_runner(dep.onnx_path, dep.output_names)
    except ChildError as exc:
        if exc.message.startswith("cv2.dnn crashed"):
            raise _crash_error(dep, exc) from None
        raw = exc.raw.strip() or exc.message
        version = exc.opencv or (opencv_version() if dep.target.is_local else "?")
    except (CvdnnError, StageSkipped):  # (StageSkipped: a device this machine lacks)
        raise
    except Exception as exc:  # noqa: BLE001 - cv2.error
        raw, version = str(exc), opencv_version()
    raise _load_error(dep, raw, version)


def forward_error(dep: Deployment, exc: CvdnnError) -> CvdnnError:
    """cv2.dnn read the graph but its forward of sample 0 fails (OpenCV's runtime, not its importer)."""
    from .runners.cv2dnn import opencv_error_line

    if getattr(exc, "message", "").startswith("cv2.dnn crashed"):
        return _crash_error(dep, exc)
    version = dep.target_opencv_version()
    raw = (getattr(exc, "raw", "") or str(exc)).strip()
    word, nodes = _runtime_nodes(dep, raw)
    where = ""
    if nodes:
        op_type = "/".join(dict.fromkeys(op for _, op in nodes))
        layers = [keras_layer_for(n, dep.keras_layer_names) for n, _ in nodes] if dep.has_keras else []
        named = ", ".join(repr(n) for n, _ in nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
        where = (f"; OpenCV's {word.replace('_', ' ')} layer runs node{'s' if len(nodes) > 1 else ''} {named} (op {op_type}"
                 + (f", Keras layer {layers[0]!r}" if len(nodes) == 1 and layers and layers[0] else "") + ")")
    return CvdnnError(
        f"cv2.dnn (OpenCV {version}, engine {dep.settings.engine}, {dep.target_label}) reads "
        f"{dep.onnx_path.name} but cannot run it: net.forward() on sample 0 fails: "
        f"{opencv_error_line(Exception(raw)) or raw[:300]}{where}",
        fix=("the importer accepted the graph and its runtime rejects it: look for the remedy the load item "
             "verified on this OpenCV (--cvdnn-fix tries every ONNX rewrite and opset), try another "
             "--cvdnn-engine (OpenCV 5)" + newer_opencv(version)),
        details=raw or None, node=nodes[0][0] if len(nodes) == 1 else None)


#: OpenCV's runtime names its layer (in the message or its source file), not the node: the ONNX op types each
#: layer runs, most specific first ("deconvolution" before "convolution")
_RUNTIME_LAYERS = (("deconvolution", ("ConvTranspose",)), ("convolution", ("Conv",)),
                   ("pooling", ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")),
                   ("batch_norm", ("BatchNormalization",)), ("resize", ("Resize", "Upsample")),
                   ("permute", ("Transpose",)), ("reshape", ("Reshape", "Flatten", "Squeeze", "Unsqueeze")),
                   ("concat", ("Concat",)), ("slice", ("Slice", "Split")), ("eltwise", ("Add", "Sub", "Mul", "Div")),
                   ("softmax", ("Softmax",)), ("fully_connected", ("Gemm", "MatMul")), ("gemm", ("Gemm", "MatMul")),
                   ("lstm", ("LSTM",)), ("gru", ("GRU",)), ("padding", ("Pad",)), ("gather", ("Gather",)),
                   ("matmul", ("MatMul",)), ("attention", ("Attention", "MultiHeadAttention")))


def _runtime_nodes(dep: Deployment, raw: str) -> tuple[str, list[tuple[str, str]]]:
    """(node, op type) of the nodes a runtime error is about: the op types of the OpenCV layer its message or
    source file names, among the graph's nodes (empty where no layer is named or the graph has none of them)."""
    if dep.settings.format != "onnx":
        return "", []
    text = raw.lower().replace(" ", "_")
    for word, op_types in _RUNTIME_LAYERS:
        if word in text:
            nodes = [(name, op) for op, names in dep.graph_summary["patterns"].values() if op in op_types
                     for name in names]
            if nodes:
                return word, nodes
    return "", []


def _crash_error(dep: Deployment, exc: CvdnnError) -> CvdnnError:
    """OpenCV crashed (a signal) reading or running the artifact in a child process."""
    from .runners.cv2dnn import opencv_version

    version = getattr(exc, "opencv", None) or (opencv_version() if dep.target.is_local else dep.target_opencv_version())
    what = "reading" if getattr(exc, "stage", "load") == "load" else "running sample 0 of"
    tail = "\n".join(getattr(exc, "raw", "").strip().splitlines()[-12:])
    return CvdnnError(
        f"{exc.message.rstrip('.')} {what} {dep.onnx_path.name} (OpenCV {version}, engine {dep.settings.engine}, "
        f"{dep.target_label}); it ran in a child process, so the session goes on",
        fix=("the crash is OpenCV's: report it with the model; meanwhile try another --cvdnn-engine (OpenCV 5), "
             "another OpenCV version (--cvdnn-target=opencv==X.Y.Z), or export the inputs as float32 and fixed "
             "shapes (static shapes, onnxslim) — importers crash most on computed shapes and integer inputs"
             + newer_opencv(version)),
        details=("the child's last output:\n" + tail) if tail else None, node=getattr(exc, "node", None))


def _load_error(dep: Deployment, raw: str, version: str) -> CvdnnError:
    from .runners.cv2dnn import opencv_error_line, opencv_node

    found = opencv_node(Exception(raw))
    if found is None:  # OpenCV 5.1: an empty network, the op types only in its log
        blocking = _unimportable_nodes(dep, raw)
        if blocking:
            return _unimportable_error(dep, blocking, version, raw)
    layer = None
    line = opencv_error_line(Exception(raw))
    if found:  # OpenCV 4.5 names a node by its output tensor: name the node itself
        node = _node_named(dep, found[0])
        line = line.replace(f"node {found[0]!r}", f"node {node!r}", 1)
        found = (node, found[1])
    if found and dep.has_keras:
        layer = keras_layer_for(found[0], dep.keras_layer_names)
    return CvdnnError(
        f"cv2.dnn (OpenCV {version}, engine {dep.settings.engine}) cannot read "
        f"{dep.onnx_path.name}: {line}"
        + (f"; the node comes from the Keras layer {layer!r}" if layer else ""),
        fix=dep.load_fix,
        details=raw.strip(),
        node=found[0] if found else None,
    )


def _node_named(dep: Deployment, name: str) -> str:
    """The ONNX node called ``name``, or producing the tensor ``name`` (as OpenCV 4.5 names nodes)."""
    if dep.settings.format != "onnx":
        return name
    try:
        import onnx

        graph = onnx.load(str(dep.onnx_path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - a name is still a name
        return name
    found = next((n for n in graph.node if n.name == name), None) or next(
        (n for n in graph.node if name in n.output), None)
    return str(found.name) if found is not None and found.name else name


def _unimportable_nodes(dep: Deployment, raw: str) -> list[tuple[str, str, str]]:
    """(node, op type, why) of the nodes an import error without a node name is about: the op types OpenCV
    logged as unsupported (5.1), else the op patterns that fail when probed alone (see diagnose.op_scan)."""
    from .runners.cv2dnn import unsupported_ops

    if dep.settings.format != "onnx":
        return []
    patterns = dep.graph_summary["patterns"]
    ops = unsupported_ops(raw)
    if ops:
        first: dict[str, str] = {}
        for op_type, names in patterns.values():
            if op_type in ops and names:
                first.setdefault(op_type, names[0])
        return [(first[op], op, "unsupported operation") for op in ops if op in first]
    from .diagnose import op_scan

    try:
        return [(r.nodes[0], r.op_type, r.error) for r in op_scan(dep, whole_graph=False) if not r.ok]
    except Exception:  # noqa: BLE001 - the probes are a diagnosis; the load error stands without them
        return []


def _unimportable_error(dep: Deployment, blocking: list[tuple[str, str, str]], version: str,
                        raw: str) -> CvdnnError:
    """The load error naming each node (op type, Keras layer) that this OpenCV cannot import."""
    parts = []
    for node, op_type, why in blocking:
        layer = keras_layer_for(node, dep.keras_layer_names) if dep.has_keras else None
        reason = ("this OpenCV's ONNX importer does not implement it" if why == "unsupported operation"
                  else f"fails when imported alone: {why}")
        parts.append(f"node {node!r} (op {op_type}" + (f", Keras layer {layer!r}" if layer else "")
                     + f") cannot be imported: {reason}")
    ops = sorted({op for _, op, _ in blocking})
    return CvdnnError(
        f"cv2.dnn (OpenCV {version}, engine {dep.settings.engine}) cannot read {dep.onnx_path.name}: "
        + "; ".join(parts),
        fix=(f"replace the layer(s) that make {', '.join(ops)} with ops this OpenCV imports, or compute them "
             "outside the network; the ops item lists every unsupported node, the remedy search below the "
             "opsets/layouts that load" + newer_opencv(version)),
        details=raw.strip(), node=blocking[0][0],
    )
