"""pytest-cvdnn: prove a Keras model works in OpenCV's DNN module before it ships.

Importing this package is cheap: TensorFlow, cv2 and onnx load only when a check needs them.
"""

from __future__ import annotations

from .compare import DEFAULT_ATOL, DEFAULT_RTOL, ParityResult, Tolerance, compare, compare_arrays
from .errors import CvdnnError
from .spec import InputSpec, SpecError

def _version() -> str:
    """The installed distribution's version: pyproject.toml is the one source."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-cvdnn")
    except PackageNotFoundError:  # (run from a source tree that is not installed)
        return "0+unknown"


__version__ = _version()

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "CvdnnError",
    "InputSpec",
    "ParityResult",
    "SpecError",
    "Tolerance",
    "compare",
    "compare_arrays",
    "__version__",
]
