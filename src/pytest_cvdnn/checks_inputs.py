"""The checks of what the deployment feeds: the input spec's blob fits the model, and equals what Keras feeds."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .compare import Tolerance, compare, compare_arrays
from .core import Deployment
from .errors import StageSkipped
from .spec import InputSpec
from .verdicts import CheckFailed, CheckResult, shape_text

__all__ = ["check_input_spec", "check_preprocessing"]


def check_input_spec(dep: Deployment) -> CheckResult:
    """Each input's spec builds a blob of the model input's shape, layout and dtype that cv2.dnn accepts."""
    dep.require("cv2net")
    results = [_input_spec_one(dep, n) for n in range(len(dep.graph.inputs))]
    if len(results) == 1:
        return results[0]
    return CheckResult("; ".join(r.message for r in results), {"inputs": [r.data for r in results]})


def _input_spec_one(dep: Deployment, n: int) -> CheckResult:
    from .preprocess import cv2_call, make_blob

    spec = dep.spec_for(n)
    graph = dep.graph
    info, layout = graph.inputs[n], dep.onnx_layouts[n]
    data: dict[str, Any] = {"spec": spec.as_dict(), "expected": info.as_dict() | {"layout": layout}}
    if len(info.shape) != 4 or n not in dep.image_inputs:
        feed = dep.feeds[n]
        data["feed"] = {"dtype": feed.dtype, "batch_axis": feed.batch_axis, "low": feed.low, "high": feed.high,
                        "constant": feed.constant, "why": feed.why}
        return CheckResult(f"non-image input {info.name!r} {shape_text(info.shape)}: no blob to check; fed "
                           f"{feed.describe()}, set with net.setInput(x, {info.name!r})"
                           + (" (4-D, but not 1, 3 or 4 channels)" if len(info.shape) == 4 else ""), data)
    height, width = dep.input_shapes()[n][1:3]
    image = np.random.default_rng(dep.settings.seed).integers(0, 256, (height + 7, width + 5, 3), dtype=np.uint8)
    blob = make_blob([image], spec)
    code = cv2_call(spec)
    data.update(blob_shape=list(blob.shape), blob_dtype=str(blob.dtype), code=code)
    want = info.shape
    wrong = _blob_misfit(dep, n, spec, blob, data)
    if wrong is not None:
        raise wrong
    _blob_forward(dep, n, blob, data)
    return CheckResult(f"blob {tuple(blob.shape)} {blob.dtype} {spec.layout.upper()} fits {info.name!r} "
                       f"{shape_text(want)}; deployment code: {code}", data)


def _blob_misfit(dep: Deployment, n: int, spec: InputSpec, blob: np.ndarray, data: dict[str, Any]) -> CheckFailed | None:
    """What is wrong with the spec's blob for graph input ``n``: its layout, channels, size or dtype (None: it fits)."""
    info, layout = dep.graph.inputs[n], dep.onnx_layouts[n]
    want = info.shape
    if layout != spec.layout:
        nhwc = layout == "nhwc"
        return CheckFailed(
            f"the model {dep.onnx_path.name} expects {shape_text(want)} {layout.upper()} but the spec's blob is "
            f"{tuple(blob.shape)} {spec.layout.upper()} (input {info.name!r})",
            fix=(
                "build the blob with cv2.dnn.blobFromImageWithParams(img, Image2BlobParams(..., "
                "datalayout=DNN_LAYOUT_NHWC)) or convert with --cvdnn-layout=nchw"
                if nhwc
                else "use layout=nchw in the input spec (what blobFromImage gives) or convert with --cvdnn-layout=nhwc"
            ),
            data=data,
        )
    # (the ranks may differ: said below)
    bad = [k for k, (b, w) in enumerate(zip(blob.shape[1:], want[1:], strict=False), start=1) if w is not None and b != w]
    axis = 1 if layout == "nchw" else 3
    if len(blob.shape) == len(want) and axis in bad:
        channels = want[axis]
        how = {1: "gray: cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) or cv2.imread(path, cv2.IMREAD_GRAYSCALE)",
               3: "colour: cv2.imread(path, cv2.IMREAD_COLOR)",
               4: "BGRA: cv2.imread(path, cv2.IMREAD_UNCHANGED) of a PNG with alpha"}.get(channels or 0, "")
        return CheckFailed(
            f"the spec's blob {tuple(blob.shape)} has {blob.shape[axis]} channel(s) but the model input {info.name!r} "
            f"{shape_text(want)} ({layout.upper()}) takes {channels}; spec: {spec.describe()}",
            fix=(f"set channels={channels} in the input spec (or leave it out: it is taken from the model) and feed "
                 f"the image {how}" if how else f"the input takes {channels} channels: feed a tensor, not an image blob"),
            data=data,
        )
    if bad or len(blob.shape) != len(want):
        return CheckFailed(
            f"the spec's blob {tuple(blob.shape)} does not fit the model input {info.name!r} {shape_text(want)} "
            f"({layout.upper()}); spec: {spec.describe()}",
            fix=f"set size=({want[3] if layout == 'nchw' else want[2]}, {want[2] if layout == 'nchw' else want[1]}) "
            "in the input spec",
            data=data,
        )
    if info.dtype != str(blob.dtype):
        return CheckFailed(f"the model input {info.name!r} is {info.dtype} but the blob is {blob.dtype}",
                           fix="use ddepth=cv2.CV_32F (float32) for the blob", data=data)
    return None


