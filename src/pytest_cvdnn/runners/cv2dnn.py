"""The cv2.dnn runner: ``readNetFromONNX``, ``readNetFromTFLite`` or ``readNetFromTensorflow`` by file type
(engine selectable on OpenCV 5)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ..devices import DEFAULT, device_code, net_key, set_device
from ..errors import CvdnnError
from . import Runner, RunnerSpec

if TYPE_CHECKING:
    from ..core import Deployment

__all__ = ["Cv2DnnRunner", "read_net", "net_code", "opencv_version", "engine_flag", "engine_error", "engine_note", "engines",
           "opencv_error_line", "opencv_node", "unsupported_ops", "missing_reader", "opencv_log"]

def opencv_version() -> str:
    import cv2

    return str(cv2.__version__)


def opencv_build() -> str:
    """What decides cv2.dnn's numbers here: version, build information and thread count (a digest)."""
    import hashlib

    import cv2

    from . import thread_share

    info = f"{cv2.__version__}|{thread_share() or cv2.getNumThreads()}|{cv2.getBuildInformation()}"
    return hashlib.sha256(info.encode()).hexdigest()


def has_onnxruntime() -> bool:
    """Was this OpenCV built with ONNX Runtime (what ENGINE_ORT needs)?  The PyPI wheels are not."""
    import cv2

    m = re.search(r"ONNX Runtime:\s*(\S+)", cv2.getBuildInformation())
    return m is not None and m.group(1).upper() not in ("NO", "OFF")


def engines() -> dict[str, int | None]:
    """The engines this OpenCV has: name -> ``cv2.dnn.ENGINE_*`` (``{"auto": None}`` on 4.x: no engine argument)."""
    import cv2

    found: dict[str, int | None] = {name[len("ENGINE_"):].lower(): int(getattr(cv2.dnn, name))
                                    for name in dir(cv2.dnn) if name.startswith("ENGINE_")}
    return found or {"auto": None}


def engine_error(engine: str) -> str | None:
    """Why this OpenCV cannot run ``engine`` (None: it can)."""
    have = engines()
    if engine in have:
        return None
    version = opencv_version()
    if have == {"auto": None}:
        return f"OpenCV {version} has no DNN engines to choose from (they came with OpenCV 5); only 'auto' applies"
    return f"OpenCV {version} has no engine {engine!r}; its engines are {', '.join(have)}"


def engine_note(engine: str) -> str:
    """What a user should know about ``engine`` on this OpenCV ("" if nothing)."""
    if engine == "ort" and "ort" in engines() and not has_onnxruntime():
        return ("this OpenCV was built without ONNX Runtime (its build information says ONNX Runtime: NO, as in the "
                "PyPI wheels): cv2.dnn falls back from ENGINE_ORT to ENGINE_OPENCV, so that is what was checked")
    return ""


def net_code(path: Path | str, engine: str = "auto", device: str = "cpu") -> str:
    """The deployment code that reads the artifact at ``path`` as ``net`` and sets where it computes, as
    :func:`read_net` does it (one line: statements joined by "; ")."""
    reader = READERS.get(Path(path).suffix.lower(), READERS[".onnx"])[0]
    flag = engine_flag(engine) if engine != "auto" else None
    args = [repr(str(path))] + (['""'] if flag is not None and reader == "readNetFromTensorflow" else []) \
        + ([f"cv2.dnn.ENGINE_{engine.upper()}"] if flag is not None else [])
    return "; ".join([f"net = cv2.dnn.{reader}({', '.join(args)})", *device_code(device).splitlines()])


def engine_flag(engine: str) -> int | None:
    """The ``cv2.dnn.ENGINE_*`` constant for ``engine``, or None where OpenCV has no engines (4.x)."""
    problem = engine_error(engine)
    if problem is not None:
        raise CvdnnError(problem, fix=f"use --cvdnn-engine={'|'.join(engines())} with this OpenCV")
    return engines()[engine]


