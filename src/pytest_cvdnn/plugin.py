"""pytest hooks and fixtures of pytest-cvdnn (wiring only; the work lives in other modules).

Loading this module imports neither TensorFlow, cv2 nor onnx.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from .cache import Cache, default_user_cache
from .compare import ParityResult, Tolerance, compare
from .devices import DEFAULT as DEFAULT_DEVICE
from .errors import CvdnnError
from .items import RECORD_KEY, CheckItem, ModelDirectory, ModelEntry, ModelFile, html_plugin_writes
from .report import Results
from .settings import OPTIONS, ModelSettings, parse_target

__all__ = ["CvdnnState", "STATE"]


@dataclass
class CvdnnState:
    """All of the plugin's session state (kept in ``config.stash``)."""

    base: ModelSettings
    models: list[str]
    make_cache: Callable[[], Cache]
    rootdir: Path
    report_path: Path | None
    restrict: bool
    html_path: Path | None = None
    deployments: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)  # cv2.dnn engines checked besides base.engine
    devices: list[str] = field(default_factory=list)  # cv2.dnn devices checked besides base.device
    memo: dict[Any, Any] = field(default_factory=dict)
    entries: dict[Path, list[ModelEntry]] = field(default_factory=dict)
    collected: dict[Path, Path] = field(default_factory=dict)  # resolved model file -> the path collected
    spelled: dict[Path, Path] = field(default_factory=dict)  # resolved model file -> the path as configured
    results: Results = field(default_factory=Results)
    per_model: Callable[[str], ModelSettings] | None = None  # a model's settings with its pyproject table applied

    def settings_for(self, model: str) -> ModelSettings:
        """The settings of ``model``: the session's, with its ``[tool.cvdnn.models]`` table applied."""
        return self.per_model(model) if self.per_model is not None else replace(self.base, model=model)

    @cached_property
    def cache(self) -> Cache:
        """Created on first use: a run that never checks a model leaves no cache folder behind."""
        return self.make_cache()

    def deployment(self, settings: ModelSettings) -> Any:
        from .deployment import build_deployment

        key = settings.key()
        if key not in self.deployments:
            self.deployments[key] = build_deployment(settings, self.cache, self.rootdir, self.memo)
        return self.deployments[key]


STATE = pytest.StashKey[CvdnnState]()


# -- options ---------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cvdnn", "pytest-cvdnn: check Keras models for OpenCV's DNN module")
    group.addoption("--cvdnn-model", action="append", default=[], metavar="PATH",
                    help="model to check (.keras, .h5, SavedModel folder, .onnx, or 'package.module:function'); "
                    "repeatable. Given alone, only the model's checks run.")
    group.addoption("--cvdnn-onnx", default=None, metavar="PATH",
                    help="check this already-converted ONNX (the artifact you ship) against the Keras model "
                    "instead of converting")
    group.addoption("--cvdnn-report", default=None, metavar="FILE.json", help="write a JSON report")
    group.addoption("--cvdnn-html", default=None, metavar="FILE.html",
                    help="write one self-contained HTML report with pictures of the evidence (ini: cvdnn_html)")
    group.addoption("--cvdnn-fix", action="store_true", default=False,
                    help="always search for a remedy (other opsets/layouts) and report what loads and matches")
    group.addoption("--cvdnn-repro", default=None, metavar="DIR",
                    help="where to write repro folders of failures (default: under the cache dir)")
    group.addoption("--cvdnn-save-bundle", default=None, metavar="DIR",
                    help="write a golden bundle per model (ONNX, inputs, references, spec, checksums) into DIR")
    group.addoption("--cvdnn-bundle", action="append", default=[], metavar="DIR",
                    help="run the cv2.dnn checks of a bundle (or a folder of bundles) where only OpenCV is installed")
    group.addoption("--cvdnn-target", action="append", default=[], type=parse_target, metavar="SPEC",
                    help="also run the cv2.dnn checks on this OpenCV: opencv==X.Y.Z (installed side by side into "
                    "the cache) or the path of a Python that has cv2; repeatable")
    group.addoption("--cvdnn-tf-in-process", action="store_true", default=False,
                    help="do a cold cache's TensorFlow work (conversion, Keras references) in the pytest process "
                    "instead of a helper process (the default when TensorFlow is not imported yet)")
    parser.addini("cvdnn_targets", "extra OpenCV targets (one per line, as --cvdnn-target)", type="linelist",
                  default=[])
    parser.addini("cvdnn_models", "models to check in every run (one per line)", type="linelist", default=[])
    parser.addini("cvdnn_html", "write this HTML report (same as --cvdnn-html)", default=None)
    for opt in OPTIONS:
        group.addoption(opt.flag, dest=f"cvdnn_{opt.dest}", type=opt.parse, default=None,
                        metavar=opt.metavar, help=opt.help)
        parser.addini(opt.ini, f"{opt.help} (same as {opt.flag})", default=None)


