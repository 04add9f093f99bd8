"""Deployments by kind: :func:`build_deployment` makes the one ``settings`` describe (a replayed bundle, a
``.tflite`` source, an exported TFLite/frozen graph, or the ONNX of a Keras or ONNX model) and gives it the
:class:`Assembly` through which it reaches the layers above it (variants of itself, the checks) without
importing them.  :class:`~pytest_cvdnn.core.Deployment` itself lives in core.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .cache import Cache
from .core import Deployment
from .settings import ModelSettings
from .sources import parse_source

__all__ = ["Deployment", "build_deployment"]


class _Assembly:
    """The layers above a deployment, for a deployment: another deployment of the model, a check."""

    def build(self, settings: ModelSettings, cache: Cache, rootdir: Path | None,
              memo: dict[Any, Any] | None) -> Deployment:
        return build_deployment(settings, cache, rootdir, memo)

    def run_check(self, dep: Deployment, name: str) -> tuple[Any, float]:
        from .checks import run_check

        return run_check(dep, name)


_ASSEMBLY = _Assembly()


def build_deployment(settings: ModelSettings, cache: Cache, rootdir: Path | None = None,
                     memo: dict[Any, Any] | None = None) -> Deployment:
    """The deployment for ``settings``: a replayed bundle, an exported TFLite/frozen graph, or the ONNX."""
    dep: Deployment
    if settings.bundle is not None:
        from .bundle import BundleDeployment

        dep = BundleDeployment(settings, Path(settings.bundle), cache)
    elif parse_source(settings.model, rootdir).kind == "tflite":
        from .formats import TFLiteSourceDeployment

        dep = TFLiteSourceDeployment(replace(settings, format="tflite"), cache, rootdir, memo=memo)
    elif settings.precision is not None:
        from .quantize import QuantizedDeployment

        dep = QuantizedDeployment(settings, cache, rootdir, memo=memo)
    elif settings.format != "onnx":
        from .formats import ArtifactDeployment

        dep = ArtifactDeployment(settings, cache, rootdir, memo=memo)
    else:
        dep = Deployment(settings, cache, rootdir, memo=memo)
    dep.assembly = _ASSEMBLY
    return dep