def _blob_forward(dep: Deployment, n: int, blob: np.ndarray, data: dict[str, Any]) -> None:
    """cv2.dnn takes the blob as graph input ``n`` (CheckFailed with OpenCV's words if it does not)."""
    from .runners.cv2dnn import opencv_error_line

    first = [x[:1] for x in dep.inputs]
    feeds = dep.to_onnx_inputs(first)
    same = feeds[n].shape == blob.shape and feeds[n].dtype == blob.dtype
    feeds[n] = blob  # the other inputs (if any) keep their sample values
    try:
        if same:  # cv2.dnn takes or rejects a blob by its shape and type: sample 0's forward (shared) says it
            dep.run("cv2dnn", first)
        else:
            dep.cv2net.infer(feeds)
    except Exception as exc:  # noqa: BLE001 - cv2.error
        raise CheckFailed(
            f"cv2.dnn rejects the spec's blob {tuple(blob.shape)}: {opencv_error_line(exc)}",
            fix="make the blob match the model input " + shape_text(dep.graph.inputs[n].shape), details=str(exc),
            data=data,
        ) from exc


def check_preprocessing(dep: Deployment) -> CheckResult:
    """The blob the deployment builds from real photos equals what Keras feeds the model."""
    dep.require("conversion")
    if not dep.has_keras:
        raise StageSkipped(
            f"{dep.label} is an ONNX model: the preprocessing it expects is unknown; check it from its Keras "
            "source (--cvdnn-model=model.keras --cvdnn-onnx=model.onnx)"
        )
    images = dep.image_inputs
    if not images:
        raise StageSkipped(f"{dep.label} has no image input (inputs "
                           + ", ".join(shape_text(i.shape) for i in dep.graph.inputs) + "): no photos to preprocess")
    if len(images) == 1:
        return _preprocessing_one(dep, images[0])
    names = [i.name for i in dep.graph.inputs]
    results, failures = [], []
    for n in images:
        try:
            results.append(_preprocessing_one(dep, n))
        except CheckFailed as exc:
            failures.append((names[n], exc))
    if failures:
        raise CheckFailed("; ".join(f"input {name!r}: {exc.message}" for name, exc in failures),
                          fix="; ".join(f"input {name!r}: {exc.fix}" for name, exc in failures),
                          details="\n\n".join(exc.details or "" for _, exc in failures),
                          data={"inputs": {name: exc.data for name, exc in failures}})
    return CheckResult("; ".join(f"input {names[n]!r}: {r.message}" for n, r in zip(images, results, strict=True)),
                       {"inputs": {names[n]: r.data for n, r in zip(images, results, strict=True)}})


def _preprocessing_unknown(dep: Deployment, n: int) -> StageSkipped:
    """Nothing independent to compare the blob of input ``n`` with: not a pass."""
    what = (f"the declared spec ({dep.spec_for(n).describe()}) is used as given" if dep.declared_for(n)
            else "the checks assumed raw 0..255 RGB pixels")
    return StageSkipped(
        f"cannot verify the blob: the preprocessing {dep.keras_meta['name']!r} expects cannot be derived (it is not a "
        f"keras.applications model and has no Rescaling/Normalization layer at its input); {what}. Declare "
        "the preprocessing the model was trained with in the model (a Rescaling layer) or check your spec "
        "against the training pipeline; --cvdnn-input-range sets the range of the check inputs"
    )


@dataclass(frozen=True)
class _BlobMatch:
    ok: bool
    stats: Any  # compare.ArrayStats of the blob against Keras' arithmetic on the same pixels
    pixels: float  # pixel levels against Keras' own resize
    blob: np.ndarray  # (NHWC)


