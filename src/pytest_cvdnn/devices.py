"""Where cv2.dnn computes: a device is a backend + target pair (``net.setPreferableBackend/Target``).

``cpu`` (OpenCV's own backend on the CPU, float32) is what a net runs on unless told otherwise; the others are
what edge and server deployments choose: half precision on the CPU or an OpenCL GPU, CUDA, OpenVINO, Vulkan,
an NPU.  Whether a device exists is the OpenCV build's and the machine's answer
(``cv2.dnn.getAvailableTargets(backend)``), asked of the OpenCV that runs the net.  No cv2 import at load
time: this module also runs in a target's own Python (an older OpenCV, side by side).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

__all__ = ["DEVICES", "DEFAULT", "parse_devices", "unavailable", "set_device", "device_code", "unavailable_on",
           "net_key"]

#: device -> (backend, target) as cv2.dnn names them
DEVICES: dict[str, tuple[str, str]] = {
    "cpu": ("DNN_BACKEND_OPENCV", "DNN_TARGET_CPU"),
    "cpu_fp16": ("DNN_BACKEND_OPENCV", "DNN_TARGET_CPU_FP16"),
    "opencl": ("DNN_BACKEND_OPENCV", "DNN_TARGET_OPENCL"),
    "opencl_fp16": ("DNN_BACKEND_OPENCV", "DNN_TARGET_OPENCL_FP16"),
    "cuda": ("DNN_BACKEND_CUDA", "DNN_TARGET_CUDA"),
    "cuda_fp16": ("DNN_BACKEND_CUDA", "DNN_TARGET_CUDA_FP16"),
    "openvino": ("DNN_BACKEND_INFERENCE_ENGINE", "DNN_TARGET_CPU"),
    "openvino_gpu": ("DNN_BACKEND_INFERENCE_ENGINE", "DNN_TARGET_OPENCL"),
    "vulkan": ("DNN_BACKEND_VKCOM", "DNN_TARGET_VULKAN"),
    "timvx_npu": ("DNN_BACKEND_TIMVX", "DNN_TARGET_NPU"),
    "cann_npu": ("DNN_BACKEND_CANN", "DNN_TARGET_NPU"),
}
DEFAULT = "cpu"


def net_key(engine: str, device: str) -> str:
    """What decides a net's outputs besides the file and the OpenCV build: the engine, and the device unless it
    is the default (cached outputs of the CPU keep their key)."""
    return engine if device == DEFAULT else f"{engine}+{device}"


def parse_devices(value: str) -> tuple[str, ...]:
    """``cpu,opencl_fp16`` -> ("cpu", "opencl_fp16"): the first is the device of every item; each other one adds
    the cv2.dnn items again on that device (``load[device-opencl_fp16]``).  ValueError names an unknown one."""
    names = [v.strip().lower() for v in str(value).split(",") if v.strip()]
    if not names:
        raise ValueError(f"{value!r}: no device given; use e.g. cpu or cpu,opencl_fp16")
    unknown = [n for n in names if n not in DEVICES]
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))} is not a cv2.dnn device; use one of {', '.join(DEVICES)}")
    return tuple(dict.fromkeys(names))


def unavailable(device: str, cv2: Any = None) -> str:
    """Why the cv2 imported here cannot run a net on ``device`` ("": it can)."""
    if cv2 is None:
        import cv2
    backend, target = DEVICES[device]
    pair = f"{device} ({backend} + {target})"
    missing = [n for n in (backend, target) if not hasattr(cv2.dnn, n)]
    if missing:
        return f"OpenCV {cv2.__version__} has no {' or '.join(missing)}, so no {pair}"
    offered = list(cv2.dnn.getAvailableTargets(getattr(cv2.dnn, backend)))
    if getattr(cv2.dnn, target) in offered:
        return ""
    names = {getattr(cv2.dnn, n): n for n in dir(cv2.dnn) if n.startswith("DNN_TARGET_")}
    have = ", ".join(names.get(int(t), str(t)) for t in offered) or "no target"
    return (f"this machine's OpenCV {cv2.__version__} cannot run {pair}: getAvailableTargets({backend}) offers "
            f"{have} (the device, its driver, or an OpenCV built with that backend is missing here)")


def set_device(net: Any, device: str) -> None:
    """``net`` computes on ``device`` (as :func:`device_code` prints it)."""
    import cv2

    backend, target = DEVICES[device]
    net.setPreferableBackend(getattr(cv2.dnn, backend))
    net.setPreferableTarget(getattr(cv2.dnn, target))


def device_code(device: str) -> str:
    """The two lines a deployment writes after reading ``net``."""
    backend, target = DEVICES[device]
    return f"net.setPreferableBackend(cv2.dnn.{backend})\nnet.setPreferableTarget(cv2.dnn.{target})"


_ASK = ("import json, sys; sys.path.append(sys.argv[2]); import cv2; from pytest_cvdnn.devices import unavailable; "
        "print(json.dumps(unavailable(sys.argv[1], cv2)))")


def unavailable_on(python: str, env: dict[str, str] | None, device: str, timeout: float = 120.0) -> str:
    """:func:`unavailable`, asked of another Python (a target's OpenCV, side by side)."""
    from pathlib import Path

    package_root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([python, "-c", _ASK, device, package_root], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        return f"the target's Python could not be asked which cv2.dnn devices it has: {tail}"
    return str(json.loads(done.stdout.strip().splitlines()[-1]))
