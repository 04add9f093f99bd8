"""Fuzz: seeded hostile ONNX files and bundle manifests through the plugin (issue 16).

Each mutant must end in a clear verdict: a failed item whose message says what is wrong and how to fix it
(never an error the plugin "does not recognise", never a bare traceback), or a pass where the mutant is still
a valid model.  The session survives all of them, no file outside the models' folder is opened (an audit hook
watches a sentinel folder), and the input files are left byte-identical.  Counts go to the README's
reliability table; ``CVDNN_FUZZ_BYTES`` raises the number of byte mutants for a longer run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from onnx_mutants import base_model, byte_mutants, external, structural_mutants, write_mutants  # noqa: E402

BYTE_MUTANTS = int(os.environ.get("CVDNN_FUZZ_BYTES", "120"))

#: installed in the fuzzed session: records every open() of a path under the sentinel folder
_AUDIT = '''
import os, sys
_WATCH = os.environ["CVDNN_FUZZ_OUTSIDE"]
_SEEN = []

def _hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path.startswith(_WATCH):
            _SEEN.append(path)

sys.addaudithook(_hook)

def pytest_unconfigure(config):
    with open(os.environ["CVDNN_FUZZ_OPENED"], "w") as fh:
        fh.write("\\n".join(_SEEN))
'''


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _outside_refs(outside: Path) -> dict[str, bytes]:
    """Mutants whose external data lies outside their folder: a relative path up, and an absolute one."""
    import numpy as np

    (outside / "weights.bin").write_bytes(np.ones(20, np.float32).tobytes())
    out = {}
    for name, location in (("external_up", "../outside/weights.bin"), ("external_absolute", str(outside / "weights.bin"))):
        model = base_model()
        external(model, 0, location)
        out[name] = model.SerializeToString()
    return out


#: what the failure of some mutants must name
_NAMED = {
    "conv_kernel_huge": ("node 'conv'", "kernel_shape=[1000000, 1000000]", "(4, 3, 3, 3)"),
    "conv_pads_huge": ("node 'conv'", "pads=[1000000", "GiB", "memory budget"),
    "conv_dilations_huge": ("node 'conv'", "dilations=[1000000", "negative size"),
    "tile_huge": ("node 'tile'", "reps=[1, 1, 100000, 100000]", "GiB"),
    "reshape_huge": ("node 'reshape'", "shape=[1, 1000000000000]"),
    "weights_wrong_channels": ("node 'conv'", "reads 3 channels", "expect 7"),
    "input_dims_negative": ("input 'x'", "size -7 at axis 0"),
    "input_batch_zero": ("input 'x'", "size 0 at axis 0"),
    "input_dtype_undefined": ("input 'x'", "elem_type 0"),
    "external_offset_huge": ("tensor 'fc_w'", "offset 4611686018427387904", "80 bytes"),
    "external_up": ("outside its folder", "fc_w"),
    "node_name_not_utf8": ("node #1 (Relu)", "not valid UTF-8"),
    "missing_initializer": ("node 'fc'", "nowhere"),
}


def _verdicts(report: dict[str, Any], messages: dict[str, str] | None = None) -> dict[str, str]:
    """Per model: "clear failure", "benign pass" or what else happened (a message that explains nothing);
    ``messages`` receives each model's first failure message."""
    found = {}
    for model in report["models"]:
        checks = model["checks"]
        failed = {k: v.get("message") or "" for k, v in checks.items() if v["outcome"] == "failed"}
        unclear = [k for k, msg in failed.items()
                   if "does not recognise" in msg or "Fix:" not in msg or msg.lstrip().startswith("Traceback")]
        if messages is not None and failed:
            messages[Path(model["model"]).name] = next(iter(failed.values()))
        if unclear:
            found[Path(model["model"]).name] = f"unclear {unclear[0]}: {failed[unclear[0]][:300]}"
        else:
            found[Path(model["model"]).name] = "clear failure" if failed else "benign pass"
    return found


