"""What a check returns (CheckResult) or raises (CheckFailed), free of pytest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import CvdnnError

__all__ = ["CheckResult", "CheckFailed", "shape_text"]


@dataclass
class CheckResult:
    """A check that passed: what it found, and its data for the report."""

    message: str
    data: dict[str, Any] = field(default_factory=dict)


class CheckFailed(CvdnnError):
    """A check that found the deployment wrong: the message, the fix and the data for the report."""

    def __init__(self, message: str, *, fix: str | None = None, details: str | None = None,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(message, fix=fix, details=details)
        self.data = data or {}


def shape_text(a: Any) -> str:
    """A tensor shape with unknown dimensions as "?"."""
    return "(" + ", ".join("?" if d is None else str(d) for d in a) + ")"
