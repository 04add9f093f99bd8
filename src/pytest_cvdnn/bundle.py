"""Golden bundles: everything the cv2.dnn checks need, runnable where only OpenCV is installed.

``save_bundle`` writes, per model, the ONNX to ship (and its logits probe), the inputs, the
Keras and onnxruntime reference outputs, real photos with Keras' preprocessing of them, the
input spec and the OpenCV call it implies, tolerances, the environment, and a manifest with
SHA-256 checksums.  ``BundleDeployment`` replays the checks from a bundle with nothing but
pytest, numpy and OpenCV: no TensorFlow, tf2onnx, onnx or onnxruntime is imported.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .cache import Cache, sha256_bytes, sha256_file, slug
from .compare import DEFAULT_SRTOL, Tolerance
from .convert import Conversion
from .core import Deployment
from .errors import CvdnnError, StageSkipped
from .graph import GraphInfo
from .manifest import BUNDLE_FORMAT, MANIFEST_CHECKSUM, bundle_file, load_manifest, manifest_problem
from .runners import Runner, runner_spec
from .settings import ModelSettings
from .spec import InputSpec

__all__ = ["save_bundle", "BundleDeployment", "find_bundles", "BUNDLE_FORMAT"]

_REGENERATE = "regenerate it with --cvdnn-save-bundle on the machine that has TensorFlow"

def _npz(arrays: Sequence[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    entries: dict[str, Any] = {f"a{i}": a for i, a in enumerate(arrays)}  # (savez's **kwds are typed as its flags)
    np.savez(buf, **entries)
    return buf.getvalue()


def _load_npz(path: Path) -> list[np.ndarray]:
    """The arrays of a bundle's .npz (never unpickled: an object array is refused, naming the file)."""
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
            return [data[f"a{i}"] for i in range(len(data.files))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CvdnnError(f"{path} is not a bundle array file ({type(exc).__name__}: {str(exc)[:200]})",
                         fix="regenerate the bundle with --cvdnn-save-bundle on the machine that has TensorFlow") \
            from None


def bundle_folder(root: Path, model: str, path: Path | None) -> Path:
    """Where the bundle of a model goes: ``root / <the model's file or folder name>`` (a factory: its text)."""
    name = Path(os.path.realpath(path)).name if path is not None else model
    return Path(root) / (slug(name.strip(".")) or "model")


def save_bundle(dep: Deployment, root: Path) -> Path:
    """Write the bundle of ``dep`` under ``root``; never replaces another model's bundle, nor anything the
    plugin did not write (ownership.publish_folder)."""
    from .ownership import check_folder_destination, publish_folder

    folder = bundle_folder(root, dep.label, dep.source.path)
    protected = dep.settings.protected_paths()
    check_folder_destination(folder, "--cvdnn-save-bundle", protected)
    _refuse_another_model(folder, dep)
    files, references, preprocessing = _bundle_files(dep)
    manifest = _manifest(dep, files, references, preprocessing)

    def fill(staging: Path) -> None:
        for name, data in files.items():
            if isinstance(data, bytes):
                (staging / name).write_bytes(data)
            else:
                shutil.copyfile(data, staging / name)
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        (staging / "manifest.json").write_bytes(text)
        (staging / MANIFEST_CHECKSUM).write_text(sha256_bytes(text) + "\n")

    return publish_folder(folder, fill, "--cvdnn-save-bundle", protected)


def _refuse_another_model(folder: Path, dep: Deployment) -> None:
    """A bundle folder may be regenerated for the same model, never overwritten with another's."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        old = {}
    old = old if isinstance(old, dict) else {}
    if old.get("model_hash") != dep.model_hash:
        raise CvdnnError(
            f"{folder} already holds a bundle of another model ({old.get('model', '?')}, "
            f"hash {str(old.get('model_hash'))[:12]}); refusing to overwrite it",
            fix="pass another --cvdnn-save-bundle folder, or delete that bundle yourself",
        )


def _bundle_files(dep: Deployment) -> tuple[dict[str, bytes | Path], list[dict[str, Any]], dict[str, Any] | None]:
    """The files of the bundle (ONNX, probe, inputs, the references' outputs on them, the photos and Keras'
    preprocessing of them), the references' index, and the preprocessing reference's description."""
    shared: dict[tuple[int, int], str] = {}
    model_bytes, external = _shippable_onnx(dep.onnx_path, shared)
    files: dict[str, bytes | Path] = {"model.onnx": model_bytes, **external}
    references: list[dict[str, Any]] = []

    def reference(runner: str, inputs: Sequence[np.ndarray], logits: bool = False) -> None:
        outputs = dep.run(runner, inputs, logits=logits)
        name = f"ref-{runner}-{len(references)}.npz"
        files[name] = _npz(outputs)
        references.append({"runner": runner, "logits": logits, "inputs": dep.inputs_hash(inputs), "file": name})

    inputs = dep.inputs
    files["inputs.npz"] = _npz(inputs)
    runners = [r for r in dep.runners if r != "cv2dnn"]  # (what does not run where the bundle is replayed)
    for runner in runners:
        reference(runner, inputs)
        reference(runner, [x[:1] for x in inputs])
        if dep.logit_names and runner_spec(runner).logits != "none":  # (a runner without logits stores none)
            reference(runner, inputs, logits=True)
    if dep.logit_names:
        files["probe.onnx"], more = _shippable_onnx(dep.probe_path, shared)
        files.update(more)
    preprocessing = None
    if dep.preprocessing_known and len(dep.graph.inputs) == 1 and len(dep.graph.inputs[0].shape) == 4:
        photos = dep.photos()
        expected = dep.preprocessing_reference_spec()
        tensor = dep.reference_tensor(photos, expected)
        files["photos.npz"] = _npz(photos)
        files["reference_tensor.npz"] = _npz([tensor])
        files["reference_keras_resize.npz"] = _npz([dep.reference_tensor(photos, expected, "keras")])
        for runner in runners:
            reference(runner, [tensor])
        preprocessing = {"photos": dep.inputs_hash(photos), "expected_spec": expected.as_dict(),
                         "expected_note": expected.note}
    return files, references, preprocessing


def _shippable_onnx(path: Path, shared: dict[tuple[int, int], str]) -> tuple[bytes, dict[str, Path]]:
    """A graph for the bundle and, where it keeps weights in external data files, those files (named
    model.onnx.<k>.data in the bundle and copied from disk: a model over 2 GiB is never serialized whole).
    ``shared``: bundle names of data files by (device, inode) — the logits probe reuses the model's."""
    from .graph import load_model, relocate_external_data

    def name_of(source: Path) -> str:
        st = source.stat()
        return shared.setdefault((st.st_dev, st.st_ino), f"model.onnx.{len(shared)}.data")

    model = load_model(path)  # (checked: external data only inside the model's folder)
    external = relocate_external_data(path, model, name_of)
    return (model.SerializeToString() if external else Path(path).read_bytes()), external


def _manifest(dep: Deployment, files: dict[str, bytes | Path], references: list[dict[str, Any]],
              preprocessing: dict[str, Any] | None) -> dict[str, Any]:
    from .preprocess import cv2_call

    graph = dep.graph
    return {
        "format": BUNDLE_FORMAT,
        "model": dep.label,
        "model_hash": dep.model_hash,
        "has_keras": dep.has_keras,
        "keras_meta": dep.keras_meta if dep.has_keras else None,
        "graph": graph.as_dict(),
        "softmax_logits": [list(x) for x in dep.softmax_logits],
        "settings": {"atol": dep.settings.tolerance.atol, "rtol": dep.settings.tolerance.rtol,
                     "srtol": dep.settings.tolerance.srtol,
                     "opset": dep.settings.opset, "layout": dep.settings.layout, "engine": dep.settings.engine,
                     "samples": dep.settings.samples, "seed": dep.settings.seed},
        "spec": dep.spec.as_dict(),
        "input_specs": [[name, spec.as_dict()] for name, spec in dep.settings.input_specs],
        "cv2_code": cv2_call(dep.spec) if len(graph.inputs[0].shape) == 4 else None,
        "preprocessing": preprocessing,
        "references": references,
        "environment": dep.environment(),
        "files": {name: sha256_bytes(data) if isinstance(data, bytes) else sha256_file(data)
                  for name, data in files.items()},
    }


def find_bundles(path: Path) -> list[Path]:
    """Bundle folders at ``path``: the folder itself, or its sub-folders with a manifest."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if (p / "manifest.json").is_file())
    return []


def _spec(data: dict[str, Any]) -> InputSpec:
    fields = {k: v for k, v in data.items() if k in InputSpec.__dataclass_fields__}
    return InputSpec(**fields)


class ReplayRunner:
    """A reference replayed from a bundle: its outputs and logits on the inputs the bundle stored them for."""

    def __init__(self, name: str, stored: list[dict[str, Any]], file: Callable[[str], Path],
                 digest: Callable[[Sequence[np.ndarray]], str]) -> None:
        self.name, self.stored, self.file, self.digest = name, stored, file, digest
        self.output_count = 0  # (set per forward: the outputs, then the logits where the bundle has them)

    def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        wanted = self.digest(inputs)
        found = {bool(ref["logits"]): _load_npz(self.file(ref["file"])) for ref in self.stored
                 if ref["inputs"] == wanted}
        if False not in found:
            raise StageSkipped(f"the bundle has no stored {self.name} outputs for these inputs")
        self.output_count = len(found[False])
        return found[False] + found.get(True, [])


class BundleDeployment(Deployment):
    """A deployment replayed from a bundle folder: cv2.dnn runs, references are read from files."""

    can_convert = False

    @property
    def kind(self) -> str:
        return "bundle"

    def __init__(self, settings: ModelSettings, folder: Path, cache: Cache) -> None:
        self.folder = Path(folder)
        self.manifest = load_manifest(self.folder)
        stored = self.manifest["settings"]
        settings = replace(
            settings, model=str(self.folder), spec=_spec(self.manifest["spec"]),
            input_specs=tuple((str(n), _spec(d)) for n, d in self.manifest.get("input_specs", [])),
            tolerance=Tolerance(stored["atol"], stored["rtol"], stored.get("srtol", DEFAULT_SRTOL)) if settings.tolerance == Tolerance() else settings.tolerance,
            opset=stored["opset"], layout=stored["layout"], samples=stored["samples"], seed=stored["seed"],
        )
        super().__init__(settings, cache, self.folder.parent)

    # -- what the bundle replaces ----------------------------------------------------------------
    @property
    def label(self) -> str:
        return str(self.manifest["model"])

    @property
    def has_keras(self) -> bool:
        return bool(self.manifest["has_keras"])

    @property
    def model_hash(self) -> str:
        return str(self.manifest["model_hash"])

    @property
    def keras_meta(self) -> dict[str, Any]:
        if not self.has_keras:
            raise StageSkipped("the bundle holds no Keras model")
        return dict(self.manifest["keras_meta"])

    def _problem(self, name: str) -> str | None:
        """What is wrong with a listed file of the bundle ("is missing", "has changed …"), or None."""
        path, digest = bundle_file(self.folder, name), self.manifest["files"][name]
        if not path.is_file():
            return "is missing"
        found = sha256_file(path)
        return None if found == digest else f"has changed (checksum {found[:12]}, manifest {digest[:12]})"

    def verify(self) -> list[str]:
        """The manifest against its checksum file, then files whose checksum differs from the manifest (or that
        are missing)."""
        edited = manifest_problem(self.folder)
        return ([edited] if edited else []) + [f"{name} {problem}" for name in self.manifest["files"]
                                               if (problem := self._problem(name))]

    def _file(self, name: str) -> Path:
        """A file the replay reads: listed in the manifest, inside the bundle, with the listed checksum."""
        if name not in self.manifest["files"]:
            raise StageSkipped(f"the bundle has no {name}")
        problem = self._problem(name)
        if problem:
            raise CvdnnError(f"the bundle {self.folder} is corrupted or was changed: {name} {problem}", fix=_REGENERATE)
        return bundle_file(self.folder, name)

    @property
    def conversion(self) -> Conversion:
        def run() -> Conversion:
            bad = self.verify()
            if bad:
                raise CvdnnError(f"the bundle {self.folder} is corrupted or was changed: " + "; ".join(bad),
                                 fix=_REGENERATE)
            return Conversion(self._file("model.onnx"), {"bundle": str(self.folder)}, cached=True, seconds=0.0)

        return self.stage("convert", run)

    @property
    def graph(self) -> GraphInfo:
        return GraphInfo.from_dict(self.manifest["graph"])

    @property
    def softmax_logits(self) -> list[tuple[int, str]]:
        return [(int(k), str(n)) for k, n in self.manifest["softmax_logits"]]

    @property
    def probe_path(self) -> Path:
        return self._file("probe.onnx")

    @property
    def inputs(self) -> list[np.ndarray]:
        return self.stage("inputs", lambda: _load_npz(self._file("inputs.npz")))

    @property
    def expected_spec(self) -> InputSpec:
        pre = self.manifest.get("preprocessing") or {}
        if not pre:
            raise StageSkipped("the bundle has no preprocessing reference (not a single-image Keras model)")
        return replace(_spec(pre["expected_spec"]), note=pre.get("expected_note", ""))

    def expected_spec_for(self, index: int) -> InputSpec:
        return self.expected_spec

    def preprocessing_reference_spec(self, index: int | None = None) -> InputSpec:
        return self.expected_spec

    @property
    def image_inputs(self) -> list[int]:
        """The bundle stores the preprocessing reference of the first image input only."""
        return super().image_inputs[:1]

    def photos(self) -> list[np.ndarray]:
        if "photos.npz" not in self.manifest["files"]:
            raise StageSkipped("the bundle has no photos")
        return _load_npz(self._file("photos.npz"))

    def reference_tensor(self, photos: Sequence[np.ndarray], expected: InputSpec, resize: str = "opencv") -> np.ndarray:
        name = "reference_tensor.npz" if resize == "opencv" else "reference_keras_resize.npz"
        if name not in self.manifest["files"]:
            raise StageSkipped(f"the bundle has no {name} (written by an older pytest-cvdnn): regenerate it")
        return _load_npz(self._file(name))[0]

    def replay_runner(self, name: str, logits: bool) -> Runner | None:
        """The stored outputs of the references (Keras, onnxruntime); cv2.dnn runs."""
        if name == "cv2dnn":
            return None
        stored = [ref for ref in self.manifest["references"] if ref["runner"] == name]
        if not stored:
            raise StageSkipped(f"the bundle has no stored {name} outputs")
        return ReplayRunner(name, stored, self._file, self.inputs_hash)

    def variant(self, settings: ModelSettings) -> Deployment:
        raise StageSkipped("a bundle cannot be converted again (no TensorFlow here)")

    def environment(self) -> dict[str, Any]:
        from importlib import metadata

        env = {"bundle": str(self.folder), "bundle_environment": self.manifest.get("environment", {})}
        for dist in ("opencv-python-headless", "opencv-python", "numpy"):
            try:
                env[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        env.update(opencv=env.get("opencv-python-headless") or env.get("opencv-python", "?"),
                   engine=self.settings.engine, opset=self.settings.opset, layout=self.settings.layout,
                   target=self.target_label, runners=self.runner_versions())
        return env

    def replay_version(self, name: str) -> str:
        if name == "cv2dnn":
            return ""
        env = self.manifest.get("environment")
        runners = env.get("runners") if isinstance(env, dict) else None
        stored = runners.get(name) if isinstance(runners, dict) else None
        return f"replayed from the bundle ({stored if isinstance(stored, str) else 'stored outputs'})"