@dataclass
class _BlobJudge:
    """Does a spec's blob of the photos equal Keras' reference?  The blob's own tolerances (pixels, not the parity
    outputs'): the arithmetic on the same pixels to ARITHMETIC_TOL of the tensor's magnitude, and the whole
    pipeline, resize included, to a pixel level."""

    photos: list[np.ndarray]
    ref: np.ndarray  # Keras' arithmetic on OpenCV's resized pixels
    keras_resized: np.ndarray  # and on Keras' own resize
    expected: InputSpec

    def match(self, spec: InputSpec) -> _BlobMatch | None:
        """None where the blob's geometry (layout, size, channels) cannot be the model's."""
        from . import preprocess as pp

        want = self.expected
        if (spec.layout, spec.size, spec.n_channels) != (want.layout, want.size, want.n_channels):
            return None
        blob = pp.to_nhwc(spec.blob(self.photos), spec.layout)
        magnitude = max(1.0, float(np.abs(self.ref).max()))
        arithmetic = Tolerance(atol=pp.ARITHMETIC_TOL * magnitude, rtol=0.0, srtol=pp.ARITHMETIC_TOL)
        stats = compare_arrays(self.ref, blob, arithmetic, name="blob")
        pixels = pp.pixel_error(blob, self.keras_resized, want)
        return _BlobMatch(stats.ok and pixels <= pp.pixel_limit(want), stats, pixels, blob)

    def accepts(self, spec: InputSpec) -> bool:
        found = self.match(spec)
        return found is not None and found.ok


def _preprocessing_one(dep: Deployment, n: int) -> CheckResult:
    """The preprocessing check of image input ``n``."""
    from . import preprocess as pp

    if not dep.preprocessing_known:
        raise _preprocessing_unknown(dep, n)
    declared, expected = dep.spec_for(n), dep.preprocessing_reference_spec(n)
    photos = dep.photos()
    judge = _BlobJudge(photos, dep.reference_tensor(photos, expected), dep.reference_tensor(photos, expected, "keras"),
                       expected)
    data: dict[str, Any] = {
        "declared": declared.as_dict(), "expected": expected.as_dict(), "expected_note": expected.note,
        "photos": len(photos), "method": pp.blob_method(declared), "code": pp.cv2_call(declared),
    }
    found = judge.match(declared)
    if found is not None:
        dep.exhibits[f"preprocessing:{n}"] = (found.blob, judge.ref)
        data["tensor"], data["keras_resize_pixels"] = found.stats.as_dict(), found.pixels
    effect = _preprocessing_effect(dep, declared, photos, judge.ref, n)
    data["effect"] = effect.as_dict() if effect is not None else None
    notes = _resize_note(dep, expected, photos, judge.ref, data, n)
    if found is not None and found.ok:
        return CheckResult(
            f"the blob equals Keras' reference ({expected.note or expected.describe()}) on {len(photos)} photos: "
            f"max |Δ| {found.stats.max_abs:.3g} (mean {found.stats.mean_abs:.3g}) against preprocess_input on the "
            f"same resized pixels, {found.pixels:.2f} pixel levels against Keras' own resize (OpenCV rounds to "
            f"uint8; limit {pp.pixel_limit(expected):g})"
            + (f"; cv2.dnn(blob) vs the model on Keras' tensor: {effect.summary_line()}" if effect is not None else "")
            + f"; deployment code: {pp.cv2_call(declared)}" + notes,
            data,
        )
    raise _preprocessing_failure(dep, judge, declared, found, effect, data)


def _diagnosed(judge: _BlobJudge, declared: InputSpec, model: str) -> tuple[list[Any], InputSpec]:
    """The usual mistakes whose correction makes the blob match (one, else all of them together), and the
    corrected spec (the declared one where none does)."""
    from . import preprocess as pp

    mistakes = pp.candidate_mistakes(declared, judge.expected, model)
    confirmed = [m for m in mistakes if judge.accepts(m.corrected)]
    if confirmed:
        return confirmed, confirmed[0].corrected
    if len(mistakes) > 1:  # several mistakes at once: all fixes together
        combined = declared
        for m in mistakes:
            combined = replace(combined, **{k: getattr(m.corrected, k) for k in _changed(declared, m.corrected)})
        if judge.accepts(combined):
            return mistakes, combined
    return [], declared


