"""Pictures of a check's evidence, as small JSON-ready records (PNG as base64, numbers for SVG charts).

Made in the process that ran the check (an xdist worker too) and carried with the item's record to the
controller, where html_report.py draws the page and the pytest-html extras.  Pure numpy; OpenCV (already a
dependency) colour-maps and encodes the PNGs, imported only when a picture is made.  Nothing here is needed
for a verdict: a figure that cannot be made is left out.

Kinds:
* ``heatmap``: |Δ| over an output map (dense outputs: channels folded by their maximum), colour-mapped;
* ``bars``: a vector output's values, reference against obtained, on the classes that matter (the top-k of
  each, marked);
* ``histogram``: how many values differ by how much (log10 bins) against the tolerance;
* ``images``: per photo, the blob the deployment builds, the reference tensor, and their difference;
* ``graph``: the first divergent node with the nodes that feed it and read it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["for_check", "parity_figures", "preprocessing_figures", "node_neighbours", "png_b64", "MAX_OUTPUTS"]

#: outputs drawn per parity item (the first ones; a multi-output model's report stays readable)
MAX_OUTPUTS = 3
#: the smallest side of a drawn map, in pixels (small maps are enlarged without smoothing)
MIN_SIDE = 160
#: the smallest side of a drawn photo (three per photo side by side)
PHOTO_SIDE = 96
#: classes drawn for a vector output: the top-k of the reference and of the obtained values
TOP_K = 5


def png_b64(image: np.ndarray) -> str:
    """A uint8 image (H×W grey or H×W×3 BGR) as base64 PNG text."""
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise ValueError("cv2.imencode failed")
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def _enlarged(image: np.ndarray, least: int = MIN_SIDE) -> np.ndarray:
    import cv2

    side = min(image.shape[:2])
    factor = max(1, int(np.ceil(least / max(side, 1))))
    if factor == 1:
        return image
    return cv2.resize(image, (image.shape[1] * factor, image.shape[0] * factor), interpolation=cv2.INTER_NEAREST)


#: the largest side of a drawn map: larger maps are reduced by the maximum of each block (an error stays visible)
MAX_SIDE = 512


def _shrunk(values: np.ndarray) -> np.ndarray:
    """A 2-D map no larger than MAX_SIDE per side, each pixel the maximum of the block it stands for."""
    factor = int(np.ceil(max(values.shape) / MAX_SIDE))
    if factor <= 1:
        return values
    h, w = (-(-values.shape[0] // factor)) * factor, (-(-values.shape[1] // factor)) * factor
    padded = np.zeros((h, w), values.dtype)
    padded[: values.shape[0], : values.shape[1]] = values
    blocks: np.ndarray = padded.reshape(h // factor, factor, w // factor, factor).max(axis=(1, 3))
    return blocks


def _heat(values: np.ndarray, vmax: float) -> np.ndarray:
    """A 2-D array of non-negative values → a colour-mapped BGR image (0 black .. vmax yellow)."""
    import cv2

    scaled = np.zeros(values.shape, np.uint8) if vmax <= 0 else \
        np.clip(values / vmax * 255.0, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)


def _as_map(sample: np.ndarray) -> np.ndarray | None:
    """One sample's output as a 2-D map (channels folded by their maximum), or None if it is not spatial."""
    if sample.ndim == 2 and min(sample.shape) > 1:
        return sample
    if sample.ndim == 3:
        first, *rest = sample.shape
        channels_first = first <= 4 or first < min(rest)
        spatial = rest if channels_first else list(sample.shape[:2])
        if min(spatial) > 1:
            folded: np.ndarray = sample.max(axis=0) if channels_first else sample.max(axis=2)
            return folded
    if sample.ndim > 3:
        return _as_map(sample.reshape(-1, *sample.shape[-2:]))
    return None


def _histogram(delta: np.ndarray, atol: float) -> dict[str, Any]:
    """Counts of |Δ| in log10 bins (exact zeros apart), with the tolerance to draw beside them."""
    flat = delta.ravel()
    positive = flat[flat > 0]
    zeros = int(flat.size - positive.size)
    if positive.size == 0:
        return {"kind": "histogram", "edges": [], "counts": [], "zeros": zeros, "atol": atol, "total": int(flat.size)}
    logs = np.log10(positive.astype(np.float64))
    low, high = np.floor(logs.min()), np.ceil(logs.max())
    if atol > 0:  # (the tolerance on the same axis)
        low, high = min(low, np.floor(np.log10(atol))), max(high, np.ceil(np.log10(atol)))
    high = max(high, low + 1)
    counts, edges = np.histogram(logs, bins=min(32, int(4 * (high - low))), range=(low, high))
    return {"kind": "histogram", "edges": [float(e) for e in edges], "counts": [int(c) for c in counts],
            "zeros": zeros, "atol": atol, "total": int(flat.size)}