def test_onnx_mutants_end_in_clear_verdicts(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Structural mutants (every class issue 16 names, and more) and seeded byte mutants, in one session."""
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = pytester.path / "models"
    mutants = {**structural_mutants(), **_outside_refs(outside), **byte_mutants(BYTE_MUTANTS, seed=0)}
    paths = write_mutants(folder, {"control": base_model().SerializeToString(), **mutants})
    (pytester.path / "outside").symlink_to(outside)  # (what "../outside/weights.bin" reaches from models/)
    before = _digests(folder)
    pytester.makeconftest(_AUDIT)
    opened = tmp_path / "opened.txt"
    pytester._monkeypatch.setenv("CVDNN_FUZZ_OUTSIDE", str(outside))
    pytester._monkeypatch.setenv("CVDNN_FUZZ_OPENED", str(opened))
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-q", f"--cvdnn-cache-dir={tmp_path / 'cache'}", f"--cvdnn-report={report}",
        *(f"--cvdnn-model={p.relative_to(pytester.path)}" for p in paths), timeout=600)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == 1 and "INTERNALERROR" not in text, text[-3000:]
    assert opened.is_file() and opened.read_text() == "", f"files outside the models' folder were opened: {opened.read_text()}"
    assert _digests(folder) == before, "an input file was changed"
    messages: dict[str, str] = {}
    verdicts = _verdicts(json.loads(report.read_text()), messages)
    assert len(verdicts) == len(paths), sorted(set(p.name for p in paths) - set(verdicts))
    assert verdicts.pop("control.onnx") == "benign pass"
    other = {k: v for k, v in verdicts.items() if v not in ("clear failure", "benign pass")}
    assert not other, other
    for name in (*structural_mutants(), "external_up", "external_absolute"):  # each is wrong: none may pass
        assert verdicts[f"{name}.onnx"] == "clear failure", name
    for name, words in _NAMED.items():  # the node, attribute or input at fault, and what is wrong with it
        assert all(w in messages[f"{name}.onnx"] for w in words), (name, messages[f"{name}.onnx"])
    counts = {v: list(verdicts.values()).count(v) for v in ("clear failure", "benign pass")}
    print(f"ONNX mutants: {len(verdicts)} tried, {counts['clear failure']} clear failures, "
          f"{counts['benign pass']} benign passes, {len(other)} other")


def _manifest_mutants(manifest: dict[str, Any], rng: random.Random) -> list[tuple[str, Any]]:
    """(description, manifest or raw text) mutants: each field removed or given a wrong value, file names made
    paths that leave the bundle, and byte flips of the JSON."""
    out: list[tuple[str, Any]] = []

    def walk(node: Any, trail: tuple[Any, ...]) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            here = (*trail, key)
            for wrong in (None, "abc", -1, 1e308, [], {}, True):
                if type(wrong) is not type(value):
                    out.append((f"{'/'.join(map(str, here))}={wrong!r}", _edited(manifest, here, wrong)))
                    break
            if isinstance(node, dict):
                out.append((f"{'/'.join(map(str, here))} removed", _edited(manifest, here, _REMOVE)))
            if isinstance(value, str) and value.endswith((".npz", ".onnx")):
                for bad in ("../outside/secret.npz", "/etc/passwd", "sub/../../outside/secret.npz"):
                    out.append((f"{'/'.join(map(str, here))}={bad}", _edited(manifest, here, bad)))
            walk(value, here)

    walk(manifest, ())
    for name in list(manifest.get("files", {})):
        for bad in ("../outside/secret.npz", "/etc/passwd"):
            files = {bad if k == name else k: v for k, v in manifest["files"].items()}
            out.append((f"files key {name}->{bad}", {**manifest, "files": files}))
    raw = json.dumps(manifest).encode()
    for k in range(40):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        out.append((f"bytes {k}", bytes(data)))
    return out


_REMOVE = object()


def _edited(manifest: dict[str, Any], trail: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(manifest))
    node = copy
    for key in trail[:-1]:
        node = node[key]
    if value is _REMOVE:
        del node[trail[-1]]
    else:
        node[trail[-1]] = value
    return copy


def test_bundle_manifest_mutants_end_in_clear_errors(run_cvdnn: Any, pytester: pytest.Pytester, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle of a small ONNX model, its manifest mutated field by field and byte by byte: each mutant is
    refused with a message naming the bundle (or replayed, when the edit changes nothing that matters); no file
    outside the bundle is opened, whatever the manifest names."""
    from pytest_cvdnn.bundle import BundleDeployment
    from pytest_cvdnn.checks import checks_of
    from pytest_cvdnn.cache import Cache
    from pytest_cvdnn.checks import run_check
    from pytest_cvdnn.errors import CvdnnError, StageSkipped
    from pytest_cvdnn.settings import ModelSettings

    import onnx

    onnx.save(base_model(), str(pytester.path / "small.onnx"))
    run = run_cvdnn("--cvdnn-model=small.onnx", "--cvdnn-save-bundle=bundles")
    assert run.ret == 0, run.text
    original = pytester.path / "bundles" / "small.onnx"
    manifest = json.loads((original / "manifest.json").read_text())
    outside = pytester.path / "outside"
    outside.mkdir()
    shutil.copyfile(original / "inputs.npz", outside / "secret.npz")
    opened: list[str] = []
    watch, active = str(outside.resolve()), [True]  # (an audit hook cannot be removed: it is switched off)

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if active[0] and event == "open" and args and isinstance(args[0], (str, os.PathLike)) \
                and os.path.realpath(args[0]).startswith(watch):
            opened.append(str(args[0]))

    sys.addaudithook(audit)
    counts = {"refused": 0, "replayed": 0}
    unclear = []
    cache = Cache(tmp_path / "cache")
    mutants = _manifest_mutants(manifest, random.Random(0))
    for k, (what, content) in enumerate(mutants):
        folder = tmp_path / f"m{k}" / "small"
        shutil.copytree(original, folder)
        (folder.parent / "outside").symlink_to(outside)  # what "../outside/secret.npz" would reach
        (folder / "manifest.json").write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        try:
            dep = BundleDeployment(ModelSettings(model=str(folder), bundle=str(folder)), folder, cache)
        except CvdnnError as exc:  # the manifest is refused before anything else is read
            counts["refused"] += 1
            if str(folder) not in str(exc) or "Fix:" not in str(exc):
                unclear.append((what, str(exc)[:200]))
            continue
        except Exception as exc:  # noqa: BLE001 - what the test is looking for
            unclear.append((what, f"{type(exc).__name__}: {exc}"[:300]))
            continue
        counts["replayed"] += 1
        for check in (c.name for c in checks_of("bundle")):  # a replay: each check passes, is skipped or fails with a clear message
            try:
                run_check(dep, check)
            except StageSkipped:
                pass
            except CvdnnError as exc:
                if "Fix:" not in str(exc) or "does not recognise" in str(exc):
                    unclear.append((f"{what} [{check}]", str(exc)[:300]))
            except Exception as exc:  # noqa: BLE001
                unclear.append((f"{what} [{check}]", f"{type(exc).__name__}: {exc}"[:300]))
    active[0] = False
    assert not opened, f"files outside the bundle were opened: {opened[:5]}"
    assert not unclear, unclear[:10]
    assert counts["refused"] > len(mutants) // 2, counts
    print(f"bundle manifest mutants: {len(mutants)} tried, {counts['refused']} refused with a clear error, "
          f"{counts['replayed']} replayed, {len(unclear)} other")


OP_MUTANTS = int(os.environ.get("CVDNN_FUZZ_OPS", "100"))


def test_operator_level_mutants_end_in_clear_verdicts(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The second family: seeded edits of the nodes (op types, attributes, inputs, outputs, node order,
    initializers, casts), each one to three per mutant, in one session: a clear failure or a benign pass each,
    the session ends with its summary, the files are left as they were."""
    from op_mutants import op_mutants

    mutants = op_mutants(OP_MUTANTS, seed=0)
    folder = pytester.path / "models"
    paths = write_mutants(folder, {"control": base_model().SerializeToString(),
                                   **{name: data for name, (data, _) in mutants.items()}})
    before = _digests(folder)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-q", f"--cvdnn-cache-dir={tmp_path / 'cache'}", f"--cvdnn-report={report}",
        "--cvdnn-timeout=60", *(f"--cvdnn-model={p.relative_to(pytester.path)}" for p in paths), timeout=900)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret in (0, 1) and "INTERNALERROR" not in text, text[-3000:]
    assert "cvdnn deployment summary" in text
    assert _digests(folder) == before, "an input file was changed"
    verdicts = _verdicts(json.loads(report.read_text()))
    assert len(verdicts) == len(paths)
    assert verdicts.pop("control.onnx") == "benign pass"
    other = {k: (v, mutants[k[:-5]][1]) for k, v in verdicts.items() if v not in ("clear failure", "benign pass")}
    assert not other, other
    counts = {v: list(verdicts.values()).count(v) for v in ("clear failure", "benign pass")}
    assert counts["clear failure"] > len(verdicts) // 2  # (most edits break the graph: the family is not benign)
    print(f"operator mutants: {len(verdicts)} tried, {counts['clear failure']} clear failures, "
          f"{counts['benign pass']} benign passes, 0 other")
