"""Running a script the plugin printed (fix.py), as the user runs it."""
from __future__ import annotations

import contextlib
import os
import runpy
import subprocess
import sys
from pathlib import Path


def run_script(script: Path, *args: str, cwd: Path | None = None) -> None:
    """``python script args`` in ``cwd``: a fresh interpreter, except under the mutation tester, whose active
    mutant is chosen per process (the script is the same text either way: the rewrites' own source, which the
    tester's trampoline leaves unmutated, so a mutant is caught by comparing the script's file with the one the
    mutated code made in-process) - there it runs in this process, ~30x faster."""
    if not os.environ.get("MUTANT_UNDER_TEST"):
        subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True, cwd=cwd)
        return
    argv = sys.argv[:]
    sys.argv = [str(script), *args]
    try:
        with contextlib.chdir(cwd or Path.cwd()), contextlib.redirect_stdout(None):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