def _bars(reference: np.ndarray, obtained: np.ndarray) -> dict[str, Any]:
    """The classes that matter of a vector output: the top-k of each side, the reference's first."""
    top_ref = [int(i) for i in np.argsort(-reference, kind="stable")[:TOP_K]]
    top_obt = [int(i) for i in np.argsort(-obtained, kind="stable")[:TOP_K]]
    classes = top_ref + [i for i in top_obt if i not in top_ref]
    def value(v: Any) -> float | None:  # (NaN/inf are said as null: JSON has no such numbers)
        return float(v) if np.isfinite(v) else None

    return {"kind": "bars", "classes": classes, "reference": [value(reference[i]) for i in classes],
            "obtained": [value(obtained[i]) for i in classes], "top_reference": top_ref, "top_obtained": top_obt}


def parity_figures(expected: Sequence[np.ndarray], obtained: Sequence[np.ndarray], names: Sequence[str],
                   atol: float, expected_name: str, obtained_name: str) -> list[dict[str, Any]]:
    """Per output (the first :data:`MAX_OUTPUTS`): where the error sits (a heatmap of sample 0 for a map, bars for
    a vector) and the |Δ| histogram of every sample against ``atol``."""
    figures: list[dict[str, Any]] = []
    # (strict=False: the outputs that line up are drawn; a count that differs is the comparison's to report)
    for name, a, b in list(zip(names, expected, obtained, strict=False))[:MAX_OUTPUTS]:
        if a.shape != b.shape or a.size == 0 or not np.issubdtype(a.dtype, np.number):
            continue
        a32, b32 = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
        delta = np.abs(a32 - b32)
        delta[~np.isfinite(delta)] = np.float32(np.finfo(np.float32).max)
        title = f"{name}: {expected_name} vs {obtained_name}"
        sample = _as_map(delta[0]) if a.ndim >= 3 else None
        if sample is not None:
            sample = _shrunk(sample)
            vmax = float(sample.max())
            figures.append({"kind": "heatmap", "output": name, "title": f"{title}, |Δ| of sample 0",
                            "png": png_b64(_enlarged(_heat(sample, vmax))), "max": vmax,
                            "shape": [int(d) for d in a.shape]})
        elif a.ndim == 2 and a.shape[1] > 1:
            figures.append({"output": name, "title": f"{title}, sample 0", **_bars(a32[0], b32[0]),
                            "expected_name": expected_name, "obtained_name": obtained_name})
        figures.append({"output": name, "title": f"{title}, |Δ| of every value", **_histogram(delta, atol)})
    return figures


def _display(tensor: np.ndarray, low: float, high: float) -> np.ndarray:
    """An NHWC sample (RGB/BGR order as the model takes it; 1 or 3 channels) as a uint8 picture on a shared
    scale, so the blob and the reference are seen with the same contrast."""
    span = max(high - low, 1e-12)
    image = np.clip((tensor.astype(np.float64) - low) / span * 255.0, 0, 255).astype(np.uint8)
    if image.shape[-1] == 1:
        return image[..., 0]
    rgb: np.ndarray = image[..., :3][..., ::-1].copy()  # (the tensor's channel order shown as RGB)
    return rgb


def preprocessing_figures(blob: np.ndarray | None, reference: np.ndarray, mistakes: Sequence[str],
                          limit: int = 3) -> list[dict[str, Any]]:
    """Per photo (the first ``limit``): the declared blob, the reference (what the model was trained on) and their
    difference, NHWC; the mistakes the check named go with them."""
    figures: list[dict[str, Any]] = []
    low, high = float(np.min(reference)), float(np.max(reference))
    if blob is not None and blob.shape == reference.shape:
        low, high = min(low, float(np.min(blob))), max(high, float(np.max(blob)))
    for k in range(min(limit, len(reference))):
        items = [{"label": "Keras reference", "png": png_b64(_enlarged(_display(reference[k], low, high),
                                                                                      PHOTO_SIDE))}]
        if blob is not None and blob.shape == reference.shape:
            delta = np.abs(blob[k].astype(np.float32) - reference[k].astype(np.float32)).max(axis=-1)
            vmax = float(delta.max())
            items.insert(0, {"label": "declared blob", "png": png_b64(_enlarged(_display(blob[k], low, high),
                                                                                          PHOTO_SIDE))})
            items.append({"label": f"|difference|, max {vmax:.3g}", "png": png_b64(_enlarged(_heat(delta, vmax),
                                                                                               PHOTO_SIDE))})
        figures.append({"kind": "images", "title": f"photo {k}", "items": items, "mistakes": list(mistakes),
                        "range": [low, high]})
    return figures


