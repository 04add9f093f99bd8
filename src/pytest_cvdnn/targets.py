"""Other OpenCV versions, installed side by side into the cache and run in child processes.

``provision_opencv("4.5.5", cache_root)`` installs ``opencv-python-headless`` of that version
(with ``numpy<2`` where that OpenCV needs it) into its own folder with ``pip --target``, once,
under a file lock; ``run_with_opencv`` runs Python code with that folder first on the path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import CvdnnError

__all__ = ["provision_opencv", "opencv_env", "needs_old_numpy", "pip_spec"]

# wheels of these versions exist for CPython 3.11 (abi3); a bare "4.5.5" picks the last build
_BUILDS = {"4.5.5": "4.5.5.64", "4.6.0": "4.6.0.66", "4.7.0": "4.7.0.72", "4.8.0": "4.8.0.76", "4.8.1": "4.8.1.78"}


def pip_spec(version: str) -> str:
    if not re.fullmatch(r"\d+\.\d+\.\d+(\.\d+)?", version):
        raise CvdnnError(f"{version!r} is not an OpenCV version", fix="write it like 4.5.5 or 4.8.1.78")
    if version in _BUILDS:
        return f"opencv-python-headless=={_BUILDS[version]}"
    # X.Y.Z: the last build of that release (the wheels are versioned X.Y.Z.BUILD)
    return f"opencv-python-headless=={version}" + (".*" if version.count(".") == 2 else "")


def needs_old_numpy(version: str) -> bool:
    """OpenCV 4.5-4.8 wheels were built against numpy 1.x."""
    major, minor = (int(x) for x in version.split(".")[:2])
    return (major, minor) < (4, 9)


def provision_opencv(version: str, cache_root: Path, timeout: float = 900.0) -> Path:
    """The folder holding cv2 (and numpy) of ``version``; installed on first use."""
    from filelock import FileLock

    from .cache import default_user_cache

    base = Path(cache_root) / "opencv"
    dest = base / version
    if (dest / ".complete").is_file():
        return dest
    shared = default_user_cache() / "opencv" / version  # one install per machine serves every project cache
    if (shared / ".complete").is_file():
        return shared
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f"{version}.lock"), timeout=timeout):
        if (dest / ".complete").is_file():
            return dest
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=base))
        packages = [pip_spec(version)] + (["numpy<2"] if needs_old_numpy(version) else [])
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-warn-conflicts", "--target", str(staging), *packages]
        # a constraints file of this environment (PIP_CONSTRAINT pins *its* OpenCV/numpy) must not apply
        # to a side-by-side install of another version
        env = {k: v for k, v in os.environ.items() if k not in ("PIP_CONSTRAINT", "PIP_REQUIRE_VIRTUALENV")}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            raise CvdnnError(f"installing OpenCV {version} with pip took longer than {timeout:.0f} s",
                             fix="check the connection to the package index, or pass a Python that has cv2") from None
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise CvdnnError(f"OpenCV {version} could not be installed ({' '.join(packages)}): {last}",
                             fix="check that the version exists on PyPI for this Python, and that PyPI is reachable")
        (staging / ".complete").write_text(" ".join(packages))
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(staging, dest)
    return dest


def opencv_env(folder: Path) -> dict[str, str]:
    """Environment for a child process that should import cv2/numpy from ``folder`` and us from here."""
    ours = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), ours])
    return env
