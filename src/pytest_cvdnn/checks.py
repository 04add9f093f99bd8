"""The deployment checks: where each applies (one table), the items of a model, and running one, free of pytest.

A check takes a :class:`~pytest_cvdnn.core.Deployment` and returns a :class:`CheckResult`; it raises
:class:`CheckFailed` (a CvdnnError) when the deployment is wrong, and :class:`StageSkipped` when a stage it needs
failed.  The checks themselves live by what they look at: checks_artifact.py (convert, load, ops, remedies),
checks_inputs.py (input spec, preprocessing), checks_outputs.py (output spec, parity, batch, determinism, bundle).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

from .core import Deployment
from .errors import CvdnnError, StageSkipped, unrecognised
from .checks_artifact import check_convert, check_load, check_ops, check_remedies
from .checks_agreement import check_agreement
from .checks_inputs import check_input_spec, check_preprocessing
from .checks_outputs import (check_batch, check_bundle, check_determinism, check_output_spec, check_parity,
                             check_verify)
from .verdicts import CheckFailed, CheckResult

__all__ = ["CheckResult", "CheckFailed", "Check", "TABLE", "CHECKS", "PARITY_PAIRS", "TARGET_CHECKS", "checks_of",
           "check_names", "check_items", "run_check", "ItemSpec"]


#: what is checked (see Deployment.kind)
KINDS = ("keras", "onnx", "export", "tflite", "bundle")


@dataclass(frozen=True)
class Check:
    """One check and where it applies: the deployment kinds it runs for, whether it runs again on every other
    OpenCV target and cv2.dnn engine, the runners it compares (an item only where each has a model: no Keras
    item for an ONNX source), and the option that turns it on (None: always)."""

    name: str
    run: Callable[[Deployment], CheckResult]
    kinds: frozenset[str]
    per_target: bool = False
    runners: tuple[str, ...] = ()
    option: str | None = None


def _parity_check(expected: str, obtained: str) -> Check:
    """The parity check of a registered pair: for the kinds where both runners run (a bundle compares what
    runs where it is replayed, cv2.dnn, with the references it stores), on every target where cv2.dnn is one."""
    from .runners import runner_spec

    kinds = runner_spec(expected).kinds & runner_spec(obtained).kinds
    if obtained != "cv2dnn":
        kinds -= {"bundle"}
    return Check(f"parity[{expected}-{obtained}]", lambda dep: check_parity(dep, expected, obtained),
                 frozenset(kinds), per_target="cv2dnn" in (expected, obtained), runners=(expected, obtained))


def _table() -> tuple[Check, ...]:
    from .runners import parity_pairs

    everywhere, replayable = frozenset(KINDS), frozenset({"keras", "onnx", "bundle", "tflite"})
    return (
        Check("verify", check_verify, frozenset({"bundle"})),
        Check("convert", check_convert, everywhere - {"bundle"}),
        Check("ops", check_ops, frozenset({"keras", "onnx"}), per_target=True),
        Check("load", check_load, everywhere, per_target=True),
        Check("remedies", check_remedies, frozenset({"keras"}), per_target=True, option="fix"),
        Check("input_spec", check_input_spec, replayable),
        Check("preprocessing", check_preprocessing, replayable - {"tflite"}),
        Check("output_spec", check_output_spec, everywhere, per_target=True),
        *(_parity_check(a, b) for a, b in parity_pairs()),
        Check("batch", check_batch, replayable, per_target=True),
        Check("determinism", check_determinism, replayable, per_target=True),
        Check("agreement", check_agreement, frozenset({"keras"}), per_target=True, option="images"),
        Check("bundle", check_bundle, frozenset({"keras", "onnx"}), option="save_bundle"),
    )


#: every check, in the order its items run
TABLE = _table()
CHECKS: dict[str, Callable[[Deployment], CheckResult]] = {c.name: c.run for c in TABLE}
PARITY_PAIRS = tuple(c.runners for c in TABLE if c.runners)
#: checks that run again on every extra OpenCV target and engine (the rest use the cv2 installed here)
TARGET_CHECKS = tuple(c.name for c in TABLE if c.per_target and c.option is None and c.kinds)


def checks_of(kind: str, has_keras: bool = True, **options: bool) -> list[Check]:
    """The checks of a deployment ``kind`` (see KINDS), with the options that are on (``fix``, ``save_bundle``)."""
    return [c for c in TABLE if kind in c.kinds and (c.option is None or options.get(c.option, False))
            and (has_keras or "keras" not in c.runners)]


def check_names(has_keras: bool, fix: bool = False, save_bundle: bool = False, images: bool = True) -> list[str]:
    return [c.name for c in checks_of("keras" if has_keras else "onnx", has_keras, fix=fix, save_bundle=save_bundle,
                                      images=images)]


def item_name(check: str, label: str) -> str:
    """``load`` → ``load[opencv-4.5.5]``; ``parity[a-b]`` → ``parity[a-b@opencv-4.5.5]``."""
    return f"{check[:-1]}@{label}]" if check.endswith("]") else f"{check}[{label}]"


class ItemSpec(NamedTuple):
    """One generated item: its name, the check it runs, and where: target (None: the cv2 installed here),
    artifact format, cv2.dnn engine and device (None: the session's)."""

    name: str
    check: str
    target: str | None = None
    fmt: str = "onnx"
    engine: str | None = None
    device: str | None = None


def check_items(has_keras: bool, targets: list[str], fix: bool = False, save_bundle: bool = False,
                bundle: bool = False, formats: tuple[str, ...] = ("onnx",),
                engines: tuple[str, ...] = (), source_kind: str = "", images: bool = False,
                precisions: tuple[str, ...] = (), devices: tuple[str, ...] = ()) -> list[ItemSpec]:
    """The items of a model: every check here, the cv2 checks again per target (``load[opencv-4.5.5]``),
    per extra engine (``parity[keras-cv2dnn@engine-ort]``) and per extra device (``load[device-opencl_fp16]``,
    on every target too), and the cv2 checks of each other artifact format
    (``tflite:load``, ``tf:parity[keras-cv2dnn@opencv-4.5.5]``), and those of each reduced precision
    (``int8:load``, ``fp16:parity[keras-cv2dnn@opencv-4.12.0]``)."""
    from .settings import target_label

    kind = "bundle" if bundle else "tflite" if source_kind == "tflite" else "keras" if has_keras else "onnx"
    local = checks_of(kind, has_keras, fix=fix, save_bundle=save_bundle, images=images)
    items = [ItemSpec(c.name, c.name) for c in local]
    again = [c.name for c in local if c.per_target]
    items += [ItemSpec(item_name(c, target_label(t)), c, t) for t in targets for c in again]
    items += [ItemSpec(item_name(c, f"engine-{e}"), c, None, "onnx", e) for e in engines for c in again]
    items += _per_device(again, targets, devices, "onnx")
    exported = checks_of("export") if kind == "keras" else []
    for fmt in (f for f in formats if f != "onnx"):
        items += [ItemSpec(f"{fmt}:{c.name}", c.name, None, fmt) for c in exported]
        items += [ItemSpec(f"{fmt}:{item_name(c.name, target_label(t))}", c.name, t, fmt)
                  for t in targets for c in exported if c.per_target]
    if kind in ("keras", "onnx"):  # reduced-precision variants of the ONNX: what loads and what it predicts
        reduced = [c for c in local if c.name in ("convert", "load", "output_spec", "agreement") or c.runners]
        for precision in precisions:
            items += [ItemSpec(f"{precision}:{c.name}", c.name, None, precision) for c in reduced]
            items += [ItemSpec(f"{precision}:{item_name(c.name, target_label(t))}", c.name, t, precision)
                      for t in targets for c in reduced if c.per_target]
            items += _per_device([c.name for c in reduced if c.per_target], targets, devices, precision)
    return items


def _per_device(checks: list[str], targets: list[str], devices: tuple[str, ...], fmt: str) -> list[ItemSpec]:
    """The cv2.dnn items again on each extra device, here and on every target (``load[device-opencl_fp16]``,
    ``int8:load[opencv-4.12.0+device-opencl_fp16]``); not ``ops``, which probes the importer only."""
    from .settings import target_label

    prefix = "" if fmt == "onnx" else f"{fmt}:"
    return [ItemSpec(prefix + item_name(c, f"device-{d}" if t is None else f"{target_label(t)}+device-{d}"), c, t,
                     fmt, None, d) for d in devices for t in (None, *targets) for c in checks if c != "ops"]


def run_check(dep: Deployment, name: str) -> tuple[CheckResult, float]:
    """The check's result and its time; an exception the plugin did not foresee becomes one paragraph that
    names the model and the check (the traceback in its details), never a bare traceback."""
    if name not in CHECKS:
        raise CvdnnError(f"there is no check {name!r}", fix=f"use one of {', '.join(sorted(CHECKS))}")
    start = time.perf_counter()
    try:
        result = CHECKS[name](dep)
    except (CvdnnError, StageSkipped, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - said with the model and the check, traceback kept
        raise unrecognised(f"{dep.label}: the {name} check", exc) from exc
    return result, time.perf_counter() - start

