"""Inputs every runner receives: seeded random images in the spec's range, or the user's files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .budget import memory_budget_bytes
from .errors import CvdnnError
from .feeds import Feed
from .folders import IMAGE_SUFFIXES, folder_files
from .spec import InputSpec

__all__ = ["random_inputs", "load_inputs", "load_named_inputs", "named_entries", "folder_files", "check_input_sizes", "memory_budget_bytes", "to_layout", "fill_spatial", "IMAGE_SUFFIXES"]

def to_layout(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Transpose a 4-D batch between NHWC and NCHW (other ranks pass through)."""
    if x.ndim != 4 or src == dst:
        return x
    axes = (0, 3, 1, 2) if (src, dst) == ("nhwc", "nchw") else (0, 2, 3, 1)
    return np.ascontiguousarray(np.transpose(x, axes))


def fill_spatial(shape: Sequence[int | None], size: tuple[int, int] | None, name: str) -> list[int | None]:
    """An NHWC shape with undefined H/W taken from the input spec's (width, height); a clear error without one."""
    shape = list(shape)
    if len(shape) == 4 and (shape[1] is None or shape[2] is None):
        if size is None:
            raise CvdnnError(
                f"the model input {name!r} has an undefined spatial size {tuple(shape)}",
                fix="give the size in the input spec, e.g. --cvdnn-preprocess='none,size=224x224' "
                "or @pytest.mark.cvdnn(input_spec=InputSpec(size=(224, 224)))",
            )
        shape[1], shape[2] = size[1], size[0]
    return shape


#: peak bytes the checks need per input value and sample, for a model whose output is as large as its input (the
#: worst case: a Relu on 1x3x2000x2000, 4 samples, measured by peak RSS): 473 bytes per value of one sample before
#: the work on compare (float64 temporaries, index arrays of n), 309 after — the samples, their NCHW
#: copies, two runners' outputs and one comparison (~45 bytes per compared value); 80 x 4 samples = 320 covers it
PEAK_BYTES_PER_VALUE = 80


def check_input_sizes(shapes: Sequence[Sequence[int]], names: Sequence[str], samples: int,
                      budget_gib: float | None) -> None:
    """Refuse, before anything is allocated, inputs with a dimension < 1 and inputs whose check tensors would
    need more than the memory budget (default: half of the RAM)."""
    for shape, name in zip(shapes, names, strict=True):
        if any(int(d) < 1 for d in shape[1:]):
            raise CvdnnError(f"the model input {name!r} has the shape {tuple(shape)}: a dimension below 1 "
                             "cannot hold a sample", fix="export the model with a positive fixed input shape")
    values = sum(math.prod(int(d) for d in shape[1:]) for shape in shapes)
    need = values * samples * PEAK_BYTES_PER_VALUE
    budget = memory_budget_bytes(budget_gib)
    if need > budget:
        biggest = max(range(len(shapes)), key=lambda k: math.prod(int(d) for d in shapes[k][1:]))
        raise CvdnnError(
            f"the model's inputs hold {values:,} values per sample (the largest: {names[biggest]!r} of shape "
            f"{tuple(shapes[biggest])}{' NHWC' if len(shapes[biggest]) == 4 else ''}): the checks would need about {need / (1 << 30):.3g} GiB ({samples} samples, "
            f"~{PEAK_BYTES_PER_VALUE * samples} bytes per value at their peak), more than the memory budget of "
            f"{budget / (1 << 30):.3g} GiB",
            fix="check the model at a smaller input size (export it with a smaller fixed input, or give a dynamic one "
            "size= in --cvdnn-preprocess), use fewer --cvdnn-samples, or raise --cvdnn-memory-budget (GiB) on a "
            "machine that has the memory",
        )


def _is_image(shape: Sequence[int | None]) -> bool:
    return len(shape) == 4 and shape[-1] in (1, 3, 4)


def _per_input(spec: InputSpec | Sequence[InputSpec], n: int) -> list[InputSpec]:
    return [spec] * n if isinstance(spec, InputSpec) else list(spec)


