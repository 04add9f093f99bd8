"""Peak memory per input element (issue 16), the worst case: a model whose output is as large as its input.

    python benchmarks/peak_memory.py [SIZE]   # default 2000: a Relu on 1x3x2000x2000, 4 samples

Runs ``pytest --cvdnn-model=relu.onnx`` (every item) in a child and reads the child's peak RSS
(``getrusage(RUSAGE_CHILDREN)``); prints bytes per input element of one sample.  Measured here: 473 before
issue 16's work on the comparison (float64 temporaries, index arrays as long as the output), 309 after.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    import onnx
    from onnx import TensorProto, helper

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    work = Path(tempfile.mkdtemp(prefix="cvdnn-mem-"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, size, size])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(work / "relu.onnx"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                           "--cvdnn-model=relu.onnx", "--cvdnn-cache-dir=cache"], cwd=work, capture_output=True,
                          text=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    elements = 3 * size * size
    print(proc.stdout.strip().splitlines()[-1])
    print(f"peak RSS {peak / 2**30:.2f} GiB: {peak / elements:.0f} bytes per input element of one sample "
          f"(1x3x{size}x{size}, 4 samples)")


if __name__ == "__main__":
    main()
