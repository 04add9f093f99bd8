"""A bundle's manifest read as untrusted input: a bundle travels to devices and CI machines.

:func:`load_manifest` checks the manifest's structure field by field and every file name in it, so that
a malformed manifest is one clear error naming the bundle and the field, and no path in it can point
outside the bundle folder (no absolute path, no ``..``, no separator, no symbolic link): nothing outside
the bundle is ever opened, hashed or named.  Every file the replay reads must be listed (with its
checksum) in ``files``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, NoReturn, TypeGuard, TypeVar

from .errors import CvdnnError

__all__ = ["load_manifest", "bundle_file", "manifest_problem", "BUNDLE_FORMAT", "MANIFEST_CHECKSUM"]

BUNDLE_FORMAT = 1

_FIX = ("regenerate the bundle with --cvdnn-save-bundle=DIR on the machine that has the Keras model and TensorFlow "
        "(a bundle is written whole by pytest-cvdnn, never edited by hand)")
_TOP = {"format": int, "model": str, "model_hash": str, "has_keras": bool, "graph": dict, "settings": dict,
        "spec": dict, "files": dict, "references": list, "softmax_logits": list}
_NUMBERS = {"atol": (0.0, math.inf), "rtol": (0.0, math.inf), "srtol": (0.0, math.inf)}
_INTEGERS = {"opset": (1, 100), "samples": (1, 10_000), "seed": (-(2**63), 2**63 - 1)}
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: a reference runner's name (built-in or registered by a package; cv2.dnn runs where the bundle is replayed)
_RUNNER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


#: the checksum of manifest.json, written beside it: a manifest edited by hand fails the bundle's verify item
MANIFEST_CHECKSUM = "manifest.sha256"


def manifest_problem(folder: Path) -> str | None:
    """What is wrong with manifest.json against its checksum file, or None."""
    import hashlib

    check = Path(folder) / MANIFEST_CHECKSUM
    if check.is_symlink() or not check.is_file():
        return f"manifest.json cannot be verified: {MANIFEST_CHECKSUM} is missing"
    found = hashlib.sha256((Path(folder) / "manifest.json").read_bytes()).hexdigest()
    stored = check.read_text(errors="replace").strip()
    return None if found == stored else (f"manifest.json has changed since the bundle was written (checksum "
                                         f"{found[:12]}, {MANIFEST_CHECKSUM} {stored[:12]})")


def _bad(folder: Path, field: str, what: str) -> NoReturn:
    raise CvdnnError(f"the bundle {folder} has an invalid manifest.json: {field} {what}", fix=_FIX)


_T = TypeVar("_T")


def _is(value: Any, kind: type[_T]) -> TypeGuard[_T]:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _number(value: Any) -> TypeGuard[float]:
    return (_is(value, int) or _is(value, float)) and math.isfinite(value)


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name \
        and not name.startswith("~")


def bundle_file(folder: Path, name: Any) -> Path:
    """``folder / name`` for a plain file name of the bundle; raises if the name (or what it resolves to)
    leaves the folder — it is never opened then."""
    if not (isinstance(name, str) and _plain_name(name)):
        _bad(folder, f"the file name {name!r}", "is not a plain file name inside the bundle (a path, '..' or empty)")
    path = folder / name
    if path.is_symlink() or (path.exists() and not path.resolve().is_relative_to(folder.resolve())):
        _bad(folder, f"the file {name!r}", "is a symbolic link (or resolves outside the bundle); a bundle holds "
             "regular files only")
    return path


def load_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the bundle in ``folder``, checked (a CvdnnError naming the field otherwise)."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if path.is_symlink():
        _bad(folder, "manifest.json", "is a symbolic link")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        _bad(folder, "the file", f"cannot be read as JSON ({type(exc).__name__}: {str(exc)[:200]})")
    if not isinstance(data, dict):
        _bad(folder, "the top level", f"is a JSON {type(data).__name__}, not an object")
    for key, kind in _TOP.items():
        if key not in data:
            _bad(folder, repr(key), "is missing")
        if not _is(data[key], kind):
            _bad(folder, repr(key), f"is {type(data[key]).__name__}, not {kind.__name__}")
    if data["format"] != BUNDLE_FORMAT:
        _bad(folder, "'format'", f"is {data['format']}; this pytest-cvdnn reads bundles of format {BUNDLE_FORMAT}")
    _check_settings(folder, data["settings"])
    _check_spec(folder, "'spec'", data["spec"])
    if not _is(data.setdefault("input_specs", []), list):
        _bad(folder, "'input_specs'", f"is {type(data['input_specs']).__name__}, not a list of [name, spec] pairs")
    for k, pair in enumerate(data["input_specs"]):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], dict)):
            _bad(folder, f"'input_specs'[{k}]", "is not a [name, spec] pair")
        _check_spec(folder, f"'input_specs'[{k}]", pair[1])
    _check_graph(folder, data)
    _check_files(folder, data)
    if data["has_keras"] and not isinstance(data.get("keras_meta"), dict):
        _bad(folder, "'keras_meta'", "is missing for a bundle with a Keras model")
    pre = data.get("preprocessing")
    if pre is not None and not (isinstance(pre, dict) and isinstance(pre.get("expected_spec"), dict)):
        _bad(folder, "'preprocessing'", "is neither null nor an object with an 'expected_spec'")
    if pre is not None:
        _check_spec(folder, "'preprocessing.expected_spec'", pre["expected_spec"])
    return data


def _check_settings(folder: Path, settings: dict[str, Any]) -> None:
    from .compare import tolerance_problem

    for key, (low, high) in _NUMBERS.items():
        if key == "srtol" and key not in settings:  # (bundles written before srtol existed)
            continue
        value = settings.get(key)
        if not _number(value) or not low <= value <= high:
            _bad(folder, f"'settings.{key}'", f"is {value!r}, not a number >= {low:g}")
        problem = tolerance_problem(key, value)
        if problem:  # (an edited tolerance that no parity item could fail on)
            _bad(folder, f"'settings.{key}'", f"is refused: {problem}")
    for key, (low, high) in _INTEGERS.items():
        value = settings.get(key)
        if not _is(value, int) or not low <= value <= high:
            _bad(folder, f"'settings.{key}'", f"is {value!r}, not an integer in [{low}, {high}]")
    if settings.get("layout") not in ("nchw", "nhwc"):
        _bad(folder, "'settings.layout'", f"is {settings.get('layout')!r}, not 'nchw' or 'nhwc'")


def _check_spec(folder: Path, field: str, data: dict[str, Any]) -> None:
    from .spec import InputSpec

    fields = {k: v for k, v in data.items() if k in InputSpec.__dataclass_fields__}
    try:
        InputSpec(**fields)
    except (TypeError, ValueError) as exc:  # SpecError is a ValueError
        _bad(folder, field, f"is not a valid input spec ({exc})")


def _check_graph(folder: Path, data: dict[str, Any]) -> None:
    from .graph import GraphInfo

    try:
        graph = GraphInfo.from_dict(data["graph"])
        if not graph.inputs or not graph.outputs:
            raise ValueError("no inputs or no outputs")
        for tensor in graph.inputs + graph.outputs:
            if not isinstance(tensor.name, str) or not all(d is None or _is(d, int) for d in tensor.shape):
                raise ValueError(f"tensor {tensor.name!r} has shape {tensor.shape!r}")
        softmax = [(k, n) for k, n in data["softmax_logits"]]
        if not all(_is(k, int) and isinstance(n, str) and n for k, n in softmax):
            raise ValueError("softmax_logits holds an entry that is not an [output index, tensor name] pair")
    except (KeyError, TypeError, ValueError) as exc:
        _bad(folder, "'graph'", f"does not describe the model's inputs and outputs ({type(exc).__name__}: {exc})")
    if any(not 0 <= k < len(graph.outputs) for k, _ in softmax):
        _bad(folder, "'softmax_logits'", "names an output the graph does not have")


def _check_files(folder: Path, data: dict[str, Any]) -> None:
    files = data["files"]
    for name, digest in files.items():
        bundle_file(folder, name)
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            _bad(folder, f"the checksum of {name!r}", "is not a SHA-256 digest")
    for required in ("model.onnx", "inputs.npz"):
        if required not in files:
            _bad(folder, "'files'", f"does not list {required}")
    for k, ref in enumerate(data["references"]):
        runner = ref.get("runner") if isinstance(ref, dict) else None
        if not (isinstance(runner, str) and _RUNNER_NAME.fullmatch(runner) and runner != "cv2dnn"
                and isinstance(ref.get("logits"), bool)
                and isinstance(ref.get("inputs"), str) and isinstance(ref.get("file"), str)):
            _bad(folder, f"'references'[{k}]", "is not a {runner, logits, inputs, file} object of a reference runner")
        if ref["file"] not in files:  # every file the replay reads is covered by a checksum
            _bad(folder, f"'references'[{k}].file {ref['file']!r}", "is not listed (with its checksum) in 'files'")
