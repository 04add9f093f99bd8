"""pytest-cvdnn: prove a Keras model works in OpenCV's DNN module before it ships.

Importing this package is cheap: TensorFlow, cv2 and onnx load only when a check needs them.
"""

from __future__ import annotations

from .compare import DEFAULT_ATOL, DEFAULT_RTOL, ParityResult, Tolerance, compare, compare_arrays
from .errors import CvdnnError
from .spec import InputSpec, SpecError

__version__ = "0.1.0"

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
