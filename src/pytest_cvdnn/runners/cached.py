"""One caching wrapper for every runner: outputs by (runner identity, inputs digest).

In memory for the session (runners are pure: the checks share each forward), and on disk under
``outputs/`` where the runner's spec gives an identity (the references: Keras, onnxruntime, the TFLite
interpreter, the logits probe on the cv2 installed here), so a warm run creates no runner at all.
The shipped cv2.dnn graph has no identity: it runs in every session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..cache import Cache, sha256_bytes
from . import Runner

__all__ = ["CachedRunner", "Results", "inputs_digest", "stacked"]


@dataclass(frozen=True)
class Results:
    """A runner's outputs on some inputs and, for a joint runner, the logits of its final softmaxes."""

    outputs: list[np.ndarray]
    logits: list[np.ndarray]


def inputs_digest(inputs: Sequence[np.ndarray]) -> str:
    """The digest of arrays: their bytes and shapes."""
    return sha256_bytes(b"".join(np.ascontiguousarray(x).tobytes() + str(x.shape).encode() for x in inputs))


def stacked(rows: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per-sample outputs (one list per forward) as one batch per output."""
    return [np.concatenate([r[k] for r in rows], axis=0) for k in range(len(rows[0]))]


class CachedRunner:
    """A runner made on the first miss, its results kept in ``memory`` and, with a ``key``, in the cache."""

    def __init__(self, name: str, make: Callable[[], Runner], key: str | None, cache: Cache,
                 memory: dict[tuple[str, str, str], list[np.ndarray]], *, joint: bool,
                 one_at_a_time: Callable[[], bool], feed: Callable[[list[np.ndarray]], list[np.ndarray]],
                 unfeed: Callable[[list[np.ndarray]], list[np.ndarray]] = list,
                 digest: Callable[[Sequence[np.ndarray]], str] = inputs_digest,
                 wait: Callable[[Path], bool] | None = None) -> None:
        self.name, self.key, self.joint = name, key, joint
        self._make, self._cache, self._memory = make, cache, memory
        self._one_at_a_time, self._feed, self._digest, self._wait = one_at_a_time, feed, digest, wait
        self._unfeed = unfeed
        self._identity = "" if key is None else sha256_bytes(f"{name}|{key}".encode())[:24]

    def entry(self, digest: str) -> Path | None:
        """Where the cache keeps the results of the inputs with ``digest`` (None: not kept on disk)."""
        if self.key is None:
            return None
        return self._cache.root / "outputs" / f"{self.name}-{self._identity}-{digest[:24]}.npz"

    def infer(self, inputs: Sequence[np.ndarray]) -> Results:
        """The results on ``inputs`` (in the deployment's layout), computed once: copies, the checks may edit them."""
        digest = self._digest(inputs)
        memo = (self.name, self._identity or str(self.key), digest)
        if memo not in self._memory:
            found = self._stored(digest)
            self._memory[memo] = found if found is not None else self._computed(list(inputs), digest)
        return self._split([a.copy() for a in self._memory[memo]])

    def _stored(self, digest: str) -> list[np.ndarray] | None:
        path = self.entry(digest)
        if path is None:
            return None
        found = self._cache.get_arrays("outputs", path.name)
        if found is None and self._wait is not None and self._wait(path):  # made by the TensorFlow helper
            found = self._cache.get_arrays("outputs", path.name)
        return found

    def _computed(self, inputs: list[np.ndarray], digest: str) -> list[np.ndarray]:
        runner = self._make()
        if self._one_at_a_time() and len(inputs[0]) > 1:  # a graph fixed to batch 1: one sample per forward
            rows = [self._outputs(runner, [x[i : i + 1] for x in inputs]) for i in range(len(inputs[0]))]
            results = stacked(rows)
        else:
            results = self._outputs(runner, inputs)
        if self.joint:  # (outputs, then logits: the runner says how many are outputs)
            results = [np.array(getattr(runner, "output_count", len(results))), *results]
        path = self.entry(digest)
        if path is not None:
            self._cache.put_arrays(results, "outputs", path.name)
        return results

    def _outputs(self, runner: Runner, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The runner's outputs on sample-major inputs, sample-major (a joint runner's logits as they come)."""
        outs = [np.asarray(o) for o in runner.infer(self._feed(inputs))]
        count = int(getattr(runner, "output_count", len(outs))) if self.joint else len(outs)
        return [*self._unfeed(outs[:count]), *outs[count:]]

    def _split(self, results: list[np.ndarray]) -> Results:
        if not self.joint:
            return Results(results, [])
        count = int(results[0])
        return Results(results[1 : 1 + count], results[1 + count :])
