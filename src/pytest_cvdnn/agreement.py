"""Agreement of two pipelines' predictions, image by image (pure numpy, free of pytest).

The predictions are the classes a classifier's output gives: the arg-max of a vector (softmax or logits), or a
threshold of 0.5 on a single probability.  Top-1 agreement is the share of images whose two predictions are the
same class; top-k agreement the share whose training-side class is among the deployed side's k best.  With labels,
each side's accuracy and the change between them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import CvdnnError

__all__ = ["classes_of", "Agreement", "measure", "DEFAULT_MIN_AGREEMENT", "DEFAULT_MAX_ACCURACY_DROP"]

#: a release gate's defaults: 99 % of the images predict the same class, accuracy drops by 1 point at most
DEFAULT_MIN_AGREEMENT = 0.99
DEFAULT_MAX_ACCURACY_DROP = 0.01


def _scores(output: np.ndarray) -> np.ndarray:
    """(N, C) scores of a classifier output: a vector per image, or one probability (two classes, 1 - p and p)."""
    x = np.asarray(output, dtype=np.float64)
    x = x.reshape(len(x), -1)
    if x.shape[1] == 1:
        return np.concatenate([1.0 - x, x], axis=1)
    return x


def classes_of(output: np.ndarray) -> np.ndarray:
    """The predicted class of each image."""
    return np.asarray(np.argmax(_scores(output), axis=1))


@dataclass(frozen=True)
class Agreement:
    """Two pipelines' predictions on the same images."""

    count: int
    same: int  # images whose top-1 classes agree
    k: int
    same_topk: int  # images whose training-side class is among the deployed side's k best
    training: tuple[int, ...]  # the training side's class per image
    deployed: tuple[int, ...]
    training_score: tuple[float, ...]  # each side's score of its own class
    deployed_score: tuple[float, ...]
    labels: tuple[int, ...] | None = None
    confusion: tuple[tuple[int, int, int], ...] = field(default=())  # (training class, deployed class, images)

    @property
    def rate(self) -> float:
        return self.same / self.count if self.count else 1.0

    @property
    def topk_rate(self) -> float:
        return self.same_topk / self.count if self.count else 1.0

    def accuracy(self, side: str) -> float | None:
        if self.labels is None or not self.count:
            return None
        predicted = self.training if side == "training" else self.deployed
        return float(np.mean(np.asarray(predicted) == np.asarray(self.labels)))

    @property
    def accuracy_drop(self) -> float | None:
        """Training-side accuracy minus the deployed side's (positive: the deployment is worse)."""
        before, after = self.accuracy("training"), self.accuracy("deployed")
        return None if before is None or after is None else before - after

    @property
    def disagreeing(self) -> list[int]:
        return [k for k in range(self.count) if self.training[k] != self.deployed[k]]

    def problems(self, min_agreement: float, max_accuracy_drop: float) -> list[str]:
        """What fails the gate (empty: it passes)."""
        found = []
        if self.rate < min_agreement:
            found.append(f"below the {_pct(min_agreement)} agreement required (--cvdnn-min-agreement)")
        drop = self.accuracy_drop
        if drop is not None and drop > max_accuracy_drop:
            found.append(f"the accuracy drops by {drop * 100:.3g} points, more than the {max_accuracy_drop * 100:.3g} "
                         "allowed (--cvdnn-max-accuracy-drop)")
        return found

    def headline(self) -> str:
        return f"top-1 agreement {_pct(self.rate)} ({self.same}/{self.count} images)"

    def rest(self) -> str:
        """Top-k and accuracy, after the headline."""
        parts = [f"top-{self.k} agreement {_pct(self.topk_rate)}"] if self.k > 1 else []
        before, after = self.accuracy("training"), self.accuracy("deployed")
        if before is not None and after is not None:
            parts.append(f"accuracy {_pct(before)} (training side) → {_pct(after)} (deployed)")
        return ", ".join(parts)

    def summary(self) -> str:
        return self.headline() + (f", {self.rest()}" if self.rest() else "")

    def as_dict(self, names: Sequence[str] = (), classes: Sequence[str] = (), limit: int = 50) -> dict[str, Any]:
        def label(c: int) -> Any:
            return classes[c] if 0 <= c < len(classes) else c

        return {
            "images": self.count, "agree": self.same, "rate": self.rate, "k": self.k, "topk_agree": self.same_topk,
            "topk_rate": self.topk_rate, "accuracy_training": self.accuracy("training"),
            "accuracy_deployed": self.accuracy("deployed"), "accuracy_drop": self.accuracy_drop,
            "confusion": [{"training": label(a), "deployed": label(b), "images": n} for a, b, n in self.confusion],
            "disagreeing": [{"image": names[k] if k < len(names) else k, "training": label(self.training[k]),
                             "training_score": self.training_score[k], "deployed": label(self.deployed[k]),
                             "deployed_score": self.deployed_score[k],
                             **({"label": label(self.labels[k])} if self.labels is not None else {})}
                            for k in self.disagreeing[:limit]],
        }


def _pct(rate: float) -> str:
    return f"{rate * 100:.4g} %"


def measure(training: np.ndarray, deployed: np.ndarray, labels: Sequence[int] | None = None,
            k: int = 5) -> Agreement:
    """The agreement of the two sides' outputs (the classifier output of each image, in the same order)."""
    a, b = _scores(training), _scores(deployed)
    if a.shape != b.shape:
        raise CvdnnError(f"the two pipelines' outputs differ in shape: {a.shape} (training side) and {b.shape} "
                         "(deployed)", fix="check the same model on both sides")
    if labels is not None and len(labels) != len(a):
        raise CvdnnError(f"{len(labels)} labels for {len(a)} images", fix="give one label per image")
    k = max(1, min(k, a.shape[1] - 1)) if a.shape[1] > 2 else 1
    top_a, top_b = a.argmax(1), b.argmax(1)
    best_b = np.argsort(-b, axis=1)[:, :k]
    same_topk = int(sum(top_a[i] in best_b[i] for i in range(len(a))))
    pairs = Counter((int(x), int(y)) for x, y in zip(top_a, top_b) if x != y)
    return Agreement(
        count=len(a), same=int((top_a == top_b).sum()), k=k, same_topk=same_topk,
        training=tuple(int(c) for c in top_a), deployed=tuple(int(c) for c in top_b),
        training_score=tuple(float(a[i, c]) for i, c in enumerate(top_a)),
        deployed_score=tuple(float(b[i, c]) for i, c in enumerate(top_b)),
        labels=tuple(int(v) for v in labels) if labels is not None else None,
        confusion=tuple((x, y, n) for (x, y), n in pairs.most_common()))
