"""Models whose inputs are not one float image batched on axis 0, and outputs paired by name: each verdict is
compared with a hand script doing the same work with onnxruntime / Keras and cv2.dnn directly (default tier)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import Run


def stateful_vad_onnx(path: Path) -> Path:
    """A voice-activity-style graph: audio (N, 16) float32, a recurrent state (2, N, 8) batched on axis 1, a
    scalar sample rate int64 that scales the output; outputs prob (N, 8) and the new state (2, N, 8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (16, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             numpy_helper.from_array(np.array(1 / 16000, np.float32), "per_hz"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
        helper.make_node("Unsqueeze", ["h", "axis0"], ["h1"], name="unsqueeze"),
        helper.make_node("Mul", ["state", "half"], ["decayed"], name="decay"),
        helper.make_node("Add", ["decayed", "h1"], ["new_state"], name="update"),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["srf", "per_hz"], ["gain"], name="gain"),
        helper.make_node("ReduceSum", ["new_state", "axis0"], ["pooled"], keepdims=0, name="pool"),
        helper.make_node("Mul", ["pooled", "gain"], ["prob"], name="out"),
    ]
    graph = helper.make_graph(nodes, "vad", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", 8]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ], [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 8]),
        helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [2, "N", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _by_hand(path: Path, feeds: dict[str, np.ndarray]) -> float:
    """onnxruntime and cv2.dnn on the same feeds, by name: the largest difference of any output."""
    import cv2
    import onnxruntime as ort

    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    net = cv2.dnn.readNetFromONNX(str(path))
    for name, x in feeds.items():
        net.setInput(x, name)
    names = list(net.getUnconnectedOutLayersNames())
    outs = dict(zip(names, net.forward(names)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return max(float(np.abs(outs[o.name] - r).max()) for o, r in zip(session.get_outputs(), ref, strict=True))


def test_a_state_batched_on_axis_1_and_an_int64_scalar_are_fed_as_the_graph_declares(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """Every item passes, as a hand script with onnxruntime and cv2.dnn finds; the batch check batches the state
    on axis 1 and feeds the sample rate once; the sample rate declared with --cvdnn-feed is the one fed."""
    path = stateful_vad_onnx(pytester.path / "vad.onnx")
    rng = np.random.default_rng(1)
    hand = _by_hand(path, {"x": rng.uniform(-1, 1, (1, 16)).astype(np.float32),
                           "state": rng.uniform(-1, 1, (2, 1, 8)).astype(np.float32), "sr": np.array(16000)})
    assert hand < 1e-5  # cv2.dnn runs it, int64 scalar included
    run = run_cvdnn("--cvdnn-model=vad.onnx", "--cvdnn-feed=sr=16000")
    checks = run.checks()
    assert run.ret == 0, run.text
    assert all(c["outcome"] in ("passed", "skipped") for c in checks.values()), checks
    spec = checks["input_spec"]
    assert "fed 'state' float32 in [-1, 1] (batch axis 1)" in spec["message"]
    assert "fed 'sr' int64 = 16000 (no batch axis; declared with --cvdnn-feed)" in spec["message"]
    assert "net.setInput(x, 'sr')" in spec["message"]
    assert checks["batch"]["message"].startswith("batch of 4 agrees with 4 single runs")
    assert "'sr' int64 = 16000" in checks["parity[onnxruntime-cv2dnn]"]["message"]
    assert "new_state (1, 2, 8) float32 (samples first)" in checks["load"]["message"]


def test_inputs_by_name_from_an_npz(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """--cvdnn-inputs=FILE.npz: one array per input, named after it, as the runtime is fed it; the arrays are the
    ones compared (a state of 3 samples on axis 1: a batch of 3)."""
    stateful_vad_onnx(pytester.path / "vad.onnx")
    rng = np.random.default_rng(5)
    np.savez(pytester.path / "inputs.npz", x=rng.uniform(-1, 1, (3, 16)).astype(np.float32),
             state=rng.uniform(-1, 1, (2, 3, 8)).astype(np.float32), sr=np.array(8000))
    run = run_cvdnn("--cvdnn-model=vad.onnx", "--cvdnn-inputs=inputs.npz")
    checks = run.checks()
    assert run.ret == 0, run.text
    assert "inputs: the arrays of inputs.npz, by input name" in checks["parity[onnxruntime-cv2dnn]"]["message"]
    assert checks["batch"]["message"].startswith("batch of 3 agrees with 3 single runs")
    np.savez(pytester.path / "typo.npz", x=np.zeros((1, 16), np.float32), stat=np.zeros((2, 1, 8), np.float32),
             sr=np.array(8000))
    bad = run_cvdnn("--cvdnn-model=vad.onnx", "--cvdnn-inputs=typo.npz", "-k", "parity")
    message = bad.checks()["parity[onnxruntime-cv2dnn]"]["message"]
    assert "no array for input(s) 'state'; array(s) 'stat' name no input" in message, message
    run = run_cvdnn("--cvdnn-model=vad.onnx", "--cvdnn-feed=stat=1", "-k", "parity")
    assert "the model has no input 'stat' (did you mean 'state'?)" in run.checks()["parity[onnxruntime-cv2dnn]"]["message"]



def test_inputs_by_name_from_a_folder(run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """--cvdnn-inputs=DIR laid out by input name: NAME/ holds one sample per .npy (stacked on the input's batch axis:
    the state's samples on axis 1), NAME.npy the whole array (the scalar); samples that disagree are named."""
    stateful_vad_onnx(pytester.path / "vad.onnx")
    rng = np.random.default_rng(6)
    feeds = pytester.path / "feeds"
    for name, shape in (("x", (16,)), ("state", (2, 8))):
        (feeds / name).mkdir(parents=True)
        for k in range(3):
            np.save(feeds / name / f"{k:03d}.npy", rng.uniform(-1, 1, shape).astype(np.float32))
    np.save(feeds / "sr.npy", np.array(16000))
    run = run_cvdnn("--cvdnn-model=vad.onnx", "--cvdnn-inputs=feeds")
    checks = run.checks()
    assert run.ret == 0, run.text
    assert "inputs: the arrays of feeds, by input name" in checks["parity[onnxruntime-cv2dnn]"]["message"]
    assert checks["batch"]["message"].startswith("batch of 3 agrees with 3 single runs")
    np.save(feeds / "state" / "003.npy", np.zeros((2, 9), np.float32))
    bad = run_cvdnn("--cvdnn-model=vad.onnx", "--cvdnn-inputs=feeds", "-k", "parity")
    message = bad.checks()["parity[onnxruntime-cv2dnn]"]["message"]
    assert "the samples of input 'state' differ in shape or dtype (000.npy (2, 8) float32" in message, message
    assert "003.npy (2, 9) float32)" in message, message

TOKENS = """
import keras


def build(seed=2):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((16,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(100, 8, name="embed")(inp)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="probs")(x), name="tokens")


def other():
    return build(seed=9)
"""


def test_an_int32_token_classifier_is_fed_tokens_its_embedding_holds(run_cvdnn: Callable[..., Run],
                                                                      pytester: pytest.Pytester) -> None:
    """Keras' Embedding(100) takes tokens 0..99: the checks feed int32 tokens in that range to Keras, onnxruntime
    and cv2.dnn (float32 ones were refused by onnxruntime); the ONNX of another model fails parity."""
    import keras

    pytester.makepyfile(tok=TOKENS)
    run = run_cvdnn("--cvdnn-model=tok:build")
    checks = run.checks()
    assert run.ret == 0, run.text
    assert "fed 'tokens' int32 in [0, 99] (batch axis 0; indices into a table of 100 rows)" in \
        checks["input_spec"]["message"]
    assert checks["parity[keras-cv2dnn]"]["data"]["outputs"][0]["max_abs"] < 1e-5
    # by hand: Keras and cv2.dnn on the same tokens
    import cv2

    sys.path.insert(0, str(pytester.path))
    import tok  # noqa: E402

    tokens = np.random.default_rng(3).integers(0, 100, (1, 16)).astype(np.int32)
    want = np.asarray(tok.build()(tokens))
    net = cv2.dnn.readNetFromONNX(checks["convert"]["data"]["onnx"])
    net.setInput(tokens)
    assert np.abs(net.forward() - want).max() < 1e-5
    keras.backend.clear_session()
    # the ONNX of another token model: Keras and onnxruntime disagree
    import tf2onnx
    import tensorflow as tf

    spec = (tf.TensorSpec((None, 16), tf.int32, name="tokens"),)
    tf2onnx.convert.from_keras(tok.other(), input_signature=spec, opset=13, output_path=str(pytester.path / "o.onnx"))
    bad = run_cvdnn("--cvdnn-model=tok:build", "--cvdnn-onnx=o.onnx", "-k", "parity")
    assert bad.checks()["parity[keras-onnxruntime]"]["outcome"] == "failed"


def _savedmodel_and_authors_onnx(folder: Path, names: dict[str, str]) -> None:
    """A two-output SavedModel (boxes (N, 6), scores (N, 3)) and its ONNX as its authors ship it: outputs named
    ``names`` (the signature's tensors, say) and listed scores first."""
    import keras
    import onnx

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.Conv2D(4, 3, name="conv")(inp))
    model = keras.Model(inp, {"boxes": keras.layers.Dense(6, name="boxes")(x),
                              "scores": keras.layers.Dense(3, activation="softmax", name="scores")(x)}, name="det")
    model.export(str(folder / "det_sm"), verbose=False)
    if not (folder / "det.onnx").exists():  # (tf2onnx's command line: its Python API converts Keras models)
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(folder / "det_sm"), "--opset",
                        "13", "--output", str(folder / "det.onnx")], check=True, capture_output=True, timeout=300)
    m = onnx.load(str(folder / "det.onnx"))
    for node in m.graph.node:
        node.output[:] = [names.get(o, o) for o in node.output]
    outs = list(m.graph.output)
    for o in outs:
        o.name = names[o.name]
    del m.graph.output[:]
    m.graph.output.extend(outs[::-1])
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(m, str(folder / "authors.onnx"))


@pytest.mark.zoo  # (a SavedModel converted twice: ~75 s)
def test_outputs_are_paired_by_the_signatures_names_not_their_position(run_cvdnn: Callable[..., Run],
                                                                      pytester: pytest.Pytester) -> None:
    """The signature maps boxes -> StatefulPartitionedCall_1:0, scores -> ...:1; the authors' ONNX lists
    scores first under those tensor names: paired by name, parity passes (a hand script pairing them by name
    agrees).  Outputs no name pairs are compared by position, said, and a shape mismatch is reported as one."""
    from tensorflow.core.protobuf import saved_model_pb2

    _savedmodel_and_authors_onnx(pytester.path, {"boxes": "StatefulPartitionedCall_1:0",
                                                 "scores": "StatefulPartitionedCall_1:1"})
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((pytester.path / "det_sm" / "saved_model.pb").read_bytes())
    signature = {k: v.name for k, v in proto.meta_graphs[0].signature_def["serving_default"].outputs.items()}
    assert signature == {"boxes": "StatefulPartitionedCall_1:0", "scores": "StatefulPartitionedCall_1:1"}
    run = run_cvdnn("--cvdnn-model=det_sm", "--cvdnn-onnx=authors.onnx", "--cvdnn-layout=nhwc",
                    "--cvdnn-preprocess=none,layout=nhwc", "-k", "parity or output_spec")
    checks = run.checks()
    assert run.ret == 0, run.text
    assert checks["parity[keras-cv2dnn]"]["data"]["max_abs"] < 1e-3
    # names that pair nothing: by position, said; the shapes differ, said as such (no infinite error)
    _savedmodel_and_authors_onnx(pytester.path, {"boxes": "out_a", "scores": "out_b"})
    bad = run_cvdnn("--cvdnn-model=det_sm", "--cvdnn-onnx=authors.onnx", "--cvdnn-preprocess=none,layout=nhwc",
                    "-k", "parity[keras-onnxruntime]")
    message = bad.checks()["parity[keras-onnxruntime]"]["message"]
    assert message.startswith("onnxruntime returns outputs of other shapes than keras: 'out_b' (4, 3) where keras "
                              "has (4, 6)"), message
    assert "the outputs are paired by position" in message and "inf" not in message.split(". Fix")[0]


SUBCLASSED = """
import keras


class Net(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.fc = keras.layers.Dense(3, name="fc")

    def build(self, input_shape=(None, 24, 24, 3)):
        self.conv.build(input_shape)
        self.fc.build((input_shape[0], 4))
        self.built = True

    def call(self, x):
        return self.fc(self.pool(self.conv(x)))


def own_build():
    keras.utils.set_random_seed(0)
    net = Net(name="net")
    net.build()  # its own default shape
    return net


def default_only():
    keras.utils.set_random_seed(0)
    return Net(name="net")  # never built: its build()'s default says the shape


def first_layer():
    keras.utils.set_random_seed(0)
    net = Net(name="net")
    net.conv.build((None, 20, 20, 3))  # built layer by layer: the first layer records the shape
    net.fc.build((None, 4))
    net.built = True
    return net
"""


def test_a_subclassed_model_built_by_its_own_build_is_checked_at_that_shape(run_cvdnn: Callable[..., Run],
                                                                            pytester: pytest.Pytester) -> None:
    """Built by its own build() (a default input shape), layer by layer, or not at all: the shape is the one its
    first layer was built with, else its build()'s default; never "never built or called"."""
    pytester.makepyfile(net=SUBCLASSED)
    for factory, size in (("own_build", 24), ("first_layer", 20), ("default_only", 24)):
        run = run_cvdnn(f"--cvdnn-model=net:{factory}", "-k", "convert or load or parity")
        checks = run.checks()
        assert checks["convert"]["outcome"] == "passed", checks["convert"]["message"]
        assert f"(?, 3, {size}, {size})" in checks["load"]["message"], checks["load"]["message"]
        assert checks["parity[keras-cv2dnn]"]["outcome"] == "passed"


def test_a_quiet_output_passes_with_a_caution_naming_its_magnitude(run_cvdnn: Callable[..., Run],
                                                                 pytester: pytest.Pytester) -> None:
    """A score map whose largest value on the checks' inputs is a few atol (a detector's map on noise): parity
    passes, and says that these inputs hardly exercise the output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array((np.random.default_rng(0).normal(0, 1, (1, 3, 3, 3)) * 1e-7).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["score"], name="head", pads=[1, 1, 1, 1])], "d",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1, 16, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(pytester.path / "det.onnx"))
    run = run_cvdnn("--cvdnn-model=det.onnx", "-k", "parity")
    parity = run.checks()["parity[onnxruntime-cv2dnn]"]
    assert parity["outcome"] == "passed", parity["message"]
    scale = parity["data"]["input_insensitive"][0]["scale"]
    assert 1e-5 < scale < 1e-3, scale
    assert f"caution: the reference of 'score' (max |ref| {scale:.2g}) is nearly zero on every input" in parity["message"]


def dynamic_resize_onnx(path: Path) -> Path:
    """Conv -> Resize to twice its computed size (Shape -> Slice -> Mul -> Concat) -> Conv -> pooling, with the
    input's height and width dynamic: OpenCV 4.8 cannot import the Shape of a dynamic tensor."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = {"s0": [0], "s2": [2], "s4": [4], "two": [2, 2]}
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (2, 4, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([], np.float32), "roi"),
             numpy_helper.from_array(np.array([], np.float32), "scales"),
             *(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items())]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c1"], ["shp"], name="shape"),
        helper.make_node("Slice", ["shp", "s0", "s2"], ["nc"], name="nc"),
        helper.make_node("Slice", ["shp", "s2", "s4"], ["hw"], name="hw"),
        helper.make_node("Mul", ["hw", "two"], ["hw2"], name="double"),
        helper.make_node("Concat", ["nc", "hw2"], ["sizes"], name="sizes", axis=0),
        helper.make_node("Resize", ["c1", "roi", "scales", "sizes"], ["up"], name="upsample", mode="nearest"),
        helper.make_node("Conv", ["up", "w2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["y"], name="flat"),
    ]
    graph = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


HAND_48 = """
import sys, numpy as np, cv2, json
x = np.load(sys.argv[3])
out = {}
for name in ("orig", "fixed"):
    try:
        net = cv2.dnn.readNetFromONNX(sys.argv[1 if name == "orig" else 2])
        net.setInput(x)
        out[name] = net.forward().tolist()
    except cv2.error as exc:
        out[name] = str(exc)
print(json.dumps({"opencv": cv2.__version__, **out}))
"""


def test_a_graph_that_only_its_dynamic_sizes_keep_from_loading_gets_the_static_remedy(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """OpenCV 4.8.1 rejects the graph ("!isDynamicShape" in the Shape node); every op imports once the input has
    the checked size (the op scan probes at that size, the shape computations folded); the remedy — the inputs
    fixed to the checked size, the batch left free, onnxslim — is verified at batch 1 and 4, and the fixed.onnx it
    writes loads in 4.8.1 and matches onnxruntime by hand."""
    import json

    import onnxruntime as ort

    from conftest import side_by_side
    from pytest_cvdnn.targets import opencv_env

    side_by_side("4.8.1")
    side_by_side("4.5.5")
    dynamic_resize_onnx(pytester.path / "dyn.onnx")
    run = run_cvdnn("--cvdnn-model=dyn.onnx", "--cvdnn-preprocess=none,size=16x16", "--cvdnn-target=opencv==4.8.1",
                    "--cvdnn-target=opencv==4.5.5")
    checks = run.checks()
    # OpenCV 4.5.5 reads it and its runtime rejects it: said as such (not a bare OpenCV assertion), the items that
    # need cv2.dnn's outputs skipped with why, the same remedy found and verified there
    load_455 = checks["load[opencv-4.5.5]"]
    assert load_455["message"].startswith("cv2.dnn (OpenCV 4.5.5, engine auto, opencv-4.5.5) reads dyn.onnx but "
                                          "cannot run it: net.forward() on sample 0 fails: "), load_455["message"]
    assert "remedy: the ONNX rewrite 'fix the inputs to x Nx3x16x16 + onnxslim'" in load_455["message"]
    for name in ("output_spec", "parity[onnxruntime-cv2dnn", "batch", "determinism"):
        item = next(c for k, c in checks.items() if k.startswith(name) and "4.5.5" in k)
        assert item["outcome"] == "skipped" and "forward of sample 0 failed" in item["message"], (name, item)
    load, ops = checks["load[opencv-4.8.1]"], checks["ops[opencv-4.8.1]"]
    assert load["outcome"] == "failed" and "!isDynamicShape" in load["message"]
    assert "the cause is the dynamic input sizes" in load["message"], load["message"]
    assert "remedy: the ONNX rewrite 'fix the inputs to x Nx3x16x16 + onnxslim'" in load["message"]
    assert "matches onnxruntime at batch 1 and 4" in load["message"]
    assert ops["outcome"] == "passed", ops["message"]
    assert "Shape, Slice fold into constants" in ops["message"]
    fixed = load["message"].split("Fix: ship ", 1)[1].split(", or add", 1)[0]
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 16, 16)).astype(np.float32)
    np.save(pytester.path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", HAND_48, str(pytester.path / "dyn.onnx"), fixed,
                           str(pytester.path / "x.npy")], env=opencv_env(side_by_side("4.8.1")), capture_output=True,
                          text=True, timeout=120)
    hand = json.loads(proc.stdout.strip().splitlines()[-1])
    assert hand["opencv"] == "4.8.1" and "isDynamicShape" in hand["orig"], hand
    want = ort.InferenceSession(str(pytester.path / "dyn.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(np.array(hand["fixed"]) - want).max() < 1e-3 * np.abs(want).max()


HAND_DECONV = """
import sys, numpy as np, cv2
net = cv2.dnn.readNetFromONNX(sys.argv[1])
net.setInput(np.zeros((1, 3, 8, 8), np.float32))
try:
    net.forward()
    print("ran")
except cv2.error as exc:
    print(str(exc).strip().splitlines()[-1])
"""


def test_a_runtime_failure_on_a_target_names_the_node_of_the_layer_opencv_names(
        run_cvdnn: Callable[..., Run], pytester: pytest.Pytester) -> None:
    """A ConvTranspose with asymmetric pads: OpenCV 4.8.1 reads it and its runtime refuses it ("Unsupported
    asymmetric padding in deconvolution layer", by hand too); the load item on that target says so, names the
    node of OpenCV's deconvolution layer, and the items that need its outputs are skipped."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from conftest import side_by_side
    from pytest_cvdnn.targets import opencv_env

    weights = np.random.default_rng(0).normal(0, 0.3, (3, 4, 3, 3)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="up/deconv", strides=[2, 2], pads=[0, 0, 1, 1],
                            kernel_shape=[3, 3])
    graph = helper.make_graph([node], "deconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(pytester.path / "deconv.onnx"))
    hand = subprocess.run([sys.executable, "-c", HAND_DECONV, str(pytester.path / "deconv.onnx")],
                          env=opencv_env(side_by_side("4.8.1")), capture_output=True, text=True, timeout=120)
    assert "Unsupported asymmetric padding in deconvolution layer" in hand.stdout, hand.stdout + hand.stderr
    run = run_cvdnn("--cvdnn-model=deconv.onnx", "--cvdnn-target=opencv==4.8.1")
    checks = run.checks()
    load = checks["load[opencv-4.8.1]"]
    assert load["outcome"] == "failed" and checks["load"]["outcome"] == "passed"
    assert ("reads deconv.onnx but cannot run it: net.forward() on sample 0 fails: Unsupported asymmetric padding in "
            "deconvolution layer") in load["message"], load["message"]
    assert "; OpenCV's deconvolution layer runs node 'up/deconv' (op ConvTranspose)" in load["message"]
    for name in ("output_spec[opencv-4.8.1]", "parity[onnxruntime-cv2dnn@opencv-4.8.1]"):
        assert checks[name]["outcome"] == "skipped", (name, checks[name]["message"])