def _share_cores_between_workers(config: pytest.Config) -> None:
    """On an xdist worker, give TensorFlow, onnxruntime and cv2.dnn their share of the cores.

    Each of them sizes its thread pool to every core; with N workers that is N times too many
    threads fighting over the CPU (measured: 4 MobileNetV2 gates on 2 cores, -n 2, 20.0 s with
    full pools, 16.5 s with the cores shared).  Variables the user set are left alone.
    """
    workerinput = getattr(config, "workerinput", None)
    if not workerinput:
        return
    for name, value in _thread_share(int(workerinput.get("workercount", 1))).items():
        os.environ.setdefault(name, value)


def _thread_share(workers: int) -> dict[str, str]:
    """Thread-pool sizes (environment variables) for one of ``workers`` processes sharing this machine."""
    share = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    return {"CVDNN_THREADS": share, "TF_NUM_INTRAOP_THREADS": share, "OMP_NUM_THREADS": share,
            "TF_NUM_INTEROP_THREADS": "1"}


def _ini_keys(config: pytest.Config) -> list[str]:
    """The keys the ini file sets."""
    import warnings

    with warnings.catch_warnings():  # (pytest 9 deprecates reading inicfg; it has no other list of the keys given)
        warnings.simplefilter("ignore")
        return [str(k) for k in (getattr(config, "inicfg", None) or {})]


