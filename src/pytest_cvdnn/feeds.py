"""How each model input is fed, free of pytest, TensorFlow and cv2: its dtype, the axis that holds the samples
(a recurrent state batched on axis 1, a scalar sample rate with none), and the values it gets.

The checks hold every input sample-major (the samples on axis 0, a per-sample copy of an input that has no batch
axis); :func:`to_graph` makes the array a runtime is fed, :func:`from_graph` brings an output back.
"""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import CvdnnError, StageSkipped

__all__ = ["Feed", "FeedDecl", "parse_feeds", "static_shapes", "batch_axes", "output_batch_axes", "to_graph", "from_graph",
           "feed_values", "INTEGER_RANGE"]

#: the values an integer input gets when nothing tells its valid range (bytes): declare one with --cvdnn-feed
INTEGER_RANGE = (0, 255)
#: the largest magnitude a declared value or range may have
MAX_VALUE = 1e9


@dataclass(frozen=True)
class FeedDecl:
    """What a user declared for one input (``--cvdnn-feed``): a constant, a range, the batch axis."""

    constant: float | None = None
    low: float | None = None
    high: float | None = None
    batch_axis: int | None | str = "auto"  # "auto": derived from the graph; None: no batch axis


@dataclass(frozen=True)
class Feed:
    """How one input is fed."""

    name: str
    dtype: str  # the numpy dtype the runtimes are fed
    batch_axis: int | None  # the graph input's axis that holds the samples; None: one value for every sample
    low: float
    high: float
    constant: float | None = None
    why: str = ""  # where the values come from, said with the verdicts

    @property
    def integer(self) -> bool:
        return np.dtype(self.dtype).kind in "iub"

    def describe(self) -> str:
        values = (f"= {self.constant:g}" if self.constant is not None
                  else f"in [{self.low:g}, {self.high:g}]")
        axis = "no batch axis" if self.batch_axis is None else f"batch axis {self.batch_axis}"
        return f"{self.name!r} {self.dtype} {values} ({axis}{'; ' + self.why if self.why else ''})"


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > MAX_VALUE:
        raise argparse.ArgumentTypeError(f"{what}: {text!r} must be finite and within ±{MAX_VALUE:g}")
    return value


def parse_feeds(value: Any) -> tuple[tuple[str, FeedDecl], ...]:
    """``sr=16000;state:batch_axis=1,range=-1..1;tokens:range=0..999`` -> per-input declarations (a mapping
    ``{"sr": 16000, "state": {"batch_axis": 1}}`` too, the marker's form)."""
    if isinstance(value, Mapping):
        out: list[tuple[str, FeedDecl]] = []
        for name, v in value.items():
            text = (f"{name}={v}" if isinstance(v, (int, float)) else
                    f"{name}:" + ",".join(f"{k}={'..'.join(map(str, x)) if isinstance(x, (tuple, list)) else x}"
                                          for k, x in dict(v).items()))
            out.extend(parse_feeds(text))
        return tuple(out)
    found: dict[str, FeedDecl] = {}
    for part in (p.strip() for p in str(value).split(";")):
        if not part:
            continue
        m = re.fullmatch(r"([^:=\s]+)\s*=\s*(\S+)", part)
        if m:  # name=constant
            found[m.group(1)] = FeedDecl(constant=_number(m.group(2), m.group(1)))
            continue
        name, sep, rest = part.partition(":")
        if not sep or not name.strip() or not rest.strip():
            raise argparse.ArgumentTypeError(
                f"{part!r}: write NAME=VALUE (a constant) or NAME:key=value,... with range=LOW..HIGH, "
                "batch_axis=K or batch_axis=none, value=X")
        decl: dict[str, Any] = {}
        for item in rest.split(","):
            key, eq, val = (s.strip() for s in item.partition("="))
            if not eq:
                raise argparse.ArgumentTypeError(f"{part!r}: {item!r} is not key=value")
            if key == "range":
                lo, _, hi = val.partition("..")
                decl["low"], decl["high"] = _number(lo, f"{name} range"), _number(hi, f"{name} range")
                if not decl["low"] < decl["high"]:
                    raise argparse.ArgumentTypeError(f"{part!r}: the range needs LOW < HIGH")
            elif key == "value":
                decl["constant"] = _number(val, name)
            elif key == "batch_axis":
                if val.lower() == "none":
                    decl["batch_axis"] = None
                elif val.isdigit():
                    decl["batch_axis"] = int(val)
                else:
                    raise argparse.ArgumentTypeError(f"{part!r}: batch_axis is an axis number or none")
            else:
                raise argparse.ArgumentTypeError(f"{part!r}: unknown key {key!r} (range, value, batch_axis)")
        found[name.strip()] = FeedDecl(**decl)
    return tuple(found.items())