_NODE = re.compile(r"Node \[([\w.]+)@[^\]]*\]:\((?:onnx_node!)?([^)]*)\)\s*parse error:?(.*)", re.S)
_PREFIX = re.compile(r"OpenCV\([^)]*\)\s*\S+:\d+: error: \([^)]*\)\s*(in function '[^']*')?\s*")


#: OpenCV 4.x's continuation marks ("> Node [...]" at the start of a line); never a comparison ("bufidx >= 0")
_MARK = re.compile(r"(?m)^\s*>(?=\s|$)")


def _clean(text: str) -> str:
    return " ".join(_MARK.sub(" ", _PREFIX.sub("", text)).split())[:300]


#: OpenCV's TFLite importer: "Problem during import of operator [CONV_2D]:(name) (1/6). Exception: ..."
_TFLITE_OP = re.compile(r"Problem during import of operator \[(\w+)\]:\((.*?)\) \((\d+)/(\d+)\)\.?[^\n]*")


def opencv_node(exc: BaseException) -> tuple[str, str] | None:
    """(node name, op type) named in an OpenCV import error, if any."""
    m = _NODE.search(str(exc))
    if m:
        return (m.group(2), m.group(1))
    t = _TFLITE_OP.search(str(exc))
    return (t.group(2), t.group(1)) if t else None


def opencv_error_line(exc: BaseException) -> str:
    """The part of OpenCV's multi-line error text that matters (node, op type, reason)."""
    text = str(exc).strip()
    m = _NODE.search(text)
    if m:
        op, node, rest = m.group(1), m.group(2), _clean(m.group(3))
        return f"node {node!r} (op {op}) cannot be imported: {rest or 'parse error'}"
    t = _TFLITE_OP.search(text)
    if t:
        op, name, index, count = t.group(1), t.group(2), int(t.group(3)), int(t.group(4))
        rest = _clean(text[t.end():]) or _clean(t.group(0).split("Exception:", 1)[-1])
        return (f"TFLite operator {name!r} ({op}, index {index} of the subgraph's {count} operators) cannot be imported: "
                f"{rest or 'import error'}")
    cleaned = _clean(text)
    return cleaned or repr(exc)


#: cv2.dnn reader of each artifact type, the OpenCV release that brought it, and the one that removed it
READERS = {".onnx": ("readNetFromONNX", "3.4", None), ".tflite": ("readNetFromTFLite", "4.8", None),
           ".pb": ("readNetFromTensorflow", "3.3", "5.1")}


def missing_reader(path: Path | str) -> str | None:
    """Why the installed OpenCV cannot read this kind of file (None: it has the reader)."""
    import cv2

    reader, since, removed = READERS.get(Path(path).suffix.lower(), READERS[".onnx"])
    if hasattr(cv2.dnn, reader):
        return None
    version = opencv_version()
    if removed is not None:
        return (f"OpenCV {version} has no cv2.dnn.{reader}: OpenCV {removed} removed its TensorFlow importer "
                f"(it existed from {since} to 5.0), so it cannot read {Path(path).name}")
    return f"OpenCV {version} has no cv2.dnn.{reader} (it arrived in OpenCV {since}): it cannot read {Path(path).name}"


@contextlib.contextmanager
def opencv_log() -> Iterator[list[str]]:
    """What OpenCV writes to stderr (file descriptor 2) meanwhile, e.g. 5.1's list of unsupported operations.

    The yielded list receives the text when the block ends.  OpenCV logs from C++, so ``sys.stderr``
    alone would not see it; the descriptor is restored whatever happens."""
    text: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (an embedded interpreter): nothing to capture
        yield text
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text.append(tmp.read().decode("utf-8", "replace"))


_UNSUPPORTED = re.compile(r"Unsupported operations?:\s*((?:\s*[\w.:/-]+\s*\n?)+)", re.I)