def _refuse_unknown_ini_keys(config: pytest.Config) -> None:
    """A ``cvdnn_*`` key this plugin does not know is a usage error naming the key it looks like: a misspelt key
    (``cvdnn_preprocces``, ``cvdnn_model``) was ignored with a warning and left a green gate that checked
    something else (or nothing)."""
    import difflib

    known = {opt.ini for opt in OPTIONS} | {"cvdnn_targets", "cvdnn_models", "cvdnn_html"}
    given = [str(k) for k in _ini_keys(config) if str(k).lower().startswith("cvdnn")]
    unknown = [k for k in given if k not in known]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key.lower(), sorted(known), n=1, cutoff=0.6)
        where = config.inipath or "the ini file"
        raise pytest.UsageError(
            f"{where}: unknown pytest-cvdnn ini key {key!r}"
            + (f" (and {len(unknown) - 1} more: {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
            + ". Fix: " + (f"did you mean {close[0]!r}? " if close else "")
            + f"the keys are: {', '.join(sorted(known))}")


def _setting(config: pytest.Config, opt: Any) -> Any:
    value = config.getoption(f"cvdnn_{opt.dest}")
    if value is not None:
        return value
    raw = config.getini(opt.ini)
    if raw in (None, ""):
        return opt.default
    try:
        return opt.parse(str(raw).strip())
    except Exception as exc:  # argparse.ArgumentTypeError, SpecError
        raise pytest.UsageError(f"ini option {opt.ini} = {raw!r} is invalid: {exc}") from None


def _cache_root(config: pytest.Config, cache_dir: str | None) -> Path:
    if cache_dir:
        path = Path(cache_dir).expanduser()
        return path if path.is_absolute() else config.rootpath / path
    if getattr(config, "cache", None) is not None:
        return Path(config.cache.mkdir("cvdnn"))
    return default_user_cache()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cvdnn(model=..., onnx=None, input_spec=..., atol=..., rtol=..., srtol=..., opset=..., layout=..., engine=..., "
        "device=..., input_range=..., input_shape=...): "
        "the model and settings the cvdnn fixtures use in this test",
    )
    config.addinivalue_line("markers", "cvdnn_check: a deployment check generated by pytest-cvdnn")
    _share_cores_between_workers(config)
    _refuse_unknown_ini_keys(config)
    values = {opt.dest: _setting(config, opt) for opt in OPTIONS}
    base = _base_settings(config, values)
    bundles = _bundle_folders(config)
    cli_models = list(config.getoption("cvdnn_model") or []) + bundles
    models = cli_models or list(config.getini("cvdnn_models"))
    if base.onnx and len(models) != 1:
        raise pytest.UsageError(
            f"--cvdnn-onnx={base.onnx} needs exactly one --cvdnn-model (its Keras source); got {len(models)}"
        )
    if base.onnx:
        _refuse_onnx_without_keras(base.onnx, models[0], config.rootpath)
    _refuse_artifact_options_that_cannot_apply(base, models, config.rootpath)
    targets = _targets(config)
    report = config.getoption("cvdnn_report")
    html = config.getoption("cvdnn_html") or config.getini("cvdnn_html")
    restrict = bool(cli_models) and config.args_source != pytest.Config.ArgsSource.ARGS
    base = replace(base, protected=_protected(config, base, models))
    per_model = _per_model_settings(config, values, base, models)
    config.stash[STATE] = CvdnnState(
        base=base, models=models, make_cache=lambda: Cache(_cache_root(config, values["cache_dir"])),
        rootdir=config.rootpath, report_path=Path(report) if report else None, restrict=restrict,
        targets=targets, engines=list(values["engine"][1:]), devices=list(values["device"][1:]),
        html_path=(Path(html) if config.getoption("cvdnn_html") else config.rootpath / html) if html else None,
        per_model=per_model,
    )
    state = config.stash[STATE]
    _check_destinations(state)
    if models:
        try:
            state.cache.check_writable()
        except CvdnnError as exc:
            raise pytest.UsageError(str(exc)) from None
        if not hasattr(config, "workerinput"):  # what killed sessions left: their temp folders, half-written entries
            from .scratch import sweep

            sweep(state.cache.root)
    _validate_engines(list(values["engine"]), models)
    try:
        state.entries = _model_entries(state)
    except CvdnnError as exc:
        raise pytest.UsageError(f"--cvdnn-model: {exc}") from None
    config.pluginmanager.register(ResultsPlugin(state, config), "cvdnn-results")
    _group_models_on_workers(config, state)
    _share_the_tensorflow_helper(config, state)
    # pytest collects the models from their paths; `pytest --cvdnn-model=M` alone runs only M's checks.  The
    # paths as the user spelled them: a models/ folder that is a symbolic link (DVC, LFS, shared storage) keeps
    # its node ids (resolved, they fell outside the rootdir: "::convert") and is collected once
    state.spelled = {p: next((e.source.given for e in es if e.source.given), p) for p, es in state.entries.items()}
    paths = [str(p) for p in state.spelled.values()]
    config.args = paths if restrict else [*config.args, *(p for p in paths if p not in config.args)]


def _pyproject(config: pytest.Config) -> Path:
    inipath = config.inipath
    return inipath if inipath is not None and inipath.name == "pyproject.toml" else config.rootpath / "pyproject.toml"


def _per_model_settings(config: pytest.Config, values: dict[str, Any], base: ModelSettings,
                        models: list[str]) -> Callable[[str], ModelSettings]:
    """Each model's settings: the session's, with its ``[tool.cvdnn.models."PATTERN"]`` table of pyproject.toml
    applied under the command line (a usage error for an unknown key, a table that matches no model, or an input
    setting given project-wide to several models)."""
    from .model_table import check_tables, read_tables, values_for

    pyproject = _pyproject(config)
    given_ini = {str(k).removeprefix("cvdnn_") for k in _ini_keys(config)}
    project_wide = [k for k in given_ini if config.getoption(f"cvdnn_{'feeds' if k == 'feed' else k}", None) is None]
    try:
        tables = read_tables(pyproject)
        check_tables(tables, [m for m in models if not m.startswith(BUNDLE_PREFIX)], config.rootpath, pyproject,
                     sorted(project_wide))
    except CvdnnError as exc:
        raise pytest.UsageError(str(exc)) from None
    options = {opt.dest: opt for opt in OPTIONS}

    def settings(model: str) -> ModelSettings:
        try:
            table = values_for(tables, model, config.rootpath, pyproject)
        except CvdnnError as exc:
            raise pytest.UsageError(str(exc)) from None
        changed = dict(values)
        for dest, text in table.items():
            if config.getoption(f"cvdnn_{dest}") is not None:
                continue  # (the command line wins)
            try:
                changed[dest] = options[dest].parse(text.strip())
            except Exception as exc:  # argparse.ArgumentTypeError, SpecError
                key = "feed" if dest == "feeds" else dest
                raise pytest.UsageError(f'{pyproject}: [tool.cvdnn.models] {key} = {text!r} for {model} is invalid: '
                                        f"{exc}. Fix: write the value as {options[dest].flag} takes it"
                                        ) from None
        own = base if not table else replace(_base_settings(config, changed), protected=base.protected)
        return replace(own, model=model)

    return settings


def _refuse_onnx_without_keras(onnx: str, model: str, rootdir: Path) -> None:
    """--cvdnn-onnx is the ONNX converted from a Keras model; beside a model that is itself a deployable file it
    would never be opened (the model would be checked, the artifact to ship not): a usage error."""
    path = _model_path(model, rootdir)
    if model.startswith(BUNDLE_PREFIX) or (path is not None and path.suffix.lower() in (".onnx", ".tflite")):
        raise pytest.UsageError(
            f"--cvdnn-onnx={onnx}: the model {model} is not a Keras model, so there is nothing to convert and "
            f"--cvdnn-onnx would never be checked. Fix: check the file you will ship as the model: "
            f"--cvdnn-model={onnx} (an ONNX file is checked against onnxruntime and in cv2.dnn), or give the Keras "
            "model it was converted from as --cvdnn-model")


def _refuse_artifact_options_that_cannot_apply(base: ModelSettings, models: list[str], rootdir: Path) -> None:
    """--cvdnn-format and --cvdnn-quantize make artifacts from the model: a usage error where they cannot."""
    _refuse_formats_without_keras(base.formats, models, rootdir)
    _refuse_quantize_without_float_onnx(base.quantize, models, rootdir)


def _refuse_formats_without_keras(formats: tuple[str, ...], models: list[str], rootdir: Path) -> None:
    """--cvdnn-format=tflite/tf exports the Keras model; for an ONNX or TFLite file there is none to export."""
    extra = [f for f in formats if f != "onnx"]
    deployable = [m for m in models if (p := _model_path(m, rootdir)) is not None and p.suffix.lower() in
                  (".onnx", ".tflite")]
    if extra and deployable:
        raise pytest.UsageError(
            f"--cvdnn-format={','.join(formats)}: {deployable[0]} is not a Keras model, so there is no "
            f"{'/'.join(extra)} to export from it and those items would be skipped unseen. Fix: check the "
            f"{'/'.join(extra)} file you ship as its own --cvdnn-model (a .tflite is checked with "
            "readNetFromTFLite), or give the Keras model it comes from")


def _refuse_quantize_without_float_onnx(quantize: tuple[str, ...], models: list[str], rootdir: Path) -> None:
    """--cvdnn-quantize makes its variants from a float ONNX (the model's conversion, or the ONNX given); a bundle
    replays the artifact it holds and a .tflite file has none: refused rather than left out unseen."""
    if not quantize:
        return
    for text in models:
        path = _model_path(text, rootdir)
        what = ("a bundle replays the ONNX it holds against its stored references" if text.startswith(BUNDLE_PREFIX)
                else f"{path} is a TFLite file" if path is not None and path.suffix.lower() == ".tflite" else "")
        if what:
            raise pytest.UsageError(
                f"--cvdnn-quantize={','.join(quantize)}: {what}, so there is no float ONNX to quantize and those "
                "items would be missing unseen. Fix: quantize from the Keras or ONNX model (--cvdnn-model=...), "
                "save that session's bundle, or check the quantized file you ship as its own --cvdnn-model")


def _model_path(text: str, rootdir: Path) -> Path | None:
    """The file or folder a model text names (a factory: its module file; None where it cannot be resolved:
    the model's own items say why)."""
    if text.startswith(BUNDLE_PREFIX):
        return Path(text[len(BUNDLE_PREFIX):])
    from .sources import factory_module_file, parse_source

    try:
        source = parse_source(text, rootdir)
        return source.path if source.path is not None else factory_module_file(source)
    except Exception:  # noqa: BLE001 - reported by the collection with its own message
        return None


def _protected(config: pytest.Config, base: ModelSettings, models: list[str]) -> Any:
    """What this session must never replace: every model and input it reads, the rootdir, the working directory."""
    from .ownership import Protected

    paths = [_model_path(m, config.rootpath) for m in models]
    return Protected.of([*paths, base.onnx, base.inputs, base.images], config.rootpath,
                        config.invocation_params.dir)


def _check_destinations(state: CvdnnState) -> None:
    """Reports and bundles go only where the plugin owns the path: a usage error before any work otherwise."""
    from .ownership import check_folder_destination, check_report_path

    protected = state.base.protected
    try:
        for option, path in (("--cvdnn-report", state.report_path), ("--cvdnn-html", state.html_path)):
            if path is not None:
                check_report_path(path, option, protected)
        if state.report_path is not None and state.html_path is not None and \
                os.path.realpath(state.report_path) == os.path.realpath(state.html_path):
            raise CvdnnError(f"--cvdnn-report and --cvdnn-html name the same file {state.report_path}",
                             fix="give the JSON and the HTML report different files")
        if state.base.save_bundle is not None:
            from .bundle import bundle_folder

            root = Path(state.base.save_bundle)
            for text in state.models:
                path = _model_path(text, state.rootdir)
                check_folder_destination(bundle_folder(root, text, path), "--cvdnn-save-bundle", protected)
    except CvdnnError as exc:
        raise pytest.UsageError(str(exc)) from None


def _base_settings(config: pytest.Config, values: dict[str, Any]) -> ModelSettings:
    """The settings every model starts from: options, ini keys and defaults (a usage error for a missing folder)."""
    base = ModelSettings(
        model="",
        onnx=config.getoption("cvdnn_onnx"),
        spec=values["preprocess"][0] if values["preprocess"] else None,
        input_specs=values["preprocess"][1] if values["preprocess"] else (),
        tolerance=Tolerance(values["atol"], values["rtol"], values["srtol"]),
        opset=values["opset"],
        layout=values["layout"],
        engine=values["engine"][0],
        device=values["device"][0],
        formats=values["formats"],
        quantize=values["quantize"],
        inputs=values["inputs"],
        input_range=values["input_range"],
        input_shape=values["input_shape"],
        feeds=values["feeds"],
        images=values["images"],
        samples=values["samples"],
        memory_budget=values["memory_budget"],
        seed=values["seed"],
        ort_providers=values["ort_providers"],
        timeout=values["timeout"],
        min_agreement=values["min_agreement"],
        max_accuracy_drop=values["max_accuracy_drop"],
        training_loader=values["training_loader"],
        fix=bool(config.getoption("cvdnn_fix")),
        repro=config.getoption("cvdnn_repro"),
        save_bundle=config.getoption("cvdnn_save_bundle"),
        tf_helper=not config.getoption("cvdnn_tf_in_process"),
    )
    if base.spec is not None and base.spec.layout != base.layout and config.getoption("cvdnn_layout") is None:
        base = replace(base, layout=base.spec.layout)
    for option, folder in (("--cvdnn-inputs", base.inputs), ("--cvdnn-images", base.images)):
        if option == "--cvdnn-inputs" and folder is not None and folder.lower().endswith(".npz") \
                and Path(folder).is_file():
            continue  # (arrays by input name)
        if folder is not None and not Path(folder).is_dir():
            raise pytest.UsageError(f"{option}={folder}: no such folder (from {Path.cwd()}); pass a folder of "
                                    + ("images or .npy files, or an .npz file of arrays by input name"
                                       if option == "--cvdnn-inputs" else "PNG/JPEG photos"))
    return base


def _targets(config: pytest.Config) -> list[str]:
    """--cvdnn-target, else the ini key cvdnn_targets (each parsed: a usage error naming a bad one)."""
    targets = list(config.getoption("cvdnn_target") or [])
    if not targets:
        try:
            targets = [parse_target(t) for t in config.getini("cvdnn_targets")]
        except Exception as exc:  # argparse.ArgumentTypeError
            raise pytest.UsageError(f"ini option cvdnn_targets is invalid: {exc}") from None
    return targets


def _validate_engines(engines: list[str], models: list[str]) -> None:
    """--cvdnn-engine names an engine the installed OpenCV has: a usage error before any conversion otherwise."""
    if engines == ["auto"] or not models:
        return
    from .runners.cv2dnn import engine_error, engines as available

    try:
        problems = [p for p in map(engine_error, engines) if p]
    except ImportError:  # no cv2 here (a bundle checked elsewhere): the load items say it
        return
    if problems:
        raise pytest.UsageError(f"--cvdnn-engine={','.join(engines)}: {'; '.join(problems)}. Use one of those "
                                f"(--cvdnn-engine={'|'.join(available())}), or check another OpenCV with "
                                "--cvdnn-target=opencv==X.Y.Z")


def _group_models_on_workers(config: pytest.Config, state: CvdnnState) -> None:
    """Under `-n N` without an explicit --dist, send all checks of a model to one xdist worker.

    xdist's default (load) spreads one model's items over every worker, so each loads the model and
    its runners again; loadgroup keeps them together (items carry an xdist_group mark per model).
    """
    explicit = any(str(a).startswith(("--dist", "-d")) for a in config.invocation_params.args)
    if not state.entries or explicit:
        return
    if hasattr(config, "workerinput"):  # a worker: xdist decided loadgroup before our configure ran
        config.option.loadgroup = getattr(config.option, "numprocesses", None) is None and any(
            str(a) in ("-n", "--numprocesses") or str(a).startswith(("-n", "--numprocesses="))
            for a in config.invocation_params.args
        )
    elif getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadgroup"


def _share_the_tensorflow_helper(config: pytest.Config, state: CvdnnState) -> None:
    """Under `-n N`, start the TensorFlow helper in the controller now if a configured model is not converted.

    Its workers then share it: TensorFlow is imported once, while the workers start, instead of once
    per worker after they started (see helper.py).  A worker learns its address from its workerinput;
    without one (a warm cache, or models only named in test files) it starts a helper when it needs one.
    """
    from . import helper

    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        helper.use_server(workerinput.get("cvdnn_tf_server"))
        return
    workers = getattr(config.option, "numprocesses", None)
    if not workers or not helper.helper_wanted(state.base):
        return
    if any(entry.deployment(None, "onnx").tf_work_pending() for entries in state.entries.values()
           for entry in entries):
        try:  # its job processes work for the workers: each gets a worker's share of the cores
            helper.start_server({**_thread_share(int(workers)), **os.environ})
        except OSError:  # (no socket here: each worker starts a helper when it needs one)
            pass


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Queue the helper's work for every model not converted yet, in the order the checks will run.

    The helper then converts the next model while this process checks the current one.  Not on an
    xdist worker: it collected every model but runs only the ones the controller sends it.
    """
    state = session.config.stash.get(STATE, None)
    option = session.config.option
    if (state is None or hasattr(session.config, "workerinput") or not state.base.tf_helper
            or option.collectonly or getattr(option, "setuponly", False) or getattr(option, "setupplan", False)):
        return
    seen: set[int] = set()
    for item in session.items:
        if isinstance(item, CheckItem) and item.fmt == "onnx" and id(item.entry) not in seen:
            # (the TFLite/frozen-graph exports are asked for when needed)
            seen.add(id(item.entry))
            item.entry.deployment(None, "onnx").prepare()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """(xdist) Tell a worker where the controller's TensorFlow helper listens, if it started one."""
    from . import helper

    address = helper.server_address()
    if address is not None:
        node.workerinput["cvdnn_tf_server"] = address


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Where xdist could not put the group into the node ids, do it for our items.

    Under ``--dist loadgroup`` xdist's worker appends ``@<group>`` to each grouped item's nodeid by
    assigning ``item._nodeid``; pytest >= 9.2 derives ``nodeid`` from ``item._id`` instead, so the
    assignment is lost and the controller spreads one model's checks over every worker.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import coerce_node_id  # pytest >= 9.2
    except ImportError:
        return
    for item in items:
        if not isinstance(item, CheckItem):
            continue
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(groups)
        if groups and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = coerce_node_id(item.nodeid + suffix)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the deployments' background work (a child process the session did not collect)."""
    from . import helper

    state = session.config.stash.get(STATE, None)
    for dep in state.deployments.values() if state is not None else ():
        dep.close()
    helper.close()


BUNDLE_PREFIX = "bundle:"


def _bundle_folders(config: pytest.Config) -> list[str]:
    """--cvdnn-bundle folders as pseudo-models ("bundle:<folder>"), with a usage error if empty."""
    from .bundle import find_bundles

    found = []
    for raw in config.getoption("cvdnn_bundle") or []:
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else config.invocation_params.dir / path
        folders = find_bundles(path)
        if not folders:
            raise pytest.UsageError(
                f"--cvdnn-bundle={raw}: no bundle there (no manifest.json in it or in its sub-folders); "
                "write one with --cvdnn-save-bundle=DIR where the Keras model and TensorFlow are"
            )
        found += [BUNDLE_PREFIX + str(f.resolve()) for f in folders]
    return found


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(STATE, None)
    if state is None or not state.models:
        return None
    from .convert import tool_versions

    v = tool_versions()
    b = state.base
    return [
        f"cvdnn: opencv {v['opencv']}, onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, tf2onnx {v['tf2onnx']}, "
        f"tensorflow {v['tensorflow']}, keras {v['keras']}; opset {b.opset}, layout {b.layout}, engine {b.engine}, "
        + (f"device {b.device}, " if b.device != DEFAULT_DEVICE else "") + f"{b.tolerance}",
    ]


# -- collection ------------------------------------------------------------------------------
def _deployer(state: CvdnnState, settings: ModelSettings) -> Callable[..., Any]:
    """A model's deployment by target and artifact format (memoised in the session state)."""

    def deployment(target: str | None, fmt: str = "onnx", engine: str | None = None, device: str | None = None) -> Any:
        from .settings import PRECISIONS

        reduced = fmt in PRECISIONS  # (a reduced-precision variant of the ONNX: an ONNX deployment of its own)
        return state.deployment(replace(settings, target=target, format="onnx" if reduced else fmt,
                                        precision=fmt if reduced else None, engine=engine or settings.engine,
                                        device=device or settings.device))

    return deployment


def _model_entries(state: CvdnnState) -> dict[Path, list[ModelEntry]]:
    """Configured models by the path pytest collects them from (factories: their module file)."""
    from .checks import check_items
    from .manifest import load_manifest
    from .sources import ModelSource, factory_module_file, parse_source

    entries: dict[Path, list[ModelEntry]] = {}
    for text in state.models:
        if text.startswith(BUNDLE_PREFIX):
            folder = Path(text[len(BUNDLE_PREFIX):])
            try:
                manifest = load_manifest(folder)
            except CvdnnError as exc:
                raise pytest.UsageError(f"--cvdnn-bundle: {exc}") from None
            settings = replace(state.base, model=str(folder), bundle=str(folder))
            source = ModelSource(str(folder), "bundle", folder / "manifest.json")
            entries.setdefault((folder / "manifest.json").resolve(), []).append(
                ModelEntry(settings, source, _deployer(state, settings),
                           tuple(check_items(bool(manifest.get("has_keras")), state.targets, bundle=True,
                                             engines=tuple(state.engines), devices=tuple(state.devices))))
            )
            continue
        source = parse_source(text, state.rootdir)
        path = source.path if source.path is not None else factory_module_file(source)
        settings = state.settings_for(text)
        entries.setdefault(path.resolve(), []).append(
            ModelEntry(settings, source, _deployer(state, settings),
                       tuple(check_items(source.has_keras, state.targets, state.base.fix,
                                         state.base.save_bundle is not None, formats=state.base.formats,
                                         engines=tuple(state.engines), devices=tuple(state.devices),
                                         source_kind=source.kind,
                                         precisions=settings.quantize,
                                         images=settings.images is not None)))
        )
    return entries


def _package_as_folder(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A Python package that holds a configured model (or factory module) and no test module of its own is
    collected as a plain directory: pytest collects a ``Package`` by importing its ``__init__.py``, which often
    imports Keras (i.e. TensorFlow), and the model's checks need none of it — a warm run stays free of
    TensorFlow.  Node ids are the same; a package with test modules is left to pytest (pytest >= 8)."""
    state = parent.config.stash.get(STATE, None)
    folder_type = getattr(pytest, "Dir", None)
    if state is None or folder_type is None or not (path / "__init__.py").is_file():
        return None
    resolved = path.resolve()
    if not any(resolved in model.parents for model in state.entries):
        return None
    if any(_is_test_module(child, parent.config) for child in path.iterdir() if child.suffix == ".py"):
        return None
    return folder_type.from_parent(parent, path=path)  # type: ignore[no-any-return]


def _is_test_module(path: Path, config: pytest.Config) -> bool:
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in config.getini("python_files"))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    state = parent.config.stash.get(STATE, None)
    entries = state.entries.get(file_path.resolve()) if state is not None else None
    if not entries or state is None:
        return None
    resolved = file_path.resolve()
    spelled = state.spelled.get(resolved, file_path)  # (a collection argument: pytest collects it anyway)
    if Path(os.path.abspath(file_path)) != spelled or state.collected.setdefault(resolved, file_path) != file_path:
        return None  # the same file through another path (a symbolic link): its checks are collected once
    if file_path.suffix == ".py" and parent.session.isinitpath(file_path) \
            and not _is_test_module(file_path, parent.config):
        return None  # a factory's module that pytest would import as a Module: pytest_pycollect_makemodule
    return ModelFile.from_parent(parent, path=file_path, entries=entries)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A factory's module is a collection argument (its checks are collected there), so pytest would import it
    as a test Module — and with it Keras and TensorFlow, on every warm run.  Unless it is also a test module of
    the project (``test_*.py``), its checks take the Module's place and nothing is imported."""
    state = parent.config.stash.get(STATE, None)
    entries = state.entries.get(module_path.resolve()) if state is not None else None
    if not entries or _is_test_module(module_path, parent.config):
        return None
    return ModelFile.from_parent(parent, path=module_path, entries=entries)


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    state = parent.config.stash.get(STATE, None)
    entries = state.entries.get(path.resolve()) if state is not None else None
    if entries:
        return ModelDirectory.from_parent(parent, path=path, entries=entries)
    return _package_as_folder(path, parent)


# -- results (controller side; worker reports arrive here with their user_properties) ------
class ResultsPlugin:
    """Collects check records and writes the summary/JSON once, on the controller."""

    def __init__(self, state: CvdnnState, config: pytest.Config) -> None:
        self.state = state
        self.is_worker = hasattr(config, "workerinput")
        self.started = time.time()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = list(getattr(report, "user_properties", ()))
        for key, value in properties:
            if key == RECORD_KEY and report.when == "call":
                self.state.results.add(json.loads(value), report.nodeid)
        if not self.is_worker and any(key == RECORD_KEY for key, _ in properties):
            # (the record carries figures: JUnit XML and other report writers get its summary, not the record;
            # a worker sends the whole record on, to the controller)
            report.user_properties = [(k, v) for k, v in properties if k != RECORD_KEY] + _junit_properties(
                next(json.loads(v) for k, v in properties if k == RECORD_KEY))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not self.state.results.models:
            return
        terminalreporter.section("cvdnn deployment summary")
        for line in self.state.results.summary_lines():
            terminalreporter.write_line(line)
        repaired = [f"note: cache entry {e.get('entry', '?')}; discarded and rebuilt"
                    for e in self.state.cache.events()  # (the workers' too: they log to the shared cache)
                    if e.get("event") == "cache-entry-discarded" and e.get("time", 0) >= self.started]
        uncached = [f"note: {n}" for n in self.state.cache.repairs if "not cached" in n]
        for line in [*repaired, *uncached][:10]:
            terminalreporter.write_line(line)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:
            return
        protected = self.state.base.protected
        try:
            if self.state.report_path is not None:
                self.state.results.write_json(self.state.report_path, protected)
            if self.state.html_path is not None:
                from .html_report import write_html

                write_html(self.state.html_path, self.state.results.as_json(), protected)
        except CvdnnError as exc:  # (checked when the session started; the path changed meanwhile)
            sys.stderr.write(f"pytest-cvdnn: ERROR {exc}\n")
            session.exitstatus = pytest.ExitCode.USAGE_ERROR


# -- fixtures --------------------------------------------------------------------------------
def _marker_settings(request: pytest.FixtureRequest) -> ModelSettings:
    state = request.config.stash[STATE]
    marker = request.node.get_closest_marker("cvdnn")
    kwargs = dict(marker.kwargs) if marker else {}
    if marker and marker.args:
        kwargs.setdefault("model", marker.args[0])
    if "model" not in kwargs:
        if len(state.models) != 1:  # (pytest.fail without a traceback: the plugin's source is not the user's fault)
            pytest.fail(f"{request.node.nodeid}: which model? Use @pytest.mark.cvdnn(model='path/to/model.keras') "
                        f"(or give exactly one --cvdnn-model; {len(state.models)} configured)", pytrace=False)
        kwargs["model"] = state.models[0]
    return _validated_marker(request.node, state.settings_for(str(kwargs["model"])), kwargs)


def _validated_marker(item: pytest.Item, settings: ModelSettings, kwargs: dict[str, Any]) -> ModelSettings:
    """The settings a ``@pytest.mark.cvdnn`` marker makes, or the item fails naming the keyword (no traceback)."""
    try:
        return settings.with_marker(kwargs)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        pytest.fail(f"{item.nodeid}: {exc}", pytrace=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``@pytest.mark.cvdnn(...)`` that requests no cvdnn fixture still has its marker checked."""
    marker = item.get_closest_marker("cvdnn")
    if marker is None or isinstance(item, CheckItem) or STATE not in item.config.stash:
        return
    if not {"cvdnn_model", "input_spec", "assert_parity"} & set(getattr(item, "fixturenames", ())):
        kwargs = dict(marker.kwargs)
        kwargs.setdefault("model", marker.args[0] if marker.args else "model")
        _validated_marker(item, item.config.stash[STATE].base, kwargs)


@pytest.fixture
def input_spec(request: pytest.FixtureRequest) -> Any:
    """The InputSpec of the model under test (marker > --cvdnn-preprocess > defaults), sized to the model."""
    settings = _marker_settings(request)
    dep = request.config.stash[STATE].deployment(settings)
    try:
        return dep.spec
    except CvdnnError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def cvdnn_model(request: pytest.FixtureRequest, input_spec: Any) -> Any:
    """The prepared deployment: ``.keras_model``, ``.onnx_path``, ``.net``, ``.input_spec``, ``.run()``."""
    state = request.config.stash[STATE]
    settings = replace(_marker_settings(request), spec=input_spec)
    if settings.device != DEFAULT_DEVICE:  # (a device this machine's OpenCV lacks: the test is skipped with its answer)
        from .devices import unavailable

        why = unavailable(settings.device)
        if why:
            pytest.skip(f"cvdnn_model: device {settings.device} is not checked here: {why}")
    dep = state.deployment(settings)
    dep.prepare()  # (the TensorFlow helper, where the conversion is not cached)
    try:
        dep.require("conversion")
    except Exception as exc:  # StageSkipped wrapping the conversion error
        pytest.fail(f"cvdnn_model: {exc}", pytrace=False)
    return dep


@pytest.fixture
def assert_parity(request: pytest.FixtureRequest) -> Callable[..., ParityResult]:
    """``assert_parity(expected, obtained, inputs=None, atol=None, rtol=None, srtol=None)`` → ParityResult.

    ``expected``/``obtained`` are runner names ("keras", "onnxruntime", "cv2dnn", using the
    ``cvdnn_model`` fixture) or arrays / lists of arrays.  Raises AssertionError with the
    statistics table when they disagree.
    """

    def check(expected: Any, obtained: Any, inputs: Sequence[Any] | None = None,
              atol: float | None = None, rtol: float | None = None, srtol: float | None = None) -> ParityResult:
        __tracebackhide__ = True
        state = request.config.stash[STATE]
        uses_runner = isinstance(expected, str) or isinstance(obtained, str)
        dep = request.getfixturevalue("cvdnn_model") if uses_runner else None
        base_tol = dep.settings.tolerance if dep is not None else state.base.tolerance
        tol = Tolerance(base_tol.atol if atol is None else atol, base_tol.rtol if rtol is None else rtol,
                        base_tol.srtol if srtol is None else srtol)
        names, softmax = None, False

        def resolve(side: Any) -> tuple[list[Any], str]:
            if isinstance(side, str):
                assert dep is not None  # (a runner name: the cvdnn_model fixture was requested)
                return dep.run(side, inputs, per_sample=side == "cv2dnn"), side
            return ([side] if hasattr(side, "shape") else list(side)), "array"

        exp, exp_name = resolve(expected)
        obt, obt_name = resolve(obtained)
        if dep is not None:
            names, softmax = dep.output_names, dep.softmax_outputs
        if exp_name == obt_name:
            exp_name, obt_name = "expected", "obtained"
        result = compare(exp, obt, tol, expected_name=exp_name, obtained_name=obt_name,
                         output_names=names, softmax=softmax)
        if not result:
            text = result.format_failure()
            if dep is not None and isinstance(expected, str) and isinstance(obtained, str) and inputs is None:
                from .checks_outputs import parity_diagnosis  # (the seeded inputs: the generated item's diagnosis)

                found = parity_diagnosis(dep, expected, obtained, result)
                text = f"{found}\n\n{text}" if found else text
            raise AssertionError(text)
        return result

    return check



def _junit_properties(record: dict[str, Any]) -> list[tuple[str, str]]:
    """What a CI report (JUnit XML) keeps of a check's record: its names, verdict and whole message."""
    return [(f"cvdnn_{key}", str(record[key])) for key in ("model", "check", "target", "outcome", "message")
            if record.get(key) is not None]


# -- pytest-html: each check item's row carries its pictures and diagnosis ---------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "call" and html_plugin_writes(item.config):
        record = next((json.loads(str(v)) for k, v in item.user_properties if k == RECORD_KEY), None)
        if record is not None:
            report.extras = [*getattr(report, "extras", []), *_html_extras(record)]
    return report


def _html_extras(record: dict[str, Any]) -> list[dict[str, Any]]:
    """pytest-html's documented extras (its ``extras.html``/``extras.png`` dicts): the item's part of the
    --cvdnn-html page, then each picture on its own (pytest-html shows those as thumbnails)."""
    from .html_report import item_fragment

    try:
        from pytest_html import extras
    except ImportError:  # (another plugin registered as "html")
        return []
    check = {k: record.get(k) for k in ("outcome", "message", "seconds", "data")}
    found = [extras.html(item_fragment(record["check"], check))]
    for fig in (record.get("data") or {}).get("figures") or []:
        if fig.get("kind") == "heatmap":
            found.append(extras.png(fig["png"], fig.get("title", "heatmap")))
    return found