def random_inputs(shapes: Sequence[Sequence[int]], spec: InputSpec | Sequence[InputSpec], count: int,
                  seed: int, value_range: tuple[float, float] | None = None,
                  feeds: Sequence[Feed] | None = None) -> list[np.ndarray]:
    """``count`` samples per input (NHWC for images): random pixels 0..255 through the input's spec, so the
    values lie where the deployed blob's do.  Non-image inputs get uniform values in [-1, 1], or what their
    :class:`~pytest_cvdnn.feeds.Feed` says (dtype, range, constant).  ``value_range`` (--cvdnn-input-range)
    replaces both for float inputs: uniform values in [low, high].  The same seed gives the same arrays.
    """
    from .feeds import feed_values

    rng = np.random.default_rng(seed)
    out = []
    for k, (shape, one) in enumerate(zip(shapes, _per_input(spec, len(shapes)), strict=True)):
        full = (count, *[int(d) for d in shape[1:]])
        feed = feeds[k] if feeds is not None else None
        if feed is not None and (feed.integer or feed.constant is not None or feed.batch_axis is None
                                 or not _is_image(shape)):
            out.append(feed_values(feed, full[1:], count, rng))
        elif value_range is not None:
            out.append(rng.uniform(value_range[0], value_range[1], size=full).astype(np.float32))
        elif _is_image(shape):
            pixels = rng.integers(0, 256, size=full).astype(np.float32)
            out.append(one.normalize(pixels))
        else:
            out.append(rng.uniform(-1.0, 1.0, size=full).astype(np.float32))
    return out


def _read_npy(path: Path, dtype: Any = np.float32) -> np.ndarray:
    """An array from a .npy the user gave (never unpickled), as ``dtype`` (None: as stored); a file that is not one
    is named, with why."""
    try:
        with open(path, "rb") as fh:
            arr = np.load(fh, allow_pickle=False)
        return np.asarray(arr, dtype=dtype)
    except (OSError, ValueError, EOFError, TypeError) as exc:
        why = ("it holds Python objects (a pickle), which are never loaded" if "allow_pickle" in str(exc)
               else f"{type(exc).__name__}: {str(exc)[:200]}")
        raise CvdnnError(f"{path} cannot be read as a numeric .npy array: {why}",
                         fix="save it with np.save(path, array.astype(np.float32))") from None


