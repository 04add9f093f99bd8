"""Errors the user can act on: one paragraph naming what is wrong and how to fix it."""

from __future__ import annotations

__all__ = ["CvdnnError", "StageSkipped", "unrecognised", "headline"]


class CvdnnError(Exception):
    """A deployment problem with a precise cause and a fix.

    ``str(err)`` is a single paragraph: "<what is wrong>. Fix: <what to do>."
    ``details`` holds optional extra lines (an OpenCV message, a statistics table).
    """

    def __init__(self, message: str, *, fix: str | None = None, details: str | None = None, node: str | None = None) -> None:
        self.message = message.rstrip(". ")
        self.fix = fix
        self.details = details
        self.node = node
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.message + "."
        if self.fix:
            text += f" Fix: {self.fix.rstrip('.')}."
        return text

    def full(self) -> str:
        return str(self) + (f"\n\n{self.details}" if self.details else "")


def headline(text: str, limit: int) -> str:
    """``text`` up to its first clause ("; ") if that fits in ``limit`` characters, else cut at a word with "…"
    (the whole text is said below it)."""
    text = text.rstrip(".")
    clause = text.split("; ", 1)[0]
    if len(clause) <= limit:
        return clause + ("…" if len(clause) < len(text) else "")
    cut = clause[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


class StageSkipped(Exception):
    """A stage cannot run because a stage it depends on failed (or is not applicable)."""


#: the modules of the [keras] extra, by what they do
_KERAS_EXTRA = {"tensorflow": "TensorFlow (the Keras side)", "keras": "Keras (the Keras side)",
                "tf2onnx": "tf2onnx (the conversion to ONNX)", "skimage": "scikit-image (its photos)"}


def unrecognised(what: str, exc: BaseException) -> CvdnnError:
    """An exception the plugin did not foresee, as one paragraph: ``what`` ("m.keras: the convert stage") "failed
    with an error the plugin does not recognise", its type and first line, the traceback in the details."""
    import traceback

    missing = (getattr(exc, "name", None) or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
    if missing in _KERAS_EXTRA:
        return CvdnnError(f"{what} needs {_KERAS_EXTRA[missing]}, which is not installed (no module named "
                          f"{missing!r})", fix='pip install "pytest-cvdnn[keras]" (TensorFlow, tf2onnx and '
                          "scikit-image's photos); an ONNX or TFLite model needs none of them")
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return CvdnnError(f"{what} failed with an error the plugin does not recognise ({type(exc).__name__}: {first})",
                      fix="check the model file and the options; if they are right, report this as a pytest-cvdnn "
                      "bug with the traceback below", details="".join(traceback.format_exception(exc))[-4000:])
