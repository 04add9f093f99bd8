"""InputSpec: parsing, validation and the numbers it implies (pure Python)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_cvdnn import InputSpec, SpecError


def test_keras_modes() -> None:
    tf = InputSpec.from_keras_mode("tf", size=(224, 224))
    assert tf.value_range() == pytest.approx((-1.0, 1.0))
    assert tf.swap_rb and tf.size == (224, 224)
    caffe = InputSpec.from_keras_mode("caffe")
    assert not caffe.swap_rb and caffe.mean == (103.939, 116.779, 123.68)
    torch = InputSpec.from_keras_mode("torch")
    lo, hi = torch.value_range()
    assert lo == pytest.approx(-0.485 / 0.229, rel=1e-4) and hi == pytest.approx((1 - 0.406) / 0.225, rel=1e-4)


def test_parse_key_values() -> None:
    spec = InputSpec.parse("scale=0.00392,mean=123.7/116.3/103.5,std=58.4/57.1/57.4,swap_rb=1,size=224x160,crop=0")
    assert spec.scale == pytest.approx(0.00392)
    assert spec.mean == (123.7, 116.3, 103.5)
    assert spec.std == (58.4, 57.1, 57.4)
    assert spec.swap_rb is True and spec.size == (224, 160) and spec.crop == "none"
    assert InputSpec.parse("torch,size=64x64") == InputSpec.from_keras_mode("torch", size=(64, 64))


@pytest.mark.parametrize(
    "text, message",
    [
        ("fancy", "unknown Keras preprocessing mode 'fancy'"),
        ("scale=abc", "bad value 'abc' for 'scale'"),
        ("size=224", "bad value '224' for 'size'"),
        ("mean=1/2", "mean needs 1, 3 or 4 values"),
        ("colour=rgb", "unknown key 'colour'"),
        ("layout=nwch", "layout must be one of nchw, nhwc"),
        ("std=0/1/1", "std must not contain 0"),
    ],
)
def test_parse_errors_are_precise(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        InputSpec.parse(text)


def test_normalize_matches_the_keras_tf_formula() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.float32)
    spec = InputSpec.from_keras_mode("tf")
    np.testing.assert_allclose(spec.normalize(pixels), pixels / 127.5 - 1.0, atol=1e-6)


def test_coerce_accepts_dicts_and_strings() -> None:
    assert InputSpec.coerce({"mode": "tf", "size": (32, 32)}).value_range() == pytest.approx((-1, 1))
    assert InputSpec.coerce("none,size=8x8").size == (8, 8)
    with pytest.raises(SpecError, match="unknown input spec field"):
        InputSpec.coerce({"scal": 1})


def test_specs_per_input_name() -> None:
    from pytest_cvdnn.spec import SpecError, coerce_specs, parse_specs

    default, named = parse_specs("image:caffe;thumb:mean=1:2:3,scale=0.5")
    assert default is None and [n for n, _ in named] == ["image", "thumb"]
    assert named[0][1].mode == "caffe" and named[1][1].mean == (1.0, 2.0, 3.0) and named[1][1].scale == 0.5
    default, named = parse_specs("mean=1:2:3,swap_rb=1")  # a colon inside a value is not a name
    assert default is not None and default.mean == (1.0, 2.0, 3.0) and named == ()
    default, named = parse_specs("tf;thumb:caffe")
    assert default is not None and default.mode == "tf" and named[0][0] == "thumb"
    with pytest.raises(SpecError, match="input 'thumb'"):
        parse_specs("thumb:bogus")
    with pytest.raises(SpecError, match="two specs without an input name"):
        parse_specs("tf;caffe")
    assert coerce_specs({"image": "caffe", "thumb": {"mode": "tf"}})[1][1][1].mode == "tf"
    assert coerce_specs({"mode": "tf"})[0].mode == "tf"  # a dict of fields is one spec


@pytest.mark.parametrize("fields, said", [
    ({"interpolation": "lanczos"}, "interpolation must be one of bilinear, nearest, bicubic, area, got 'lanczos'"),
    ({"crop": "middle"}, "crop must be one of none, center, letterbox, got 'middle'"),
    ({"size": (2,)}, "size must be (width, height) with positive values, got (2,)"),
    ({"size": (0, 5)}, "size must be (width, height) with positive values, got (0, 5)"),
    ({"batch": 0}, "batch must be between 1 and 4096 (the images a deployment feeds per net.forward()), got 0"),
    ({"scale": float("inf")}, "scale must be finite numbers of magnitude at most 1e+06, got [inf]"),
    ({"mean": (1e7, 0, 0)}, "mean must be finite numbers of magnitude at most 1e+06, got [10000000.0, 0.0, 0.0]"),
    ({"std": (1, 2e6, 1)}, "std must be finite numbers of magnitude at most 1e+06, got [1.0, 2000000.0, 1.0]"),
    ({"std": (0, 1, 1)}, "std must not contain 0, got (0.0, 1.0, 1.0)"),
])
def test_each_invalid_spec_field_is_named_with_its_rule_and_value(fields: dict, said: str) -> None:
    from pytest_cvdnn.spec import SpecError

    with pytest.raises(SpecError) as info:
        InputSpec(**fields)
    assert str(info.value) == said


def test_a_spec_keeps_its_fields_normalised() -> None:
    spec = InputSpec(size=(64.0, 32), scale=0.5, std=2, channels=1, batch=2)
    assert spec.size == (64, 32) and isinstance(spec.size[0], int)
    assert spec.scale == 0.5 and spec.std == (2.0, 2.0, 2.0) and spec.channels == 1 and spec.n_channels == 1
    assert spec.per_channel("std") == (2.0,) and spec.per_channel("mean") == (0.0,)
    assert InputSpec(size=(2, 2), batch=4096 - 1).batch == 4095