def unsupported_ops(text: str) -> list[str]:
    """Op types in OpenCV 5.1's "Unsupported operations:" log list (empty if it has none)."""
    found: list[str] = []
    for m in _UNSUPPORTED.finditer(text):
        for line in m.group(1).splitlines():
            word = line.strip().rstrip(",")
            if re.fullmatch(r"[A-Za-z][\w.:]*", word) and word not in found:
                found.append(word)
    return found


def _log_summary(log: str) -> str:
    """OpenCV's log lines without their "[ WARN:0@0.01] global file.cpp:793 function" prefixes, one line."""
    lines = [re.sub(r"^\[\s*\w+:[^\]]*\]\s*(global\s+\S+\s+\S+\s+)?", "", ln).strip() for ln in log.splitlines()]
    return " ".join(ln for ln in lines if ln)[:400]


def read_net(path: Path, engine: str = "auto", device: str = "cpu") -> Any:
    """A cv2.dnn.Net for an ONNX, TFLite or frozen TensorFlow graph (chosen by the file's suffix).

    Raises ``cv2.error`` when OpenCV cannot read it; an empty network (OpenCV 5.1 returns one instead of
    raising when a node cannot be imported) becomes an error that carries OpenCV's log, which names the
    unsupported operations."""
    import cv2

    from . import thread_share

    threads = thread_share()
    if threads:
        cv2.setNumThreads(threads)
    reader = READERS.get(Path(path).suffix.lower(), READERS[".onnx"])[0]
    problem = missing_reader(path)
    if problem is not None:
        raise cv2.error(problem)
    read = getattr(cv2.dnn, reader)
    flag = engine_flag(engine)
    failed: Exception | None = None
    with opencv_log() as log:
        try:
            if flag is None:
                net = read(str(path))
            elif reader == "readNetFromTensorflow":
                net = read(str(path), "", flag)
            else:
                net = read(str(path), flag)
        except cv2.error as exc:
            failed = exc
    text = "".join(log)
    if failed is not None:  # the TFLite importer names the operator (type, name, index) only in its log
        op = _TFLITE_OP.search(text)
        raise cv2.error(f"{op.group(0).strip()}\n{failed}" if op else str(failed))
    if net.empty():
        ops = unsupported_ops(text)
        raise cv2.error(f"{reader} returned an empty network"
                        + (f"; unsupported operations: {', '.join(ops)}" if ops else "")
                        + (f"; OpenCV's log: {_log_summary(text)}" if text.strip() else ""))
    if text.strip():  # a net that loads: its warnings go where they would have gone
        sys.stderr.write(text)
    set_device(net, device)
    return net


