"""The network itself: exact topology (parameter counts), timm-compatible names, input sizes."""

from __future__ import annotations

import numpy as np
import pytest

import irv2_core  # noqa: F401  (oneDNN setting before any op)
from irv2_core.errors import Irv2Error
from irv2_core.models.factory import create_model, list_models
from irv2_core.runtime.context import compile_cache_disabled

pytestmark = pytest.mark.usefixtures("pynative_mode")


def _trainable(net) -> int:
    return sum(int(np.prod(p.shape)) for p in net.trainable_params())


@pytest.fixture(scope="module")
def net1000():
    return create_model("inception_resnet_v2", num_classes=1000)


def test_parameter_count_matches_timm_with_residual_bias(net1000):
    assert _trainable(net1000) == 55_843_464
    assert len(net1000.trainable_params()) == 694
    assert len(list(net1000.get_parameters())) == 1102  # + BN moving mean/var


def test_parameter_count_of_zoo_variant_without_residual_bias():
    net = create_model(num_classes=1000, residual_bias=False)
    assert _trainable(net) == 55_797_704
    assert not [p.name for p in net.get_parameters() if p.name.endswith("conv2d.bias")]


def test_num_classes_sets_the_classifier_width():
    net = create_model(num_classes=7, drop_rate=0.0)
    shapes = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert shapes["classif.weight"] == (7, 1536)
    assert shapes["classif.bias"] == (7,)
    assert _trainable(net) == 55_843_464 - 1537 * (1000 - 7)


def test_parameter_names_follow_timm_layout(net1000):
    names = {p.name for p in net1000.get_parameters()}
    for key in (
        "conv2d_1a.conv.weight",
        "mixed_5b.branch1.0.bn.gamma",
        "mixed_5b.branch3.1.conv.weight",
        "repeat.9.conv2d.bias",
        "repeat_1.19.branch1.2.bn.moving_variance",
        "repeat_2.8.conv2d.weight",
        "block8.conv2d.bias",
        "conv2d_7b.bn.beta",
        "classif.weight",
    ):
        assert key in names, key


def test_init_is_xavier_uniform_with_zero_biases(net1000):
    params = {p.name: p.asnumpy() for p in net1000.get_parameters()}
    w = params["repeat_1.0.conv2d.weight"]  # (1088, 384, 1, 1)
    bound = np.sqrt(6.0 / (384 + 1088))
    assert 0.9 * bound < np.abs(w).max() <= bound * (1 + 1e-6)  # float32 rounding at the edge
    assert not params["repeat_1.0.conv2d.bias"].any() and not params["classif.bias"].any()


def test_unknown_model_name_lists_known_models():
    with pytest.raises(Irv2Error, match="inception_resnet_v2") as err:
        create_model("resnet50")
    assert "resnet50" in str(err.value)
    assert list_models() == ["inception_resnet_v2"]


def test_bad_arguments_are_rejected_before_building():
    with pytest.raises(Irv2Error, match="num_classes"):
        create_model(num_classes=0)
    with pytest.raises(Irv2Error, match="drop_rate"):
        create_model(drop_rate=1.0)


def test_forward_at_smallest_size_gives_logits_and_features(net1000):
    import mindspore as ms

    net1000.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).integers(0, 256, (2, 3, 75, 75), dtype=np.uint8))
    with compile_cache_disabled():  # in GRAPH mode a stale cache could swap graphs
        logits = net1000(x).asnumpy()
        features = net1000.forward_features(net1000.normalize(x))
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()
    assert not np.allclose(logits[0], logits[1])  # the output depends on the input
    assert features.shape == (2, 1536, 1, 1)


def test_input_below_75_px_fails_with_a_clear_message(net1000):
    import mindspore as ms

    with pytest.raises(Irv2Error, match=r"74x80 px.*at least 75x75"):
        net1000(ms.Tensor(np.zeros((1, 3, 74, 80), np.float32)))


@pytest.mark.parametrize("protocol", ["zoo", "inception"])
def test_network_normalises_pixels_like_the_old_pipeline(protocol):
    """Issue 12: uint8 pixels into a net built for *protocol* give the logits that the timm
    contract (input_protocol=None) gives on the pipeline's old float32 normalisation, and the
    normalisation adds no parameter (checkpoints keep exactly timm's tensors)."""
    import mindspore as ms
    from mindspore.dataset import vision

    from irv2_core.data.transforms import normalize_pixels
    from irv2_core.models.metadata import EVAL_PROTOCOLS

    pixels_net = create_model(num_classes=4, drop_rate=0.0, input_protocol=protocol)
    float_net = create_model(num_classes=4, drop_rate=0.0, input_protocol=None)
    params = {p.name: p for p in pixels_net.get_parameters()}
    assert params.keys() == {p.name for p in float_net.get_parameters()}
    ms.load_param_into_net(float_net, params)
    pixels_net.set_train(False)
    float_net.set_train(False)
    px = np.random.default_rng(1).integers(0, 256, (2, 3, 75, 75), dtype=np.uint8)
    p = EVAL_PROTOCOLS[protocol]
    old = vision.Normalize([m * 255.0 for m in p.mean], [s * 255.0 for s in p.std])
    old_inputs = np.stack([old(img.transpose(1, 2, 0)).transpose(2, 0, 1) for img in px])
    np.testing.assert_allclose(normalize_pixels(px, protocol), old_inputs, atol=1e-6)
    with compile_cache_disabled():
        got = pixels_net(ms.Tensor(px)).asnumpy()
        want = float_net(ms.Tensor(old_inputs)).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