def _read_image(path: Path, spec: InputSpec, width: int, height: int, channels: int) -> np.ndarray:
    import cv2

    from .budget import check_image_budget

    check_image_budget(path, "--cvdnn-inputs")

    img = cv2.imread(str(path), cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise CvdnnError(f"{path} could not be read as an image", fix="remove it from --cvdnn-inputs or convert it to PNG/JPEG")
    interp = {
        "bilinear": cv2.INTER_LINEAR,
        "nearest": cv2.INTER_NEAREST,
        "bicubic": cv2.INTER_CUBIC,
        "area": cv2.INTER_AREA,
    }[spec.interpolation]
    img = cv2.resize(img, (width, height), interpolation=interp)
    if img.ndim == 2:
        img = img[..., None]
    elif spec.swap_rb:  # imread gives BGR; the spec says whether the model wants it swapped
        img = img[..., ::-1]
    return spec.normalize(img[None].astype(np.float32))


def load_inputs(folder: Path, shapes: Sequence[Sequence[int]], spec: InputSpec | Sequence[InputSpec],
                limit: int = 16) -> list[np.ndarray]:
    """Images (resized + normalised by the spec) or ``.npy`` tensors (NHWC) from a folder."""
    spec = _per_input(spec, len(shapes))[0]
    folder = Path(folder)
    if not folder.is_dir():
        raise CvdnnError(f"--cvdnn-inputs={folder} is not a folder", fix="pass a folder of images or .npy files")
    files = folder_files(folder, IMAGE_SUFFIXES + (".npy",), "--cvdnn-inputs")[:limit]
    if not files:
        raise CvdnnError(
            f"--cvdnn-inputs={folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) or .npy files",
            fix="add some, or drop the option to use seeded random inputs",
        )
    if len(shapes) != 1:
        raise CvdnnError(
            f"--cvdnn-inputs works for single-input models; this one has {len(shapes)} inputs",
            fix="pass an .npz file of arrays by input name instead (np.savez('inputs.npz', **{name: array})), or a "
            "folder with NAME.npy (the whole array) or NAME/ (one .npy per sample) for each input, or drop the option "
            "(seeded random inputs are used)",
        )
    shape = [int(d) for d in shapes[0]]
    samples = []
    for path in files:
        if path.suffix.lower() == ".npy":
            arr = _read_npy(path)
            if arr.shape == tuple(shape[1:]):
                arr = arr[None]
            if arr.ndim and arr.shape[0] == 0:
                raise CvdnnError(f"{path} holds no sample (its batch dimension is 0: shape {arr.shape})",
                                 fix="save at least one sample, or remove the file from --cvdnn-inputs")
            if arr.shape[1:] != tuple(shape[1:]):
                raise CvdnnError(
                    f"{path} has shape {arr.shape} but the model input is {tuple(shape)} (NHWC)",
                    fix="save tensors in the Keras layout with the model's size",
                )
            samples.append(arr)
        else:
            if not _is_image(shape):
                raise CvdnnError(f"{path} is an image but the model input {tuple(shape)} is not an image",
                                 fix="use .npy files for non-image inputs")
            samples.append(_read_image(path, spec, shape[2], shape[1], shape[3]))
    return [np.concatenate(samples, axis=0)]


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise CvdnnError(f"--cvdnn-inputs={path} cannot be read as an .npz of arrays: {type(exc).__name__}: "
                         f"{str(exc)[:200]}", fix="save it with np.savez(path, **{input_name: array})") from None


def file_name_of(input_name: str) -> str:
    """The file (or folder) name that holds an input's arrays in a folder of named inputs (``:`` and ``/`` of a
    tensor name such as ``serving_default_x:0`` cannot be part of a file name)."""
    return input_name.replace("/", "_").replace(":", "_")


def named_entries(folder: Path, names: Sequence[str]) -> dict[str, Path]:
    """The entries of ``folder`` named after a model input: ``NAME.npy`` (the whole array) or ``NAME/`` (one
    sample per ``.npy``); empty when the folder is not laid out by input name."""
    found: dict[str, Path] = {}
    for name in names:
        for candidate in dict.fromkeys((name, file_name_of(name))):
            if "/" in candidate or name in found:
                continue
            if (folder / f"{candidate}.npy").exists():
                found[name] = folder / f"{candidate}.npy"
            elif (folder / candidate).is_dir():
                found[name] = folder / candidate
    return found


def _folder_arrays(folder: Path, feeds: Sequence[Feed]) -> dict[str, np.ndarray]:
    """The arrays of a folder laid out by input name: ``NAME.npy`` holds the input as the runtime is fed it,
    ``NAME/`` one ``.npy`` per sample, stacked in file-name order on the input's batch axis."""
    folder_files(folder, (".npy",), "--cvdnn-inputs")  # (refuses a pipe or a device named *.npy)
    entries = named_entries(folder, [f.name for f in feeds])
    arrays: dict[str, np.ndarray] = {}
    for feed in feeds:
        entry = entries.get(feed.name)
        if entry is None:
            continue
        if entry.suffix == ".npy":
            arrays[feed.name] = _read_npy(entry, None)
            continue
        if feed.batch_axis is None:
            raise CvdnnError(f"--cvdnn-inputs={folder}: input {feed.name!r} has no batch axis, so its folder "
                             f"{entry.name}/ cannot hold one sample per file",
                             fix=f"save its one value as {entry.name}.npy instead")
        files = folder_files(entry, (".npy",), "--cvdnn-inputs")
        if not files:
            raise CvdnnError(f"--cvdnn-inputs={folder}: the folder {entry.name}/ of input {feed.name!r} holds no "
                             ".npy file", fix="save one sample per file in it with np.save, or remove the folder")
        samples = [_read_npy(f, None) for f in files]
        if len({(x.shape, x.dtype.str) for x in samples}) > 1:
            raise CvdnnError(f"--cvdnn-inputs={folder}: the samples of input {feed.name!r} differ in shape or dtype ("
                             + ", ".join(f"{f.name} {x.shape} {x.dtype}" for f, x in zip(files, samples)) + ")",
                             fix="save every sample of an input with the same shape and dtype")
        if samples[0].ndim < feed.batch_axis:
            raise CvdnnError(f"--cvdnn-inputs={folder}: the samples of input {feed.name!r} have shape "
                             f"{samples[0].shape}; the input holds its samples on axis {feed.batch_axis}",
                             fix="save each sample as the model is fed it, without its batch axis")
        arrays[feed.name] = np.stack(samples, axis=feed.batch_axis)
    return arrays


def load_named_inputs(path: Path, feeds: Sequence[Feed], shapes: Sequence[Sequence[int]],
                      layouts: Sequence[str]) -> list[np.ndarray]:
    """The arrays of an ``.npz`` keyed by input name (or of a folder laid out by input name), each as the runtime is fed it (the graph's layout, its batch
    axis, a scalar as a scalar), made sample-major like every input of the checks.  ``shapes``: the checks'
    sample-major shapes (batch 1), to check each array against."""
    names = [f.name for f in feeds]
    arrays = _folder_arrays(path, feeds) if path.is_dir() else _npz_arrays(path)
    missing, extra = [n for n in names if n not in arrays], sorted(set(arrays) - set(names))
    if missing or extra:
        raise CvdnnError(f"--cvdnn-inputs={path}: " + "; ".join(
            ([f"no array for input(s) {', '.join(map(repr, missing))}"] if missing else [])
            + ([f"array(s) {', '.join(map(repr, extra))} name no input"] if extra else [])),
            fix=f"save one array per model input, named after it: {', '.join(map(repr, names))}")
    out, counts = [], set()
    for feed, shape, layout in zip(feeds, shapes, layouts, strict=True):
        x = np.asarray(arrays[feed.name])
        if x.dtype.kind not in "biuf":
            raise CvdnnError(f"--cvdnn-inputs={path}: array {feed.name!r} holds {x.dtype} values",
                             fix=f"save it as {feed.dtype}")
        if np.dtype(feed.dtype).kind in "iub" and x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
            raise CvdnnError(f"--cvdnn-inputs={path}: array {feed.name!r} holds fractions; the input is {feed.dtype}",
                             fix=f"save the values the model takes, as {feed.dtype}")
        if feed.batch_axis is None:
            x = x[None]
        else:
            if x.ndim <= feed.batch_axis:
                raise CvdnnError(f"--cvdnn-inputs={path}: array {feed.name!r} has shape {x.shape}; the input holds "
                                 f"its samples on axis {feed.batch_axis}",
                                 fix="save the array as the model is fed it (batch axis included)")
            x = np.moveaxis(x, feed.batch_axis, 0)
            counts.add(x.shape[0])
        if x.ndim == 4 and layout == "nchw":
            x = to_layout(x, "nchw", "nhwc")
        want = tuple(int(d) for d in shape[1:])
        if x.shape[1:] != want:
            raise CvdnnError(f"--cvdnn-inputs={path}: array {feed.name!r} has shape {arrays[feed.name].shape}, which "
                             f"is not the input's {tuple(shape)} (sample-major{', NHWC' if len(shape) == 4 else ''})",
                             fix="save the array as the model is fed it, at the size the checks use")
        out.append(np.ascontiguousarray(x, dtype=np.dtype(feed.dtype)))
    if len(counts) > 1 or 0 in counts:
        raise CvdnnError(f"--cvdnn-inputs={path}: the arrays hold different numbers of samples ({sorted(counts)})",
                         fix="save the same number of samples for every batched input")
    count = counts.pop() if counts else 1
    return [np.repeat(x, count, axis=0) if feed.batch_axis is None else x for x, feed in zip(out, feeds, strict=True)]