def _preprocessing_failure(dep: Deployment, judge: _BlobJudge, declared: InputSpec, found: _BlobMatch | None,
                           effect: Any, data: dict[str, Any]) -> CheckFailed:
    """The blob differs: the mistakes that explain it and the corrected code, or the difference alone."""
    from . import preprocess as pp

    expected = judge.expected
    confirmed, corrected = _diagnosed(judge, declared, dep.keras_meta["name"])
    data["diagnosis"] = [m.name for m in confirmed]
    data["corrected_code"] = pp.cv2_call(corrected) if confirmed else None
    tensor = (f"the blob differs from Keras' reference by max |Δ| {found.stats.max_abs:.3g} (mean "
              f"{found.stats.mean_abs:.3g}; {found.pixels:.3g} pixel levels)"
              if found is not None else f"the blob {declared.size} {declared.n_channels}-channel "
              f"{declared.layout.upper()} does not fit the model input {expected.size} {expected.n_channels}-channel "
              f"{expected.layout.upper()}")
    outputs = f"; the model's outputs move by max |Δ| {effect.max_abs:.3g}{_top1_text(effect)}" if effect is not None else ""
    if confirmed:
        return CheckFailed(
            "; ".join(m.message for m in confirmed) + f" ({tensor}{outputs})",
            fix=f"{pp.cv2_call(corrected)}",
            details=f"declared: {declared.describe()}\nexpected: {expected.describe()}\n  because {expected.note}",
            data=data,
        )
    return CheckFailed(
        f"{tensor}{outputs}; no single usual mistake explains it (declared: {declared.describe()}; "
        f"expected: {expected.describe()})",
        fix="compare your preprocessing with the model's preprocess_input step by step",
        data=data,
    )


def _changed(a: InputSpec, b: InputSpec) -> list[str]:
    return [k for k in ("swap_rb", "scale", "mean", "std", "layout", "size", "crop", "interpolation")
            if getattr(a, k) != getattr(b, k)]


def _top1_text(result: Any) -> str:
    from .compare import top1_text

    text = top1_text([o.as_dict() for o in result.outputs])
    return f", top-1 agreement {text}" if text else ""


def _feeding(dep: Deployment, n: int, tensor: np.ndarray) -> list[np.ndarray]:
    """The model's inputs with ``tensor`` at input ``n``; the other inputs repeat their first sample."""
    return [tensor if k == n else np.repeat(x[:1], len(tensor), axis=0) for k, x in enumerate(dep.inputs)]


def _preprocessing_effect(dep: Deployment, declared: InputSpec, photos: list[np.ndarray], ref: np.ndarray,
                          n: int = 0) -> Any:
    """cv2.dnn on the deployment's blob vs Keras on the reference tensor (None if the blob cannot run)."""
    from . import preprocess as pp

    if declared.layout != dep.onnx_layouts[n] or declared.size != dep.expected_spec_for(n).size:
        return None
    try:
        dep.require("cv2net")
    except StageSkipped:
        return None
    blob_nhwc = pp.to_nhwc(declared.blob(photos), declared.layout)
    # the model on Keras' tensor: onnxruntime where it runs this artifact (the same graph as cv2.dnn, and far
    # faster than an eager Keras pass; parity[keras-onnxruntime] holds it to Keras), else Keras itself
    reference = "onnxruntime" if "onnxruntime" in dep.runners else "keras"
    try:
        dep.require_runner(reference)
    except StageSkipped:
        reference = "keras"
    exp = dep.run(reference, _feeding(dep, n, ref))
    obt = dep.run("cv2dnn", _feeding(dep, n, blob_nhwc), per_sample=True)
    return compare(exp, obt, dep.settings.tolerance, expected_name=f"{reference}(reference)",
                   obtained_name="cv2dnn(blob)", output_names=dep.output_names, softmax=dep.softmax_outputs)


def _resize_note(dep: Deployment, expected: InputSpec, photos: list[np.ndarray], ref: np.ndarray,
                 data: dict[str, Any], n: int = 0) -> str:
    """How much a keras.utils.load_img pipeline (PIL nearest) would move the outputs vs OpenCV bilinear."""
    from . import preprocess as pp

    if expected.interpolation != "bilinear" or expected.crop != "none":
        return ""
    try:
        pil = pp.pil_nearest_tensor(photos, expected)
        a = dep.run("onnxruntime", _feeding(dep, n, ref))
        b = dep.run("onnxruntime", _feeding(dep, n, pil))
    except (StageSkipped, ImportError):  # e.g. a bundle replayed without PIL/onnxruntime
        return ""
    moved = compare(a, b, dep.settings.tolerance, output_names=dep.output_names, softmax=dep.softmax_outputs)
    data["resize_note"] = {"tensor_max_abs": float(np.abs(ref - pil).max()), "outputs": moved.as_dict()}
    return (f"; note: a training pipeline that loads images with keras.utils.load_img (PIL, nearest) feeds tensors "
            f"that differ from OpenCV's bilinear resize by max {np.abs(ref - pil).max():.3g} and move the outputs "
            f"by max |Δ| {moved.max_abs:.3g}{_top1_text(moved)}")