class Cv2DnnRunner:
    name = "cv2dnn"

    def __init__(self, onnx_path: Path, input_names: Sequence[str], output_names: Sequence[str], engine: str = "auto",
                 device: str = "cpu") -> None:
        self.onnx_path = Path(onnx_path)
        self.engine, self.device = engine, device
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.net = read_net(self.onnx_path, engine, device)

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The outputs, one per output name; an output cv2.dnn gives no value for is a clear error (OpenCV 5.1
        returns None for a tensor it fused into another layer, e.g. the MatMul of a Dense layer and its Add)."""
        outs = self.forward(inputs)
        names = self.output_names or ["#%d" % k for k in range(len(outs))]
        missing = [n for n, o in zip(names, outs) if o is None]
        if missing:
            raise CvdnnError(
                "cv2.dnn returned no value for the output(s) %s: OpenCV fused that tensor into another layer and "
                "cannot give it out" % ", ".join(repr(n) for n in missing),
                fix="compare the graph's real outputs (the tensor feeding them is checked through them)")
        return [o for o in outs if o is not None]

    def forward(self, inputs: Sequence[np.ndarray], partial: bool = False) -> list[np.ndarray | None]:
        """One forward; None where cv2.dnn gives no value for a requested tensor (see infer).  ``partial``: a
        tensor the classic engine does not know by name (fused into its consumer: "Requested blob not found")
        is None too, not an error (the tensors are then asked for one at a time)."""
        # (no zip(strict=...) here: this runs in a target's own Python too (runners/isolated.py), which may be
        # older than 3.10; the input names are the graph's, one per input, and forward gives one output per name)
        net = self.net
        if len(inputs) == 1:
            net.setInput(np.ascontiguousarray(inputs[0]))
        else:
            for name, x in zip(self.input_names, inputs):
                net.setInput(np.ascontiguousarray(x), name)
        # OpenCV 5's new engine wants all outputs requested at once; pick ours by name after.
        known = list(net.getUnconnectedOutLayersNames())
        wanted = self.output_names if self.onnx_path.suffix == ".onnx" else _listed(self.output_names, known)
        if set(wanted) <= set(known) and wanted:
            by_name = dict(zip(known, net.forward(known)))
            outs = [by_name[n] for n in wanted]
        elif not self.output_names or self.onnx_path.suffix != ".onnx":
            # TFLite / frozen graphs whose importer does not list every output by the artifact's name (it may
            # drop the Identity nodes, or list fewer outputs): every output it gives, in OpenCV's order (never
            # asked for by name: OpenCV 5.0's TFLite importer answers an unlisted name with another tensor)
            outs = list(net.forward(known))
        else:  # classic engine: outputs are named after layers, ask for the graph's names
            try:
                outs = list(net.forward(self.output_names))
            except Exception:  # noqa: BLE001 - cv2.error; in partial mode, the tensors it can give
                if not partial:
                    raise
                outs = [_forward_one(net, name) for name in self.output_names]
        return [None if o is None else np.array(o, copy=True) for o in outs]


def _listed(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """The names OpenCV lists for a TFLite/TensorFlow artifact's outputs: of each output's alternatives
    ("Identity|…/BiasAdd|…/MatMul", see formats.producer_chain) the first OpenCV lists; empty unless every
    output finds its own."""
    found = []
    for name in names:
        hits = [alt for alt in name.split("|") if alt in known]
        if not hits:
            return []
        found.append(hits[0])
    return found if len(set(found)) == len(found) else []


def _forward_one(net: Any, name: str) -> Any:
    """The classic engine's value of one tensor, None where it has none under that name."""
    try:
        return net.forward(name)
    except Exception:  # noqa: BLE001 - cv2.error: "Requested blob not found"
        return None


def _for_deployment(dep: Deployment, logits: bool) -> Runner:
    """The load stage's runner of the shipped graph; with ``logits`` one of the probe graph (which does not
    ship) that outputs the inputs of the final softmaxes."""
    if not logits:
        runner: Runner = dep.require("cv2net")
        return runner
    return dep.stage("cv2_logits", lambda: dep.cv2_runner(dep.probe_path, dep.logit_names))


def _key(dep: Deployment, logits: bool) -> str | None:
    """The shipped graph runs in every session; the logits probe's outputs, on the cv2 installed here, are
    cached by what the probe is made of + engine + OpenCV build and threads."""
    if not logits or not dep.target.is_local:
        return None
    return f"{dep.onnx_digest}|{','.join(dep.logit_names)}|{net_key(dep.settings.engine, dep.settings.device)}|" \
        f"{dep.opencv_build}"


def _version(dep: Deployment) -> str:
    device = "" if dep.settings.device == DEFAULT else f", device {dep.settings.device}"
    return f"cv2.dnn of OpenCV {dep.target_opencv_version()} (engine {dep.settings.engine}{device}, {dep.target_label})"


SPEC = RunnerSpec(
    "cv2dnn", factory=_for_deployment, unavailable=lambda dep: "", key=_key, version=_version,
    needs=("cv2net", "first_forward"), logits="separate", layout="graph",
)