def agreement_figures(deployed: np.ndarray, training: np.ndarray, result: Any, names: Sequence[str],
                      classes: Sequence[str], limit: int = 4) -> list[dict[str, Any]]:
    """Per image that disagrees (the first ``limit``; ``deployed`` and ``training`` hold those images' tensors, in
    that order): the tensor each pipeline fed its graph (both on one scale, channels shown as RGB: a BGR tensor
    looks blue-faced) and the class each predicted."""
    def label(c: int) -> str:
        return classes[c] if 0 <= c < len(classes) else str(c)

    figures: list[dict[str, Any]] = []
    for row, k in enumerate(result.disagreeing[:min(limit, len(deployed))]):  # (the tensors: those images' only)
        low = float(min(np.min(deployed[row]), np.min(training[row])))
        high = float(max(np.max(deployed[row]), np.max(training[row])))
        items = [{"label": f"{side}: {label(cls)} ({score:.3g})",
                  "png": png_b64(_enlarged(_display(tensor, low, high), PHOTO_SIDE))}
                 for side, tensor, cls, score in (
                     ("deployed", deployed[row], result.deployed[k], result.deployed_score[k]),
                     ("training side", training[row], result.training[k], result.training_score[k]))]
        truth = f"labelled {label(result.labels[k])}" if result.labels is not None else "unlabelled"
        figures.append({"kind": "images", "title": f"{names[k]} ({truth})", "items": items, "mistakes": [],
                        "range": [low, high]})
    return figures


def node_neighbours(onnx_path: Path, node_name: str) -> dict[str, Any] | None:
    """The node, the nodes that make its inputs and those that read its outputs (name and op type)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    node = next((n for n in graph.node if n.name == node_name or node_name in n.output), None)
    if node is None:
        return None
    makers = {o: n for n in graph.node for o in n.output}
    before = [makers[i] for i in node.input if i in makers]
    after = [n for n in graph.node if set(n.input) & set(node.output)]
    return {"kind": "graph", "node": node.name, "op_type": node.op_type,
            "inputs": [[n.name, n.op_type] for n in before][:6], "outputs": [[n.name, n.op_type] for n in after][:6]}


def for_check(dep: Any, check: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures of one item: from the arrays its check left in ``dep.exhibits`` (taken, so they are not held
    longer) and the node its data names."""
    figures: list[dict[str, Any]] = []
    exhibit = dep.exhibits.pop(check, None) if check.startswith("parity[") else None
    if exhibit is not None:
        expected, obtained = check[len("parity["):-1].split("-", 1)
        exp, obt, names = exhibit
        figures += parity_figures(exp, obt, names, float(data.get("atol") or 0.0), expected, obtained)
    if check == "preprocessing":
        per_input = data.get("inputs") if isinstance(data.get("inputs"), dict) else None
        for key in sorted(k for k in list(dep.exhibits) if k.startswith("preprocessing:")):
            blob, reference = dep.exhibits.pop(key)
            found = (list(per_input.values())[0] if per_input else data) or {}
            figures += preprocessing_figures(blob, reference, found.get("diagnosis") or [])
    if check == "agreement" and "agreement" in dep.exhibits:
        deployed, training, result, images = dep.exhibits.pop("agreement")
        figures += agreement_figures(deployed, training, result, [images.name(k) for k in range(result.count)],
                                     images.classes)
    node = data.get("node") or (data.get("first_divergent") or {}).get("node")
    try:
        path = dep.onnx_path if node else None
    except Exception:  # noqa: BLE001 - no graph (the conversion failed): no neighbours to draw
        path = None
    if node and path is not None and Path(path).is_file():
        neighbours = node_neighbours(Path(path), str(node))
        if neighbours is not None:
            figures.append(neighbours)
    return figures
