"""The agreement check: the deployed pipeline against the training-side one on the user's own images, image by
image; when they disagree, the stage to blame (each stage swapped for the training side's, one at a time) and a
fix verified on the same images."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .errors import CvdnnError, StageSkipped
from .verdicts import CheckFailed, CheckResult

if TYPE_CHECKING:
    from .agreement import Agreement
    from .core import Deployment
    from .pipelines import ImageSet, Pipeline

__all__ = ["check_agreement"]

#: a chunk of images per forward (the tensors of a chunk are held at once)
CHUNK = 64
#: the interpolations a resize fix is tried with, in the order they are offered on a tie
RESIZE_FIXES = ("nearest_exact", "nearest", "linear", "area", "cubic")


def check_agreement(dep: Deployment) -> CheckResult:
    """On every image of --cvdnn-images: the class the deployed pipeline predicts is the one the training side
    predicts (and, with labels, the accuracy does not drop)."""
    from .agreement import measure
    from .pipelines import deployed_pipeline, read_image_set, training_pipeline

    n = _image_input(dep)
    images = read_image_set(Path(str(dep.settings.images)))
    declared, expected = dep.spec_for(n), dep.preprocessing_reference_spec(n)
    assumed = not dep.preprocessing_known
    if assumed:  # nothing says how the model was trained: the declared arithmetic is taken as the training side's
        expected = replace(declared, note="ASSUMED: the declared spec")
    loader = dep.settings.training_loader
    size = declared.size or expected.size or (0, 0)
    runs = _Runs(dep, n, images, size, loader)
    deployed, training = deployed_pipeline(declared), training_pipeline(expected, loader)
    train_out, dep_out = runs.outputs(training), runs.outputs(deployed)
    result = measure(train_out, dep_out, images.labels)
    settings = dep.settings
    data: dict[str, Any] = {
        **result.as_dict([images.name(k) for k in range(result.count)], images.classes),
        "deployed_pipeline": _describe(deployed), "training_pipeline": _describe(training, loader),
        "output": dep.graph.outputs[0].name,
        "min_agreement": settings.min_agreement, "max_accuracy_drop": settings.max_accuracy_drop,
        "assumed_training_arithmetic": assumed}
    normalise = ("the model's own normalisation" if expected.mode == "none" else f"{expected.mode} preprocessing"
                 if expected.mode else "the preprocessing")
    sides = (f"the deployed pipeline (cv2.imread, {_blob_call(declared)}, cv2.dnn {dep.target_label}) against the "
             f"training side ({loader.describe()}, {normalise}, Keras)")
    problems = result.problems(settings.min_agreement, settings.max_accuracy_drop)
    if not problems:
        return CheckResult(f"{result.summary()}: {sides}" + (" (the training-side arithmetic is ASSUMED to be the "
                                                             "declared spec's)" if assumed else ""), data)
    shown = result.disagreeing[:4]  # (the report shows these: only their tensors are made again)
    dep.exhibits["agreement"] = (runs.tensors(deployed, shown), runs.tensors(training, shown), result, images)
    blame = _blame(runs, deployed, training, result)
    data["stages"] = [{"stage": s, "deployed": d, "training": t, "rate": r} for s, d, t, r in blame]
    fix, fixed = _fix(runs, deployed, training, blame, declared, result.rate, settings.min_agreement)
    data["fix"] = fixed
    would_pass = "it would pass with " + " and ".join(
        ([f"--cvdnn-min-agreement={np.floor(result.rate * 1000) / 1000:g}"] if result.rate < settings.min_agreement
         else []) + ([f"--cvdnn-max-accuracy-drop={np.ceil((result.accuracy_drop or 0) * 1000) / 1000:g}"]
                     if (result.accuracy_drop or 0) > settings.max_accuracy_drop else []))
    cause = ""
    if blame and blame[0][3] > result.rate:
        stage, was, want, rate = blame[0]
        cause = (f"; the cause is the {stage} ({was} deployed, {want} on the training side): with the training "
                 f"side's {stage} the agreement is {rate * 100:.4g} %")
    raise CheckFailed(
        f"{result.headline()}, {' and '.join(problems)}{cause}; " + (f"{result.rest()}; " if result.rest() else "")
        + sides,
        fix=fix or f"make the deployed pipeline match the training side's (see the stages below); {would_pass}",
        details=_details(result, images, blame, would_pass),
        data=data)


def _image_input(dep: Deployment) -> int:
    dep.require("conversion")
    if not dep.has_keras:
        raise StageSkipped(f"{dep.label} has no Keras model: there is no training-side pipeline to agree with (check "
                           "it from its Keras source, --cvdnn-model=model.keras --cvdnn-onnx=model.onnx)")
    if len(dep.graph.inputs) != 1 or not dep.image_inputs:
        raise StageSkipped(f"{dep.label} does not take one image (inputs "
                           + ", ".join(str(i.shape) for i in dep.graph.inputs) + "): agreement is measured on "
                           "single-image classifiers")
    n = dep.image_inputs[0]
    first = dep.graph.outputs[0]
    if len(first.shape) != 2:
        raise StageSkipped(f"{dep.label}'s first output {first.name!r} has shape {first.shape}: agreement compares "
                           "the classes a classifier predicts (an output of one score per class, or one probability)")
    if dep.spec_for(n).n_channels != 3:
        raise StageSkipped(f"{dep.label} takes {dep.spec_for(n).n_channels}-channel images: agreement is measured "
                           "on colour (3-channel) images")
    return n


class _Runs:
    """The predictions of pipelines over the image set, each computed once (decoded images shared)."""

    def __init__(self, dep: Deployment, n: int, images: ImageSet, size: tuple[int, int], loader: Any) -> None:
        self.dep, self.n, self.images, self.size = dep, n, images, size
        self.loader_fn = _load_callable(loader.target) if loader.kind == "callable" else None
        self._outputs: dict[Pipeline, np.ndarray] = {}

    def tensors(self, pipeline: Pipeline, indices: Sequence[int]) -> np.ndarray:
        """The tensors ``pipeline`` feeds its graph for the images at ``indices``."""
        from .pipelines import tensors

        return tensors([self.images.files[k] for k in indices], pipeline, self.size, self.loader_fn)

    def outputs(self, pipeline: Pipeline) -> np.ndarray:
        """The classifier output (the first output, in the graph's order) of ``pipeline``'s graph on its tensors,
        a chunk of images at a time (each decoded once; only a chunk's tensors are held)."""
        if pipeline not in self._outputs:
            batch_one = self.dep.graph.inputs[0].shape[:1] == (1,)
            chunks = []
            for start in range(0, len(self.images.files), CHUNK):
                part = self.tensors(pipeline, range(start, min(start + CHUNK, len(self.images.files))))
                chunks.append(self.dep.run(pipeline.graph, [part], per_sample=batch_one and pipeline.graph != "keras")[0])
            self._outputs[pipeline] = np.concatenate(chunks)
        return self._outputs[pipeline]

    def rate(self, pipeline: Pipeline, training: Pipeline) -> float:
        from .agreement import measure

        return measure(self.outputs(training), self.outputs(pipeline)).rate


def _load_callable(target: str) -> Callable[[str], Any]:
    import importlib.util

    module_path, _, name = target.rpartition(":")
    path = Path(module_path)
    if not path.is_file():
        raise CvdnnError(f"--cvdnn-training-loader={target}: no such file {module_path}",
                         fix="give path/to/module.py:function, relative to the rootdir")
    spec = importlib.util.spec_from_file_location(f"cvdnn_training_loader_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise CvdnnError(f"--cvdnn-training-loader={target}: {module_path} cannot be imported",
                         fix="give a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise CvdnnError(f"--cvdnn-training-loader={target}: {module_path} has no function {name!r}",
                         fix=f"define def {name}(path): return an HxWx3 RGB array at the model's size")
    return fn  # type: ignore[no-any-return]


def _blame(runs: _Runs, deployed: Pipeline, training: Pipeline, result: Agreement) -> list[tuple[str, str, str, float]]:
    """(stage, deployed value, training value, agreement with that stage as on the training side) for every stage
    where the two pipelines differ, best first."""
    from .pipelines import STAGES

    found = []
    for stage in STAGES:
        was, want = getattr(deployed, stage), getattr(training, stage)
        if stage == "resize" and want == "callable":
            continue  # (the user's loader decodes, orients and resizes as one)
        if stage == "arithmetic":
            same = (was.scale, was.mean, was.std) == (want.scale, want.mean, want.std)
            if same:
                continue
        elif was == want:
            continue
        hybrid = replace(deployed, **{stage: want})
        found.append((stage, deployed.describe(stage), training.describe(stage), runs.rate(hybrid, training)))
    return sorted(found, key=lambda row: -row[3])


def _fix(runs: _Runs, deployed: Pipeline, training: Pipeline, blame: list[tuple[str, str, str, float]],
         declared: Any, measured: float, min_agreement: float) -> tuple[str, dict[str, Any] | None]:
    """The deployment code that changes the blamed stage, measured on the same images (empty when no stage's
    change helps the ``measured`` agreement)."""
    from .preprocess import cv2_call

    if not blame or blame[0][3] <= measured:
        return "", None
    stage = blame[0][0]
    if stage == "resize":
        rates = {name: runs.rate(replace(deployed, resize=f"opencv:{name}"), training) for name in RESIZE_FIXES}
        best = max(RESIZE_FIXES, key=rates.__getitem__)  # (the first of the best, in the order they are offered)
        rate = rates[best]
        from .pipelines import resize_code

        code = resize_code(declared, best)
        what = f"resize with cv2.INTER_{best.upper()} before the blob"
    elif stage == "orientation":
        rate = blame[0][3]
        code = ("img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)" if training.orientation
                == "ignore" else "img = cv2.imread(path, cv2.IMREAD_COLOR)")
        what = ("read the images without their EXIF orientation, as the training side does" if training.orientation
                == "ignore" else "apply the EXIF orientation")
    elif stage in ("colour", "arithmetic"):
        rate = blame[0][3]
        corrected = (replace(declared, swap_rb=not declared.swap_rb) if stage == "colour" else
                     replace(declared, scale=training.arithmetic.scale, mean=training.arithmetic.mean,
                             std=training.arithmetic.std))
        code = cv2_call(corrected)
        what = "swap the channels as the training side" if stage == "colour" else "use the training side's arithmetic"
    elif stage == "decode":
        rate = blame[0][3]
        code = "img = np.ascontiguousarray(np.asarray(PIL.Image.open(path).convert('RGB'))[..., ::-1])"
        what = "decode the images with PIL, as the training side does (the JPEG decoders differ)"
    else:  # the graph: cv2.dnn and Keras disagree on these tensors
        return (f"cv2.dnn and Keras predict differently on the same tensors (with Keras' graph the agreement is "
                f"{blame[0][3] * 100:.4g} %): see the parity items for the node that diverges"), None
    verified = f"(verified on these images: top-1 agreement {rate * 100:.4g} %)"
    passes = rate >= min_agreement
    return (f"{what}: {'; '.join(code.splitlines())} {verified}" + ("" if passes else "; it is still below the threshold: other stages "
                                                            "differ too (see the stages below)"),
            {"stage": stage, "code": code, "rate": rate, "passes": passes})


def _describe(pipeline: Pipeline, loader: Any = None) -> dict[str, Any]:
    return {"decode": pipeline.decode, "orientation": pipeline.orientation, "resize": pipeline.resize,
            "colour": pipeline.colour, "arithmetic": pipeline.describe("arithmetic"), "graph": pipeline.graph,
            **({"loader": loader.describe()} if loader is not None else {})}


def _blob_call(spec: Any) -> str:
    from .preprocess import cv2_call

    return cv2_call(spec).split("\n")[-1].split("  #")[0].removeprefix("blob = ")


def _details(result: Agreement, images: ImageSet, blame: Sequence[tuple[str, str, str, float]],
             would_pass: str) -> str:
    names = [images.name(k) for k in range(result.count)]

    def label(c: int) -> str:
        return images.classes[c] if 0 <= c < len(images.classes) else str(c)

    lines = [f"{would_pass}."]
    if blame:
        lines.append("agreement with one stage of the deployed pipeline replaced by the training side's:")
        lines += [f"  {stage:<12} {rate * 100:7.4g} %   (deployed: {was}; training side: {want})"
                  for stage, was, want, rate in blame]
    if result.confusion:
        lines.append("training side → deployed, images: " + ", ".join(
            f"{label(a)} → {label(b)}: {count}" for a, b, count in result.confusion[:8]))
    lines.append("images that disagree: " + ", ".join(
        f"{names[k]} ({label(result.training[k])} → {label(result.deployed[k])})" for k in result.disagreeing[:12])
        + (f" and {len(result.disagreeing) - 12} more" if len(result.disagreeing) > 12 else ""))
    return "\n".join(lines)