def _batch_symbol(symbols: Sequence[Sequence[str | None]]) -> str | None:
    """The dynamic dimension the inputs share: the symbol most inputs have (ties: the first input's first)."""
    counts = Counter(s for syms in symbols for s in set(syms) if s)
    if not counts:
        return None
    best = max(counts.values())
    for syms in symbols:
        for s in syms:
            if s and counts[s] == best:
                return s
    return None


def batch_axes(shapes: Sequence[Sequence[int | None]], symbols: Sequence[Sequence[str | None]]) -> list[int | None]:
    """The axis of each input that holds the samples: where the dimension the inputs share sits (a state
    ``(2, N, 128)`` beside ``(N, 576)``: axis 1); an input without it has none (a scalar sample rate); with
    no shared symbol (one input, or anonymous dynamic dims), axis 0 of every input of rank >= 1."""
    symbol = _batch_symbol(symbols) if len(shapes) > 1 else None
    out: list[int | None] = []
    for shape, syms in zip(shapes, symbols, strict=True):
        if symbol is not None:
            out.append(list(syms).index(symbol) if symbol in syms else None)
        else:
            out.append(0 if len(shape) >= 1 else None)
    return out


def output_batch_axes(shapes: Sequence[Sequence[int | None]], symbols: Sequence[Sequence[str | None]],
                      input_symbol: str | None) -> list[int]:
    """The axis of each output that holds the samples: where the inputs' batch symbol sits, else axis 0."""
    out = []
    for shape, syms in zip(shapes, symbols, strict=True):
        out.append(list(syms).index(input_symbol) if input_symbol and input_symbol in syms else 0)
    return out


def to_graph(x: np.ndarray, feed: Feed) -> np.ndarray:
    """A sample-major array as the runtime is fed it: the samples moved to the batch axis (an input without one
    takes the first sample's value: it is the same for every sample), in the input's dtype."""
    if feed.batch_axis is None:
        x = x[0]
    elif feed.batch_axis:
        x = np.moveaxis(x, 0, feed.batch_axis)
    return np.asarray(x, dtype=np.dtype(feed.dtype), order="C")  # (a scalar stays 0-d)


def from_graph(y: np.ndarray, axis: int) -> np.ndarray:
    """An output with its samples on ``axis`` brought to axis 0."""
    return np.ascontiguousarray(np.moveaxis(y, axis, 0)) if axis and np.ndim(y) > axis else y


def feed_values(feed: Feed, shape: Sequence[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` samples of shape ``shape`` (without the batch axis), sample-major, in the feed's dtype and values:
    a constant everywhere; integers uniform in [low, high]; bools 0/1; floats uniform in [low, high).  An input
    without a batch axis gets one draw, repeated for every sample."""
    draws = count if feed.batch_axis is not None else 1
    full = (draws, *[int(d) for d in shape])
    dtype = np.dtype(feed.dtype)
    arr: np.ndarray
    if feed.constant is not None:
        arr = np.full(full, feed.constant, dtype=np.float64)
    elif dtype.kind == "b":
        arr = rng.integers(0, 2, size=full)
    elif dtype.kind in "iu":
        arr = rng.integers(int(math.ceil(feed.low)), int(math.floor(feed.high)) + 1, size=full)
    else:
        arr = rng.uniform(feed.low, feed.high, size=full)
    arr = arr.astype(dtype)
    return np.repeat(arr, count, axis=0) if draws != count else arr


def check_declared(decls: Sequence[tuple[str, FeedDecl]], names: Sequence[str], where: str) -> None:
    """Every declared input exists (a typo is an error naming the inputs, never a silent default)."""
    for name, _ in decls:
        if name not in names:
            import difflib

            close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
            raise CvdnnError(f"{where}: the model has no input {name!r}"
                             + (f" (did you mean {close[0]!r}?)" if close else ""),
                             fix=f"name one of its inputs: {', '.join(map(repr, names))}")


def static_shapes(dep: Any) -> tuple[tuple[str, tuple[int | None, ...]], ...]:
    """The sizes the checks feed each input whose graph leaves a size other than the batch dynamic (the batch
    stays dynamic: a remedy is verified at batch 1 and N); () where every such size is fixed already.  ``dep``:
    the deployment (its graph, batch axes and fed arrays)."""
    try:
        fed = dep.to_onnx_inputs([x[:1] for x in dep.inputs])
    except (CvdnnError, StageSkipped):  # (the inputs cannot be made: no static shapes either)
        return ()
    found = []
    for info, axis, x in zip(dep.graph.inputs, dep.batch_axes, fed, strict=True):
        if len(info.shape) != x.ndim or all(d is not None for k, d in enumerate(info.shape) if k != axis):
            continue
        found.append((info.name, tuple(None if k == axis else int(x.shape[k]) for k in range(x.ndim))))
    return tuple(found)
