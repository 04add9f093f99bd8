"""Two revisions of the plugin on the same gate, interleaved: is a refactor slower?

    python benchmarks/ab_gate.py 5bd9c52 HEAD      # ~5 minutes: a cold run each, then 9 warm runs each

Each revision is checked out in a git worktree and imported from there (PYTHONPATH), with its own cache;
the warm runs alternate (old, new, new, old, ...) so that the machine's drift hits both alike.  The model is
the one bench_gate.py measures: DenseNet121(weights=None), seeded.  Prints best and median per revision.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gate import ENV, save_densenet121  # noqa: E402


def main() -> None:
    revisions = sys.argv[1:3] if len(sys.argv) >= 3 else ["HEAD~1", "HEAD"]
    work = Path(tempfile.mkdtemp(prefix="cvdnn-ab-"))
    trees = {}
    try:
        for rev in revisions:
            trees[rev] = work / f"tree-{len(trees)}"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(trees[rev]), rev], cwd=ROOT, check=True)
        save_densenet121(work)

        def gate(rev: str) -> float:
            env = dict(ENV, PYTHONPATH=str(trees[rev] / "src"))
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                   "--cvdnn-model=densenet121.keras", f"--cvdnn-cache-dir=cache-{trees[rev].name}"]
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"{rev}: the gate failed\n{done.stdout[-3000:]}")
            return seconds

        for rev in revisions:
            print(f"{rev}: cold {gate(rev):.2f} s", flush=True)
        warm: dict[str, list[float]] = {rev: [] for rev in revisions}
        for i in range(9):
            for rev in revisions if i % 2 == 0 else revisions[::-1]:
                warm[rev].append(gate(rev))
        for rev, times in warm.items():
            times.sort()
            print(f"{rev}: warm best {times[0]:.3f} s, median {times[len(times) // 2]:.3f} s", flush=True)
        best = [min(warm[rev]) for rev in revisions]
        print(f"warm best {revisions[1]} / {revisions[0]}: {best[1] / best[0]:.3f}")
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
