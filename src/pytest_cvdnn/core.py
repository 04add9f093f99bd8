"""One model prepared for deployment: source → ONNX → runners, every stage memoised.

A :class:`Deployment` is what the ``cvdnn_model`` fixture returns and what the
generated check items share.  Stages run lazily, once per process; a failed stage is
remembered so that the items depending on it are skipped with its reason.  Heavy
work is cached on disk by content hash, so a warm run neither converts nor imports
TensorFlow (the Keras reference outputs are cached too).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar, cast

import numpy as np

from .cache import Cache, sha256_bytes
from .compare import ParityResult
from .convert import Conversion, ConversionOptions, cached_convert, conversion_key, tool_versions
from .errors import CvdnnError, StageSkipped, unrecognised
from .graph import GraphInfo, guess_layout, validate_onnx
from .helper import by_helper
from .inputs import (check_input_sizes, fill_spatial, load_inputs, load_named_inputs, named_entries, random_inputs,
                     to_layout)
from .runners import Runner, RunnerSpec, runner_names, runner_spec
from .runners.cached import CachedRunner, inputs_digest, stacked
from .settings import ModelSettings
from .sources import ModelSource, parse_source
from .spec import InputSpec, SpecError

__all__ = ["Deployment", "Assembly"]

GRAPH_SUMMARY_VERSION = 4
#: what keras_metadata records (a cached record of another version is made again)
KERAS_META_VERSION = 3
_STAGE_LABELS = {"cv2net": "load", "first_forward": "cv2.dnn's forward of sample 0", "conversion": "convert", "ort": "onnxruntime session", "keras_model": "Keras load"}

T = TypeVar("T")


class Assembly(Protocol):
    """What a deployment asks of the layers above it (deployment.py gives it to every deployment it builds):
    another deployment of the same model, and a check run on this one."""

    def build(self, settings: ModelSettings, cache: Cache, rootdir: Path | None,
              memo: dict[Any, Any] | None) -> Deployment: ...

    def run_check(self, dep: Deployment, name: str) -> tuple[Any, float]: ...


class Deployment:
    """A Keras (or ONNX) model on its way to cv2.dnn."""

    can_convert = True  # False for a bundle replayed without TensorFlow
    reorder_outputs = False  # True where the importer, not the artifact, decides the order of the outputs
    assembly: Assembly | None = None  # set by deployment.build_deployment

    def __init__(self, settings: ModelSettings, cache: Cache, rootdir: Path | None = None,
                 memo: dict[Any, Any] | None = None) -> None:
        self.settings: ModelSettings = settings
        self.memo = memo if memo is not None else {}  # shared with other deployments of the same source
        self.cache = cache
        self.rootdir = rootdir
        self._stages: dict[str, tuple[bool, Any]] = {}
        self.timings: dict[str, float] = {}
        self.events: list[str] = []  # e.g. "converted", "keras-loaded" (tests and benchmarks read it)
        self._outputs: dict[tuple[str, str, str], list[np.ndarray]] = {}  # runner results by identity + inputs
        self._runners: dict[tuple[str, bool], CachedRunner] = {}
        self._prepared: bool | None = None  # (prepare(): queued with the TensorFlow helper, once)
        self.upcoming: set[str] = set()  # checks this session will run (the plugin sets it): work can start early
        self.exhibits: dict[str, Any] = {}  # the arrays a check compared, by check (figures.py draws them)

    # -- stage machinery ----------------------------------------------------------------
    def stage(self, name: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` once; remember its result or its error."""
        if name not in self._stages:
            start = time.perf_counter()
            try:
                self._stages[name] = (True, fn())
            except (CvdnnError, StageSkipped) as exc:
                self._stages[name] = (False, exc)
            except Exception as exc:  # noqa: BLE001 - turned into a message naming the file and the stage
                self._stages[name] = (False, unrecognised(
                    f"{self.settings.model}: the {_STAGE_LABELS.get(name, name)} stage", exc))
            self.timings[name] = time.perf_counter() - start
        ok, value = self._stages[name]
        if not ok:
            raise value
        return cast(T, value)  # (what fn() returned, the first time)

    def require(self, name: str) -> Any:
        """The value of a prerequisite stage, or StageSkipped naming why it is unavailable."""
        try:
            return getattr(self, name)
        except StageSkipped:
            raise
        except CvdnnError as exc:
            raise StageSkipped(f"{_STAGE_LABELS.get(name, name)} failed: {exc}") from exc

    # -- source ---------------------------------------------------------------------------
    @cached_property
    def source(self) -> ModelSource:
        return parse_source(self.settings.model, self.rootdir)

    @property
    def label(self) -> str:
        return self.settings.model

    @property
    def kind(self) -> str:
        """What is checked: "keras" (a Keras model converted to ONNX), "onnx" (an ONNX file given as the model),
        "export" (the Keras model exported as TFLite or a frozen graph), "tflite" (a .tflite file), "bundle"."""
        return "keras" if self.has_keras else "onnx"

    @property
    def format_name(self) -> str:
        """The artifact cv2.dnn reads, in words."""
        return "ONNX"

    @property
    def has_keras(self) -> bool:
        return self.source.has_keras

    @cached_property
    def model_hash(self) -> str:
        """The source's content hash (and the declared input shapes, which change the model that is built)."""
        if self.settings.input_shape:
            return sha256_bytes(f"{self.source.content_hash()}\0{self.settings.input_shape!r}".encode())
        return self.source.content_hash()

    @property
    def keras_layer_names(self) -> list[str]:
        """Names of the Keras model's layers (to map ONNX nodes back); empty for an ONNX source."""
        return [x["name"] for x in self.keras_meta["layers"]] if self.has_keras else []

    @property
    def keras_model(self) -> Any:
        """The Keras model (loads TensorFlow)."""
        if not self.has_keras:
            raise StageSkipped(f"{self.label} is an ONNX model: there is no Keras model")

        def load() -> Any:
            key = f"keras:{self.settings.model}:{self.settings.input_shape}"
            if key not in self.memo:
                self.memo[key] = self.source.load_keras(self.settings.input_shape)
                self.events.append("keras-loaded")
            return self.memo[key]

        return self.stage("keras_model", load)

    @property
    def keras_meta(self) -> dict[str, Any]:
        """Input/output shapes, names and layers of the Keras model (cached: no TensorFlow on warm runs)."""

        def meta() -> dict[str, Any]:
            from .runners.keras import keras_metadata

            return self._model_json("keras", lambda: {**keras_metadata(self.keras_model),
                                                      "meta_version": KERAS_META_VERSION})

        return self.stage("keras_meta", lambda: self._remembering_failure(self.meta_failure_key, meta))

    @property
    def meta_failure_key(self) -> str:
        """Where a failure to load the model is remembered: its bytes, the file (the message names it: the same
        bytes elsewhere, two empty files, must not share it) and the tools."""
        versions = tool_versions()
        return sha256_bytes(f"keras|{self.model_hash}|{self.source.kind}|{self.source.path or self.source.text}|"
                            f"{versions['tensorflow']}|{versions['keras']}|{KERAS_META_VERSION}".encode())[:40]

    def _model_json(self, folder: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """What ``make()`` says about the model file, cached in ``folder`` by its content hash (a warm run
        neither loads the model nor imports TensorFlow); the file's structure is checked first."""
        self.source.check_readable()
        key = f"{self.model_hash[:40]}.json"
        cached = self._from_cache(lambda: self.cache.get_json(folder, key), folder, key, "converted")
        if cached is not None and (folder != "keras" or cached.get("meta_version") == KERAS_META_VERSION):
            return cached
        data = make()
        self.cache.put_json(data, folder, key)
        return data

    def _remembering_failure(self, key: str, fn: Callable[[], T]) -> T:
        """``fn()``; a CvdnnError it raises is kept in the cache under ``key`` (which names the file's content
        and the tools) and raised again by later runs without running ``fn``: a warm run of a model that cannot
        be loaded or converted is as fast as a warm pass, and a changed file (or tool) is tried again."""
        name = f"{key}.json"
        found = self.cache.get_json("failed", name)
        if found is not None and isinstance(found.get("message"), str):
            # the same words as the first time (the TensorFlow helper's failure, remembered, is the verdict of this
            # very session); where it comes from is in the details
            note = ("remembered from an earlier attempt on the same file and tools (this session's TensorFlow helper, "
                    "or an earlier run; no TensorFlow was needed here to report it); --cache-clear or a changed file "
                    "tries again")
            raise CvdnnError(found["message"], fix=found.get("fix"), node=found.get("node"),
                             details=note + (f"\n\n{found['details']}" if found.get("details") else ""))
        try:
            return fn()
        except CvdnnError as exc:
            self.cache.put_json({"message": exc.message, "fix": exc.fix, "details": exc.details, "node": exc.node},
                                "failed", name)
            raise

    # -- conversion -------------------------------------------------------------------------
    @property
    def image_inputs(self) -> list[int]:
        """Indices of the image inputs (4-D with 1, 3 or 4 channels), in the Keras order."""
        return [n for n, shape in enumerate(self._raw_input_shapes()) if len(shape) == 4 and shape[3] in (1, 3, 4)]

    @property
    def _first_image(self) -> int:
        return (self.image_inputs or [0])[0]

    @property
    def expected_spec(self) -> InputSpec:
        """What the model expects: detected from the Keras model (see InputSpec.from_model), in the ONNX layout."""
        return self.expected_spec_for(self._first_image)

    def expected_spec_for(self, index: int) -> InputSpec:
        """The spec detected for input ``index`` (one detection per model), in that input's layout."""
        layout = self.onnx_layouts[index] if len(self.graph.inputs[index].shape) == 4 else self.settings.layout
        if self.has_keras:
            return self._detected_spec(layout, index)
        return self._sized(InputSpec(layout=layout, note=f"a {'TFLite' if self.source.kind == 'tflite' else 'ONNX'} "
                                     "model: its preprocessing is unknown, raw 0..255 assumed"), index)

    def _detected_spec(self, layout: str, index: int = 0) -> InputSpec:
        """The spec of the preprocessing detected from the Keras model (cached in its metadata)."""
        found = self.keras_meta.get("preprocessing") or {"mode": "none", "note": ""}
        return self._sized(InputSpec.from_keras_mode(found["mode"], note=found["note"], layout=layout), index)

    @property
    def declared(self) -> bool:
        return self.settings.spec is not None or bool(self.settings.input_specs)

    def declared_for(self, index: int) -> bool:
        return self.settings.spec is not None or self._named_spec(index) is not None

    @property
    def spec(self) -> InputSpec:
        """The deployment's input spec (of the first image input): the declared one, else the detected one."""
        return self.spec_for(self._first_image)

    def _named_spec(self, index: int) -> InputSpec | None:
        """The spec given for input ``index`` by name (its Keras or its graph name); an unknown name is an error."""
        if not self.settings.input_specs:
            return None
        names = self._input_names()
        unknown = [n for n, _ in self.settings.input_specs if n not in names]
        if unknown:
            raise CvdnnError(f"the input spec names {', '.join(map(repr, unknown))} but {self.label} has the inputs "
                             f"{', '.join(map(repr, names))}", fix="write NAME:SPEC with the model's input names")
        return dict(self.settings.input_specs).get(names[index])

    def spec_for(self, index: int) -> InputSpec:
        """The spec of input ``index``: named for it, else the default declared one, else the detected one."""
        named = self._named_spec(index)
        if named is not None:
            return self._sized(named, index)
        if self.settings.spec is not None:
            return self._sized(self.settings.spec, index)
        if self.has_keras:
            return self._detected_spec(self.settings.layout, index)
        return self._sized(self.settings.effective_spec, index)

    def _sized(self, spec: InputSpec, index: int = 0) -> InputSpec:
        """The spec with the size and channel count of model input ``index`` where it leaves them open."""
        shape = self._raw_input_shapes()[index]
        if spec.size is None and len(shape) == 4 and shape[1] and shape[2]:
            spec = spec.with_size(shape[2], shape[1])
        if spec.channels is None and len(shape) == 4 and shape[3] in (1, 4):
            try:
                spec = spec.with_channels(int(shape[3]))
            except SpecError as exc:
                raise CvdnnError(f"the input spec does not fit input {index} of {self.label}, which takes "
                                 f"{shape[3]} channel(s): {exc}",
                                 fix="declare the spec of this input with channels=" + str(shape[3])
                                 + " and one mean/scale value per channel") from None
        return spec

    @property
    def input_spec(self) -> InputSpec:
        """Alias of :attr:`spec` (the name the fixtures use)."""
        return self.spec

    @property
    def conversion(self) -> Conversion:
        def run() -> Conversion:
            if self.source.is_onnx or self.settings.onnx:
                path = self.source.path if self.source.is_onnx else self._user_onnx()
                assert path is not None
                self.source.check_readable()
                model = self._check_sizes(path)  # (reads the graph: a clear error if the file is not ONNX)
                validate_onnx(path, self.keras_layer_names, provided=True, model=model)
                return Conversion(path, {"provided": str(path)}, cached=False, seconds=0.0)
            opts = self.conversion_options()
            meta = self.keras_meta
            elsewhere = self._tf_elsewhere("converted", self.onnx_entry(opts).is_file)

            def load() -> tuple[Any, dict[str, Any]]:
                return self.keras_model, meta

            conv = by_helper(cached_convert(self.cache, self.model_hash, opts, load), elsewhere)
            self.events.append("cache-hit" if conv.cached else "converted")
            return conv

        if self.source.is_onnx or self.settings.onnx:
            return self.stage("convert", run)
        def remembered() -> Conversion:
            where = f"{self.source.kind}|{self.source.path or self.source.text}"  # the message names the file
            key = conversion_key(sha256_bytes(f"{self.model_hash}|{where}".encode()), self.conversion_options(),
                                 artifact="onnx-failure")
            return self._remembering_failure(key, run)

        return self.stage("convert", remembered)

    def _check_sizes(self, path: Path) -> Any:
        """The ONNX file's ModelProto, refused if one of its tensors alone would not fit the memory budget at the
        check batch."""
        from .graph import load_model
        from .budget import memory_budget_bytes
        from .sanity import check_tensor_sizes

        model = load_model(path)
        check_tensor_sizes(path, model, self.settings.samples, memory_budget_bytes(self.settings.memory_budget))
        return model

    def conversion_options(self) -> ConversionOptions:
        return ConversionOptions(self.settings.opset, self.settings.layout, self.spec.size)

    def onnx_entry(self, opts: ConversionOptions) -> Path:
        """Where the cache keeps this model's conversion with ``opts``."""
        return self.cache.onnx_dir(conversion_key(self.model_hash, opts)) / "model.onnx"

    def converted_entry(self) -> Path:
        """Where the cache keeps this deployment's conversion (what a cold run makes with TensorFlow)."""
        return self.onnx_entry(self.conversion_options())

    # -- the TensorFlow helper (see helper.py) -------------------------------------------------
    def prepare(self) -> bool:
        """Start this deployment's TensorFlow work in the helper process if a run needs it (its conversion is not
        cached) and the helper is wanted: the explicit start (the stages only wait for a job queued here).
        True if the helper has it."""
        from . import helper

        if self._prepared is None:
            try:
                self._prepared = helper.queue(self) if helper.pending(self) else helper.queued(self)
            except Exception:  # noqa: BLE001 - an accelerator: without it the work is done here, and reported there
                self._prepared = False
        return self._prepared

    def tf_work_pending(self) -> bool:
        """Would a run need TensorFlow for this deployment (its conversion is not cached)?  Reads the cache only."""
        from . import helper

        return helper.pending(self)

    def _tf_elsewhere(self, phase: str, present: Callable[[], bool]) -> bool:
        from . import helper

        return helper.made_elsewhere(self, phase, present)

    def _from_cache(self, read: Callable[[], T | None], folder: str, name: str, phase: str) -> T | None:
        """``read()`` of a cache entry; on a miss, once the helper reached ``phase`` (None: do it here)."""
        found = read()
        if found is None and self._tf_elsewhere(phase, (self.cache.root / folder / name).is_file):
            found = read()
        return found

    def precompute(self, notify: Callable[[str], None] = lambda phase: None) -> None:
        """Everything a cold run needs TensorFlow for, into the cache (what the helper process runs), in
        the order the checks need it: the conversion (and the logits probe), Keras' preprocessing of the
        photos, then Keras' outputs and logits on the check inputs."""
        self.keras_meta  # (the stages raise what went wrong)
        notify("loaded")
        self.conversion
        if self.logit_names:
            self.probe_path
        notify("converted")
        if self.preprocessing_known:  # (else the preprocessing item is skipped: no reference needed)
            for n in self.image_inputs:
                for resize in ("opencv", "keras"):
                    self.reference_tensor(self.photos(), self.preprocessing_reference_spec(n), resize)
        notify("references")
        self.run("keras")

    def _user_onnx(self) -> Path:
        raw = Path(str(self.settings.onnx)).expanduser()
        if not raw.is_absolute() and not raw.exists() and self.rootdir is not None:
            raw = self.rootdir / raw
        if not raw.is_file():
            raise CvdnnError(f"the ONNX file {self.settings.onnx!r} given with --cvdnn-onnx does not exist",
                             fix="check the path of the artifact you ship")
        return raw.resolve()

    @property
    def onnx_path(self) -> Path:
        return self.conversion.onnx_path

    @property
    def onnx_digest(self) -> str:
        """SHA-256 of the deployed ONNX (a cached conversion's is in its metadata, verified on every read)."""
        from .cache import sha256_file

        return self.conversion.meta.get("sha256") or self.stage("onnx_digest", lambda: sha256_file(self.onnx_path))

    @property
    def graph_summary(self) -> dict[str, Any]:
        """What the checks read from the graph (:func:`~pytest_cvdnn.graph.summarize`), cached by content hash."""
        from .graph import summarize

        def make() -> dict[str, Any]:
            name = f"{self.onnx_digest[:40]}.json"
            found = self.cache.get_json("graph", name)
            if found is not None and found.get("version") == GRAPH_SUMMARY_VERSION:
                return found
            data = {**summarize(self.onnx_path), "version": GRAPH_SUMMARY_VERSION}
            self.cache.put_json(data, "graph", name)
            return data

        return self.stage("graph_summary", make)

    @property
    def graph(self) -> GraphInfo:
        return self.stage("graph", lambda: GraphInfo.from_dict(self.graph_summary["graph"]))

    @property
    def onnx_layouts(self) -> list[str]:
        """Layout of each ONNX input, read from the graph (an artifact may differ from --cvdnn-layout)."""
        keras_shapes = [i["shape"] for i in self.keras_meta["inputs"]] if self.has_keras else []
        result = []
        for n, info in enumerate(self.graph.inputs):
            kshape = keras_shapes[n] if n < len(keras_shapes) else None
            result.append(guess_layout(info.shape, kshape, self.settings.layout))
        return result

    @property
    def fixed_batch_of_one(self) -> bool:
        """The ONNX graph fixes the batch dimension to 1: feed one sample at a time."""
        axes = self.batch_axes
        return any(a is not None and len(i.shape) > a and i.shape[a] == 1 for i, a in zip(self.graph.inputs, axes,
                                                                                         strict=True))

    @property
    def batch_axes(self) -> list[int | None]:
        """The axis of each graph input that holds the samples (see feeds.batch_axes; declared with --cvdnn-feed)."""
        return [f.batch_axis for f in self.feeds]

    @property
    def feeds(self) -> list[Any]:
        """How each graph input is fed: dtype, batch axis, values (:class:`~pytest_cvdnn.feeds.Feed`)."""
        return self.stage("feeds", self._plan_feeds)

    def _plan_feeds(self) -> list[Any]:
        from .feeds import INTEGER_RANGE, Feed, batch_axes, check_declared

        if self.has_keras:  # (from the Keras model: the inputs are made before any conversion)
            tensors = [(i["name"], list(i["shape"]), str(i["dtype"])) for i in self.keras_meta["inputs"]]
            axes: list[int | None] = [0 if shape else None for _, shape, _ in tensors]  # Keras batches on axis 0
            ranges = self.keras_meta.get("index_ranges", {})
        else:
            infos = list(self.graph.inputs)
            tensors = [(i.name, list(i.shape), i.dtype) for i in infos]
            axes = batch_axes([i.shape for i in infos], [i.symbols or (None,) * len(i.shape) for i in infos])
            ranges = self.graph_summary.get("index_ranges", {}) if self.settings.format == "onnx" else {}
        check_declared(self.settings.feeds, [name for name, _, _ in tensors], "--cvdnn-feed")
        decls = dict(self.settings.feeds)
        plan = []
        for (name, shape, dtype), auto in zip(tensors, axes, strict=True):
            decl = decls.get(name)
            axis = auto if decl is None or decl.batch_axis == "auto" else decl.batch_axis
            if axis is not None and not 0 <= axis < len(shape):
                raise CvdnnError(f"--cvdnn-feed: input {name!r} has {len(shape)} axes; batch_axis={axis} is not one "
                                 "of them", fix="give an axis below the input's rank, or batch_axis=none")
            integer = np.dtype(dtype).kind in "iub"
            if decl is not None and decl.constant is not None:
                low = high = decl.constant
                why = "declared with --cvdnn-feed"
            elif decl is not None and decl.low is not None:
                low, high, why = decl.low, decl.high, "declared with --cvdnn-feed"
            elif integer and name in ranges:
                (low, high), why = ranges[name], f"indices into a table of {ranges[name][1] + 1} rows"
            elif integer:
                (low, high), why = INTEGER_RANGE, "ASSUMED byte values: declare the valid ones with --cvdnn-feed"
            elif self.settings.input_range is not None:
                (low, high), why = self.settings.input_range, "--cvdnn-input-range"
            else:
                low, high, why = -1.0, 1.0, ""
            plan.append(Feed(name, dtype, axis, float(low), float(high), None if decl is None else decl.constant,
                             why))
        return plan

    @property
    def output_batch_axes(self) -> list[int]:
        """The axis of each graph output that holds the samples (where the inputs' batch dimension sits)."""
        from .feeds import output_batch_axes

        if self.has_keras or self.settings.format != "onnx":
            return [0] * len(self.graph.outputs)
        symbol = next((i.symbols[a] for i, a in zip(self.graph.inputs, self.batch_axes, strict=True)
                       if a is not None and len(i.symbols) > a and i.symbols[a]), None)
        outs = self.graph.outputs
        return output_batch_axes([o.shape for o in outs], [o.symbols or (None,) * len(o.shape) for o in outs], symbol)

    def from_onnx_outputs(self, outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """A graph's outputs with their samples on axis 0 (an output batched on another axis is moved)."""
        from .feeds import from_graph

        axes = self.output_batch_axes
        if not any(axes) or len(outputs) != len(axes):
            return list(outputs)
        return [from_graph(np.asarray(o), a) for o, a in zip(outputs, axes, strict=True)]

    @property
    def softmax_outputs(self) -> list[bool]:
        return list(self.graph.softmax_outputs)

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.graph.outputs]

    # -- inputs -----------------------------------------------------------------------------
    def _raw_input_shapes(self) -> list[list[int | None]]:
        """Per-input shapes in the Keras layout (NHWC for images), possibly with None dims."""
        if self.has_keras:
            return [list(i["shape"]) for i in self.keras_meta["inputs"]]
        raw = []
        for info, layout, axis in zip(self.graph.inputs, self.onnx_layouts, self.batch_axes, strict=True):
            shape = list(info.shape)
            if axis is None:  # (one value for every sample: held once per sample)
                raw.append([1, *shape])
            elif axis:  # (the samples first)
                raw.append([shape[axis], *shape[:axis], *shape[axis + 1 :]])
            else:
                raw.append([shape[0], shape[2], shape[3], shape[1]] if layout == "nchw" and len(shape) == 4 else shape)
        return raw

    def _input_names(self) -> list[str]:
        """Input names in the order of :meth:`_raw_input_shapes`."""
        if self.has_keras:
            return [i["name"] for i in self.keras_meta["inputs"]]
        return [i.name for i in self.graph.inputs]

    def input_shapes(self) -> list[list[int]]:
        """Concrete per-input shapes in the Keras layout (NHWC for images), batch 1."""
        shapes: list[list[int]] = []
        for n, (raw, name) in enumerate(zip(self._raw_input_shapes(), self._input_names(), strict=True)):
            shape = fill_spatial(raw, self.spec_for(n).size, name)
            if any(d is None for d in shape[1:]):
                raise CvdnnError(
                    f"input {n} of {self.label} has undefined dimensions {tuple(shape)}",
                    fix="build the model with a fixed input shape",
                )
            shapes.append([1, *(int(d) for d in shape[1:] if d is not None)])
        return shapes

    @property
    def inputs(self) -> list[np.ndarray]:
        """The samples every check uses, in the Keras layout (NHWC), identical for every runner."""

        def make() -> list[np.ndarray]:
            self._check_fixed_batch()
            shapes = self.input_shapes()
            check_input_sizes(shapes, self._input_names(), self.settings.samples, self.settings.memory_budget)
            specs = [self.spec_for(n) for n in range(len(shapes))]
            if self.named_inputs and self.settings.inputs:
                layouts = self.onnx_layouts if not self.has_keras else ["nhwc"] * len(shapes)
                arrays = load_named_inputs(Path(self.settings.inputs), self.feeds, shapes, layouts)
            elif self.settings.inputs:
                arrays = load_inputs(Path(self.settings.inputs), shapes, specs)
            else:
                arrays = random_inputs(shapes, specs, self.settings.samples, self.settings.seed,
                                       self.settings.input_range, self.feeds)
            for x in arrays:  # shared by every check and runner: nobody may change them (and their digests stay)
                x.flags.writeable = False
            return arrays

        return self.stage("inputs", make)

    @property
    def named_inputs(self) -> bool:
        """--cvdnn-inputs holds arrays by input name: an .npz, or a folder with NAME.npy / NAME/ entries."""
        given = self.settings.inputs
        if not given:
            return False
        if given.lower().endswith(".npz"):
            return True
        return Path(given).is_dir() and bool(named_entries(Path(given), self._input_names()))

    def _check_fixed_batch(self) -> None:
        """Refuse an ONNX input whose batch is fixed above 1: the checks feed single samples and batches."""
        for info, axis in zip(self.graph.inputs, self.batch_axes, strict=True):
            size = info.shape[axis] if axis is not None and len(info.shape) > 1 else None
            if size is not None and size > 1:
                raise CvdnnError(
                    f"the ONNX input {info.name!r} of {self.label} fixes the batch size to {size} (shape "
                    f"{info.shape}, batch axis {axis}); the checks run one sample at a time, as cv2.dnn is usually "
                    f"deployed, and batches of {self.settings.samples}",
                    fix="re-export the model with batch 1 or a dynamic batch (a named dimension): cv2.dnn takes "
                    f"the batch from the blob; if another axis holds the samples, declare it: "
                    f"--cvdnn-feed='{info.name}:batch_axis=K' (or batch_axis=none)")

    @property
    def inputs_description(self) -> str:
        """What the checks feed the model, and on what grounds (said with every parity verdict)."""
        n = self.settings.samples
        if self.named_inputs:
            return f"inputs: the arrays of {self.settings.inputs}, by input name"
        if self.settings.inputs:
            return f"inputs: the files in {self.settings.inputs} through the input spec"
        if self.settings.input_range is not None:
            lo, hi = self.settings.input_range
            return f"inputs: {n} seeded random samples uniform in [{lo:g}, {hi:g}] (--cvdnn-input-range)"
        parts = []
        for k in self.image_inputs:
            spec = self.spec_for(k)
            lo, hi = spec.value_range()
            if self.declared_for(k):
                why = "the declared input spec"
            elif self.preprocessing_known:
                why = ("raw pixels: the model normalises its input itself" if spec.mode == "none"
                       else f"the detected Keras {spec.mode!r} preprocessing")
            else:
                why = ("ASSUMED raw 0..255 pixels: the model's preprocessing is unknown; set --cvdnn-input-range "
                       "or declare --cvdnn-preprocess")
            parts.append(f"{n} seeded random images in [{lo:.4g}, {hi:.4g}] ({why})")
        images = set(self.image_inputs)
        fed = [f.describe() for k, f in enumerate(self.feeds) if k not in images
               and (f.integer or f.constant is not None or f.batch_axis != 0 or f.why)]
        if fed:
            parts.append(f"{n} seeded random samples, fed " + ", ".join(fed))
        return "inputs: " + ("; ".join(parts) if parts else f"{n} seeded random samples in [-1, 1]")

    @staticmethod
    def inputs_hash(inputs: Sequence[np.ndarray]) -> str:
        """Digest of arrays (the key of every cached output); remembered for read-only arrays (the samples and
        their slices), which the checks hash again and again."""
        key = _frozen_key(inputs)
        if key is not None and key in _DIGESTS:
            return _DIGESTS[key][1]
        digest = inputs_digest(inputs)
        if key is not None:
            if len(_DIGESTS) >= 256:  # bounded: a key goes with the arrays it holds
                _DIGESTS.clear()
            _DIGESTS[key] = (list(inputs), digest)  # (held: their memory cannot be reused while the key exists)
        return digest

    # -- runners ----------------------------------------------------------------------------
    @property
    def target_label(self) -> str:
        from .settings import target_label

        return target_label(self.settings.target)

    @property
    def target(self) -> Any:
        """Where cv2.dnn runs (installed side by side on first use for ``opencv==X``)."""
        from .runners.isolated import LOCAL, Target

        def resolve() -> Any:
            spec = self.settings.target
            if spec is None:
                return LOCAL
            if spec.startswith("opencv=="):
                from .targets import opencv_env, provision_opencv

                folder = provision_opencv(spec.split("==", 1)[1], self.cache.root)
                return Target(self.target_label, env=opencv_env(folder))
            return Target(self.target_label, python=spec)

        return self.stage("target", resolve)

    def cv2_runner(self, onnx_path: Path, output_names: Sequence[str]) -> Runner:
        from .runners.cv2dnn import Cv2DnnRunner
        from .runners.isolated import RemoteCv2Runner

        names = [i.name for i in self.graph.inputs]
        target = self.target
        from .devices import DEFAULT

        device = self.settings.device
        if device != DEFAULT:
            self.stage("device", self._device_available)
        if target.is_local:
            self._crash_safe(onnx_path, names, output_names)
            return Cv2DnnRunner(onnx_path, names, output_names, self.settings.engine, device)
        return RemoteCv2Runner(onnx_path, names, output_names, self.settings.engine, target, device)

    def _device_available(self) -> None:
        """StageSkipped naming why the target's OpenCV cannot run a net on the session's device (asked of that
        OpenCV: ``cv2.dnn.getAvailableTargets``), so that its items are skipped with the reason, not failed."""
        from .devices import unavailable, unavailable_on

        target = self.target
        why = unavailable(self.settings.device) if target.is_local else \
            unavailable_on(target.python, target.env, self.settings.device)
        if why:
            raise StageSkipped(f"device {self.settings.device} is not checked here: {why}; check it on a machine "
                               "that has it (the same command there), or drop it from --cvdnn-device")

    def _crash_safe(self, onnx_path: Path, names: Sequence[str], output_names: Sequence[str]) -> None:
        """Before the local cv2.dnn reads an artifact in the pytest process, a child process reads it and runs
        sample 0 once: a graph that crashes OpenCV (a segfault in its importer) fails the load item there
        instead of ending the session.  Remembered per artifact, engine and OpenCV build (a warm run starts no
        child); an ordinary OpenCV error is left to the in-process load, which explains it."""
        from .cache import sha256_file
        from .devices import net_key
        from .runners.isolated import LOCAL, ChildError, child_call

        digest = self.onnx_digest if Path(onnx_path) == self.onnx_path else sha256_file(onnx_path)  # (warm: known)
        net = net_key(self.settings.engine, self.settings.device)
        key = sha256_bytes(f"{digest}|{net}|{self.opencv_build}|{','.join(output_names)}".encode())[:40]
        known = self.cache.get_json("crash-safe", f"{key}.json")
        if known and known.get("crash"):  # (remembered: a warm run starts no child to crash again)
            self.events.append("load-crashed")
            raise ChildError(known["crash"], stage=str(known.get("stage", "load")), opencv=None,
                             raw=str(known.get("raw", "")), node=known.get("node"))
        if known:
            return
        try:
            feeds = self.to_onnx_inputs([x[:1] for x in self.inputs]) if self.settings.format == "onnx" else []
        except (CvdnnError, StageSkipped):
            feeds = []
        try:
            resp, _ = child_call(LOCAL, onnx_path, self.settings.engine, names, output_names, feeds,
                                 timeout=self.settings.timeout, device=self.settings.device)
        except ChildError as exc:  # a crash: load_runner says it; remembered for the next run
            self.events.append("load-crashed")
            self.cache.put_json({"crash": exc.message, "stage": exc.stage, "raw": exc.raw[-2000:], "node": exc.node},
                                "crash-safe", f"{key}.json")
            raise
        if resp.get("ok"):
            self.cache.put_json({"ok": True}, "crash-safe", f"{key}.json")

    @property
    def cv2net(self) -> Any:
        """The cv2.dnn runner of the deployment's target (the load stage; why it fails: see load.py)."""
        from .load import load_runner

        return self.stage("load", lambda: load_runner(self))

    @property
    def first_forward(self) -> list[np.ndarray] | None:
        """Sample 0 through the deployment's cv2.dnn (the forward the load item and the parity items share): a
        graph cv2.dnn reads but cannot run fails here once, and what needs cv2.dnn's outputs is skipped with why."""
        if self._forwarding:  # (this very forward asks for its runner's prerequisites)
            return None
        try:
            sample = [x[:1] for x in self.inputs]
        except (CvdnnError, StageSkipped):  # (no inputs: what uses them says why, as its own failure)
            return None

        def forward() -> list[np.ndarray]:
            from .load import forward_error

            self._forwarding = True
            try:
                return self.run("cv2dnn", sample)
            except (CvdnnError, StageSkipped) as exc:
                if isinstance(exc, StageSkipped) or not self._stages.get("load", (False,))[0]:
                    raise
                raise forward_error(self, exc) from exc
            finally:
                self._forwarding = False

        return self.stage("first_forward", forward)

    _forwarding = False

    @property
    def outputs_fix(self) -> str:
        """What to do when the deployed model gives other outputs (count or shapes) than the reference."""
        return ("check that the ONNX file belongs to this model (--cvdnn-onnx) and that its outputs were not "
                "reordered or transposed by the converter; name the outputs as the model does (the exporter's "
                "output names) so that they are paired by name")

    @property
    def load_fix(self) -> str:
        from .load import newer_opencv

        version = self.target_opencv_version()
        if not self.has_keras or self.settings.onnx:  # a given ONNX file: no conversion option changes it
            return ("export the model again so that the node uses operators this OpenCV imports (the ONNX rewrites "
                    "the plugin tried, if any, are listed below)" + newer_opencv(version))
        older = version.startswith(("3.", "4."))
        return ("try another --cvdnn-opset" + (" (11 or 10 for OpenCV 4.5)" if older else "")
                + " or --cvdnn-layout (see the remedy search)" + newer_opencv(version))

    def target_opencv_version(self) -> str:
        """The version of the target's OpenCV: the local one, or the one a target names (``opencv==X``)."""
        from .runners.cv2dnn import opencv_version

        spec = self.settings.target
        if spec is None:
            return opencv_version()
        return spec.split("==", 1)[1] if spec.startswith("opencv==") else "?"

    @property
    def net(self) -> Any:
        """A fresh ``cv2.dnn.Net`` for the deployment's ONNX (the cv2 installed here)."""
        from .runners.cv2dnn import read_net

        if self.settings.target is not None:
            raise CvdnnError(f".net is a cv2.dnn.Net of this process; target {self.target_label} runs in a child",
                             fix="use .run('cv2dnn', inputs) to run on a target")
        self.require("cv2net")
        return read_net(self.onnx_path, self.settings.engine, self.settings.device)

    @property
    def opencv_build(self) -> str:
        """Digest of the installed OpenCV's version, build information and thread count."""
        from .runners.cv2dnn import opencv_build

        return self.stage("opencv_build", opencv_build)

    def isolated_forwards(self) -> Any:
        """A :class:`~pytest_cvdnn.runners.isolated.ChildRun`: a freshly loaded net in a child process
        forwards sample 0 alone, then the whole batch.  The determinism check's fresh net and the batch
        check (a batch that crashes OpenCV cannot take the session down) share it; the load check
        starts it when those checks are upcoming, so it runs while the other checks do.

        On the cv2 installed here its outputs are cached by graph hash + inputs hash + OpenCV build and
        thread count: a warm run replays them (a :class:`ReplayedRun`), and the checks compare them with
        this session's forwards of the net, which still run — across sessions, bit for bit."""
        from .devices import net_key
        from .runners.isolated import ChildRun, ReplayedRun

        def start() -> Any:
            runner = self.require("cv2net")
            runs = [self.to_onnx_inputs([x[:1] for x in self.inputs])]
            if len(self.inputs[0]) > 1 and not self.fixed_batch_of_one:
                runs.append(self.to_onnx_inputs(self.inputs))
            store = None
            if self.target.is_local:
                name = sha256_bytes("|".join([self.onnx_digest, net_key(self.settings.engine, self.settings.device),
                                              self.opencv_build,
                                              *(self.inputs_hash(r) for r in runs)]).encode())[:40] + ".npz"
                found = self.cache.get_arrays("cv2", name)
                if found is not None:
                    counts = [int(c) for c in found[0]]
                    starts = np.cumsum([1, *counts])
                    return ReplayedRun([found[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)])

                def store(outs: list[list[np.ndarray]]) -> None:
                    self.cache.put_arrays([np.array([len(o) for o in outs]), *(a for o in outs for a in o)], "cv2", name)

            return ChildRun(self.target, self.onnx_path, self.settings.engine, runner.input_names,
                            runner.output_names, runs, timeout=self.settings.timeout, store=store,
                            device=self.settings.device)

        return self.stage("isolated_forwards", start)

    def close(self) -> None:
        """Stop what still runs in the background (the session ends)."""
        ok, child = self._stages.get("isolated_forwards", (False, None))
        if ok:
            child.close()

    def to_onnx_inputs(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Inputs in the Keras layout (NHWC) → the layout of each ONNX input."""
        layouts = self.onnx_layouts
        if len(inputs) != len(layouts):
            raise CvdnnError(f"{len(inputs)} input array(s) given, but {self.label} takes {len(layouts)} input(s) "
                             f"({', '.join(i.name for i in self.graph.inputs)})",
                             fix="pass one array per model input, in the model's order")
        from .feeds import to_graph

        arrays = [to_layout(x, "nhwc", lay) for x, lay in zip(inputs, layouts, strict=True)]
        if self.settings.format != "onnx":
            return arrays
        return [to_graph(x, feed) for x, feed in zip(arrays, self.feeds, strict=True)]

    # -- runners (see runners/__init__.py: one protocol, one registry, one caching wrapper) -------------------
    @property
    def runners(self) -> tuple[str, ...]:
        """The runners that can run this deployment, in the registry's order."""
        return tuple(name for name in runner_names() if not runner_spec(name).unavailable(self))

    def replay_runner(self, name: str, logits: bool) -> Runner | None:
        """A runner that replays stored outputs instead of computing them (a bundle's references); None here."""
        return None

    def require_runner(self, name: str) -> None:
        """StageSkipped (with the reason) unless runner ``name`` can run: it applies to this deployment and the
        stages it needs succeeded (a runner itself is made when an output is not cached)."""
        spec = runner_spec(name)
        why = spec.unavailable(self)
        if why:
            raise StageSkipped(why)
        if self.replay_runner(name, False) is not None:
            self.require("conversion")  # (a bundle: its checksums)
            return
        for stage in spec.needs:
            self.require(stage)

    def _cached_runner(self, name: str, logits: bool) -> CachedRunner:
        """Runner ``name`` (its logits twin with ``logits``, where the runner gives them separately) behind the
        caching wrapper: made on the first miss, its results kept by identity + inputs."""
        spec = runner_spec(name)
        separate = logits and spec.logits == "separate"
        memo = (name, separate)
        if memo not in self._runners:
            replay = self.replay_runner(name, separate)

            def make() -> Runner:
                return replay if replay is not None else spec.factory(self, separate)

            def made_by_helper(path: Path) -> bool:  # (a reference the TensorFlow helper computes on a cold run)
                return spec.helper_phase is not None and self._tf_elsewhere(spec.helper_phase, path.is_file)

            by_layout = "model" if replay is not None else spec.layout  # (replays: stored by the model's inputs)
            self._runners[memo] = CachedRunner(
                f"{name}-logits" if separate else name, make,
                None if replay is not None else self._identity(spec, separate), self.cache, self._outputs,
                joint=spec.logits == "joint", feed=list if by_layout == "model" else self.to_onnx_inputs,
                unfeed=list if by_layout == "model" else self.from_onnx_outputs,
                one_at_a_time=lambda: by_layout == "graph" and self.fixed_batch_of_one, digest=self.inputs_hash,
                wait=made_by_helper if replay is None and spec.helper_phase is not None else None)
        return self._runners[memo]

    def _identity(self, spec: RunnerSpec, logits: bool) -> str | None:
        """What a runner's cached outputs are a function of: the model (its spec's key) and the runner's version."""
        key = spec.key(self, logits)
        return None if key is None else f"{key}|{spec.version(self)}"

    def run(self, runner: str, inputs: Sequence[np.ndarray] | None = None, *, per_sample: bool = False,
            logits: bool = False) -> list[np.ndarray]:
        """Outputs of ``runner`` ("keras", "onnxruntime", "tflite" or "cv2dnn") on inputs in the Keras layout.

        ``logits=True`` returns the inputs of the final Softmax nodes instead of the outputs.
        ``per_sample=True`` runs one sample per forward (how cv2.dnn is usually deployed); each sample's forward
        is shared with the checks that forward that sample alone.
        """
        spec = runner_spec(runner)
        if logits and spec.logits == "none":
            raise CvdnnError(f"the {runner} runner of {self.label} has no logits to compare")
        if logits and spec.logits == "joint" and not self.logit_names:
            raise CvdnnError("the graph has no final Softmax whose input could be compared")
        if not logits and spec.layout == "graph":
            self.require_runner(runner)  # (a failed load or conversion: the reason, before any work)
        inputs = list(self.inputs if inputs is None else inputs)
        cached = self._cached_runner(runner, logits)
        if per_sample and len(inputs[0]) > 1:
            rows = [cached.infer([x[i : i + 1] for x in inputs]) for i in range(len(inputs[0]))]
            if logits and cached.joint:
                return stacked([r.logits for r in rows])
            return self._in_order(runner, stacked([r.outputs for r in rows]))
        found = cached.infer(inputs)
        if logits and cached.joint:
            if not found.logits:
                raise CvdnnError(f"the {runner} reference has no final softmax whose input could be compared")
            return found.logits
        return self._in_order(runner, found.outputs)

    def _in_order(self, runner: str, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """A runner's outputs in the graph's order (Keras lists its own: matched by name)."""
        if runner != "keras" or not self.has_keras or self.replay_runner("keras", False) is not None:
            return outputs  # (a bundle's replayed reference is stored in the graph's order)
        return self.in_graph_order(outputs)

    def in_graph_order(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """Keras outputs reordered as the ONNX graph lists them, matched by name: the Keras output names (tf2onnx
        names outputs after the layers) and, for a SavedModel, its signature's keys and the tensors they map to
        (``StatefulPartitionedCall:0``); by position where the names do not pair every output (see
        :attr:`outputs_by_position`)."""
        order = self._output_order(len(outputs))
        return outputs if order is None else [outputs[k] for k in order]

    def _output_order(self, count: int) -> list[int] | None:
        """For each graph output, the index of the Keras output of the same name (None: no complete pairing)."""
        keras_names = list(self.keras_meta.get("output_names") or [])
        aliases = list(self.keras_meta.get("output_aliases") or [])
        if count < 2 or len(keras_names) != count:
            return None
        names = [{keras_names[k], *(aliases[k] if k < len(aliases) else [])} for k in range(count)]
        names = [n | {x.split(":")[0] for x in n if x.endswith(":0")} for n in names]
        order = []
        for graph_name in self.output_names:
            hits = [k for k in range(count) if graph_name in names[k]] or [
                k for k in range(count) if graph_name.split(":")[0] in names[k]]  # (exact names first)
            if len(hits) != 1 or hits[0] in order:
                return None
            order.append(hits[0])
        return order

    @property
    def outputs_by_position(self) -> bool:
        """Several Keras outputs paired with the graph's by position: no name pairs them all."""
        count = len(self.keras_meta.get("output_names") or []) if self.has_keras else 0
        return count > 1 and self._output_order(count) is None

    def photos(self) -> list[np.ndarray]:
        """BGR photos for the preprocessing check: --cvdnn-images or scikit-image's."""
        from .preprocess import load_photos

        return [img for _, img in load_photos(Path(self.settings.images) if self.settings.images else None)]

    @property
    def preprocessing_known(self) -> bool:
        """Could the preprocessing the model expects be derived (a keras.applications family, or normalisation
        layers at its input)?  Only then is there a Keras reference to verify a blob against."""
        return self.has_keras and bool(self.keras_meta.get("preprocessing", {}).get("confident", False))

    def preprocessing_reference_spec(self, index: int | None = None) -> InputSpec:
        """What Keras feeds input ``index`` (meaningful where :attr:`preprocessing_known`)."""
        return self.expected_spec_for(self._first_image if index is None else index)

    def reference_tensor(self, photos: Sequence[np.ndarray], expected: InputSpec, resize: str = "opencv") -> np.ndarray:
        """Keras' preprocessing of the photos, resized by OpenCV or by Keras (see reference.keras_reference;
        cached: no TensorFlow when warm)."""
        from .reference import keras_reference

        key = sha256_bytes(self.inputs_hash(photos).encode() + repr(expected).encode() + resize.encode())[:32]
        cached = self._from_cache(lambda: self.cache.get_arrays("ref", f"prep-{key}.npz"), "ref", f"prep-{key}.npz",
                                  "references")
        if cached is not None:
            return np.asarray(cached[0])
        tensor = keras_reference(photos, expected, resize)
        self.cache.put_arrays([tensor], "ref", f"prep-{key}.npz")
        return tensor

    # -- logits (inputs of final Softmax nodes) ------------------------------------------------
    @property
    def softmax_logits(self) -> list[tuple[int, str]]:
        """(output index, logits tensor) for each graph output made by a Softmax node."""
        return [(int(k), str(name)) for k, name in self.graph_summary["softmax_inputs"]]

    @property
    def logit_names(self) -> list[str]:
        return [name for _, name in self.softmax_logits]

    @property
    def probe_path(self) -> Path:
        """A copy of the ONNX (in the cache, never beside the user's file) that also outputs the logits."""
        from .cache import regular_file, sha256_file
        from .graph import with_extra_outputs

        def make() -> Path:
            key = sha256_bytes((sha256_file(self.onnx_path) + "|".join(self.logit_names)).encode())[:32]
            path = self.cache.root / "probe" / f"{key}.onnx"
            digest = path.with_suffix(".sha256")  # (a damaged probe is rebuilt, never read)

            def intact() -> bool:
                try:
                    return (regular_file(path) and regular_file(digest)
                            and digest.read_text().strip() == sha256_file(path))
                except OSError:
                    return False

            if not intact():
                with self.cache.lock(f"probe-{key}"):
                    if not intact():
                        path.parent.mkdir(parents=True, exist_ok=True)
                        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                        with_extra_outputs(self.onnx_path, self.logit_names, tmp, final=path)
                        check = sha256_file(tmp)
                        os.replace(tmp, path)
                        tmp.write_text(check)
                        os.replace(tmp, digest)
            return path

        return self.stage("probe", make)

    # -- comparisons ----------------------------------------------------------------------
    def parity(self, expected: str, obtained: str, inputs: Sequence[np.ndarray] | None = None,
               whole_batch: bool = False) -> ParityResult:
        """Compare two runners on the outputs and, for final Softmax outputs, on their logits (see parity.py)."""
        from .parity import runner_parity

        return runner_parity(self, expected, obtained, inputs, whole_batch)

    def _assembly(self) -> Assembly:
        if self.assembly is None:
            raise CvdnnError(f"{self.label}: this deployment was not made by build_deployment",
                             fix="make deployments with pytest_cvdnn.deployment.build_deployment")
        return self.assembly

    def variant(self, settings: ModelSettings) -> "Deployment":
        """Another deployment of the same model (other opset/layout/format), sharing cache and loaded models."""
        variant = self._assembly().build(settings, self.cache, self.rootdir, self.memo)
        variant.prepare()  # (like this one: a cold conversion goes to the TensorFlow helper, where it is used)
        return variant

    def as_format(self, fmt: str) -> "Deployment":
        """The same model exported as ``"tflite"`` or ``"tf"`` (a frozen graph), or ``"onnx"``: e.g.
        ``cvdnn_model.as_format("tflite").check("parity[keras-cv2dnn]")`` in a project's own test."""
        from .settings import FORMATS

        if fmt not in FORMATS:
            raise CvdnnError(f"unknown format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
        return self.variant(replace(self.settings, format=fmt))

    def check(self, name: str) -> Any:
        """Run one of the generated checks (e.g. "preprocessing") from a project's own test.

        Returns the CheckResult; raises CheckFailed (an AssertionError-like failure with the
        diagnosis) or StageSkipped — raised from here, so that pytest shows the calling test and the
        diagnosis, not a traceback through the plugin.
        """
        __tracebackhide__ = True
        try:
            return self._assembly().run_check(self, name)[0]
        except (CvdnnError, StageSkipped) as exc:
            raise exc.with_traceback(None) from None

    def agreement(self, images: str | Path | None = None, **thresholds: Any) -> Any:
        """The agreement check on a folder of images (default: --cvdnn-images) from a project's own test, with
        ``min_agreement=``, ``max_accuracy_drop=`` or ``training_loader=`` (as the marker takes them): the
        CheckResult (its ``data`` holds the rates and the images that disagree), or CheckFailed."""
        __tracebackhide__ = True
        folder = images if images is not None else self.settings.images
        if folder is None:
            raise CvdnnError("agreement() needs images", fix="pass a folder: cvdnn_model.agreement('data/val'), or "
                             "--cvdnn-images=DIR")
        settings = self.settings.with_marker({"images": str(folder), **thresholds})
        return self.variant(settings).check("agreement")

    def runner_versions(self) -> dict[str, str]:
        """Each runner of the deployment and its version, as the report says it ({} where the model is unreadable:
        its items say why)."""
        try:
            return {name: self.replay_version(name) or runner_spec(name).version(self) for name in self.runners}
        except (CvdnnError, StageSkipped):
            return {}

    def replay_version(self, name: str) -> str:
        """Where runner ``name``'s outputs are replayed from ("" here: it runs)."""
        return ""

    def environment(self) -> dict[str, Any]:
        env: dict[str, Any] = dict(tool_versions())
        opset, layout = self.settings.opset, self.settings.layout
        if self.settings.format == "onnx" and (self.settings.onnx or not self.has_keras):
            try:  # a given ONNX file: its own opset and layout, not the conversion options it never went through
                opset = self.graph.opset
                images = [lay for info, lay in zip(self.graph.inputs, self.onnx_layouts, strict=True)
                          if len(info.shape) == 4]
                layout = images[0] if images else "-"
            except Exception:  # noqa: BLE001 - an unreadable file: its items say why; the options stand here
                pass
        env.update(opset=opset, layout=layout, engine=self.settings.engine, device=self.settings.device,
                   target=self.target_label, format=self.settings.format,
                   ort_providers=list(self.settings.ort_providers), runners=self.runner_versions())
        if self.settings.target is not None:  # "opencv" above is this process's; the target's is another
            env["target_opencv"] = self.target_opencv_version()
        return env


#: digests of read-only arrays by where they are (data pointer, shape, strides, dtype), with the arrays held
_DIGESTS: dict[tuple[Any, ...], tuple[list[np.ndarray], str]] = {}


def _frozen_key(arrays: Sequence[np.ndarray]) -> tuple[Any, ...] | None:
    """A key for arrays whose contents cannot change: read-only all the way down to the memory's owner."""
    key = []
    for x in arrays:
        base: Any = x
        while isinstance(base, np.ndarray):
            if base.flags.writeable:
                return None
            base = base.base
        if base is not None and not isinstance(base, bytes):  # memory of another kind (mmap, buffer): unknown
            return None
        key.append((x.__array_interface__["data"][0], x.shape, x.strides, x.dtype.str))
    return tuple(key)
