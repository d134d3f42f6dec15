"""The zoo recipe: per-step LR, label smoothing, decay groups, AMP/loss-scale choices."""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import irv2_core  # noqa: F401  (CPU speed settings before any MindSpore op)
from irv2_core.config import ConfigError, load_config
from irv2_core.runtime.context import compile_cache_disabled
from irv2_core.training.recipe import (
    CrossEntropySmooth,
    build_train_cell,
    check_amp_supported,
    create_optimizer,
    lr_schedule,
    param_groups,
    smoothing_values,
)


def zoo_generate_cosine_lr(lr_init, lr_end, lr_max, total_epochs, warmup_epochs, spe):
    """Line-by-line transcription of the model zoo's ``generate_cosine_lr`` (train.py)."""
    total_steps, warmup_steps = spe * total_epochs, spe * warmup_epochs
    lr_each_step = []
    for i in range(total_steps):
        if i < warmup_steps:
            lr = lr_init + (lr_max - lr_init) * (i + 1) / warmup_steps
        else:
            progress = (i - warmup_steps) / (total_steps - warmup_steps)
            lr = lr_end + (lr_max - lr_end) * 0.5 * (1 + math.cos(math.pi * progress))
        lr_each_step.append(lr)
    return np.array(lr_each_step, dtype=np.float32)


def test_lr_matches_the_zoo_formula_at_every_step():
    cfg = load_config("zoo-ascend-8p", overrides={"epoch_size": 7, "warmup_epochs": 2})
    ours = lr_schedule(cfg, steps_per_epoch=13)
    zoo = zoo_generate_cosine_lr(4e-5, 4e-6, 0.4, 7, 2, 13)
    np.testing.assert_array_equal(ours, zoo)


def test_lr_zoo_ascend_8p_published_values():
    lr = lr_schedule(load_config("zoo-ascend-8p"), steps_per_epoch=1251)
    assert lr.shape == (312_750,) and lr.dtype == np.float32
    assert lr[0] == pytest.approx(3.597e-4, rel=1e-3)
    assert lr[1250] == pytest.approx(0.4, rel=1e-6)
    assert lr[-1] == pytest.approx(4.00001e-6, rel=1e-5)
    assert np.all(np.diff(lr[:1251]) > 0) and np.all(np.diff(lr[1251:]) <= 0)


def test_lr_zoo_gpu_and_start_epoch_slice():
    cfg = load_config("zoo-gpu")
    assert lr_schedule(cfg, 2501)[0] == pytest.approx(3.0e-4, rel=1e-3)
    later = load_config("zoo-gpu", overrides={"start_epoch": 3})
    np.testing.assert_array_equal(lr_schedule(later, 10), lr_schedule(cfg, 10)[20:])


def test_smoothing_values_are_the_zoos_not_torchs():
    on, off = smoothing_values(0.1, 1000)
    assert on == pytest.approx(0.9) and off == pytest.approx(1.001e-4, rel=1e-3)


def test_cross_entropy_smooth_value():
    logits = np.array([[2.0, 0.5, -1.0, 0.0, 0.3], [0.1, 0.2, 3.0, -2.0, 1.0]], np.float32)
    labels = np.array([0, 3], np.int32)
    loss = CrossEntropySmooth(5, 0.2)(ms.Tensor(logits), ms.Tensor(labels)).asnumpy()
    target = np.full((2, 5), 0.2 / 4)
    target[np.arange(2), labels] = 0.8
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert float(loss) == pytest.approx(float(-(target * logp).sum(axis=1).mean()), rel=1e-5)


class SmallNet(nn.Cell):
    """Conv (no bias) + BN + Dense (bias): the three kinds of parameter IRv2 has."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, has_bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Dense(4, 2)

    def construct(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_decay_groups_on_the_real_network():
    from irv2_core.models.factory import create_model

    net = create_model("inception_resnet_v2", num_classes=3)
    decayed, plain, order = param_groups(net, 4e-5, skip_bn_bias=True)
    names = {p.name for p in plain["params"]}
    assert plain["weight_decay"] == 0.0 and decayed["weight_decay"] == 4e-5
    assert all(n.endswith((".gamma", ".beta", ".bias")) for n in names)
    assert "classif.bias" in names and "conv2d_1a.bn.gamma" in names
    assert all(p.name.endswith(".weight") for p in decayed["params"])
    assert len(order["order_params"]) == len(net.trainable_params()) == 694
    assert len(names) + len(decayed["params"]) == 694
    (everything, _) = param_groups(net, 4e-5, skip_bn_bias=False)
    assert len(everything["params"]) == 694 and everything["weight_decay"] == 4e-5


@pytest.fixture
def pynative():
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=mode)


@pytest.mark.parametrize("skip", [True, False])
def test_no_decay_group_is_really_not_decayed(skip, pynative):
    cfg = load_config(
        "cpu-smoke",
        overrides={"weight_decay": 0.5, "weight_decay_skip_bn_bias": skip, "num_classes": 2},
    )
    net = SmallNet()
    for p in net.trainable_params():
        p.set_data(ms.Tensor(np.full(p.shape, 0.7, np.float32)))
    opt = create_optimizer(cfg, net, np.full(4, 0.1, np.float32))
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    opt(tuple(ms.ops.zeros_like(p) for p in net.trainable_params()))  # zero gradient
    moved = {n for n, v in before.items() if not np.array_equal(v, net.parameters_dict()[n])}
    assert {"conv.weight", "fc.weight"} <= moved
    untouched = {"bn.gamma", "bn.beta", "fc.bias"}
    assert untouched.isdisjoint(moved) if skip else untouched <= moved


def test_dynamic_loss_scale_is_refused_on_cpu_with_the_choices():
    gpu = load_config("zoo-gpu", overrides={"loss_scale_type": "dynamic"})
    check_amp_supported(gpu)  # fine where it can run
    with pytest.raises(ConfigError, match=r"supported on CPU: fixed"):
        check_amp_supported(gpu, "CPU")
    cpu_cfg = gpu.model_copy(update={"num_classes": 2})
    net = SmallNet()
    with pytest.raises(ConfigError, match="loss_scale_type 'dynamic'"):
        build_train_cell(cpu_cfg, net, create_optimizer(cpu_cfg, net, 0.1))


@pytest.mark.parametrize("level", ["O0", "O2", "O3"])
def test_fixed_loss_scale_cell_unscales_in_the_optimizer(level):
    cfg = load_config(
        "cpu-smoke", overrides={"amp_level": level, "loss_scale": 1024, "num_classes": 2}
    )
    net = SmallNet()
    opt = create_optimizer(cfg, net, 0.1)
    cell = build_train_cell(cfg, net, opt)
    assert isinstance(cell, nn.TrainOneStepCell) and cell.training
    assert cell.sens == 1024.0 and opt.loss_scale == 1024.0


def _one_step(loss_scale: float, optim: str) -> tuple[dict, dict]:
    """(before, after) parameters of a seeded SmallNet around one real train-cell step."""
    # weight_decay large enough that a decay left scaled (or unscaled twice) would show
    settings = {"loss_scale": loss_scale, "optim": optim, "weight_decay": 0.05, "num_classes": 2}
    cfg = load_config("cpu-smoke", overrides={**settings, "amp_level": "O0"})
    rng = np.random.default_rng(0)
    net = SmallNet()
    for p in net.trainable_params():  # the same start and batch for every scale
        p.set_data(ms.Tensor(rng.normal(0, 0.5, p.shape).astype(np.float32)))
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    cell = build_train_cell(cfg, net, create_optimizer(cfg, net, np.full(2, 0.01, np.float32)))
    x = ms.Tensor(rng.normal(0, 1, (4, 3, 8, 8)).astype(np.float32))
    # the session's compile cache matches graphs by compile order, not content: it handed the
    # 1024 step the optimizer graph compiled for scale 1 (no unscale) before this guard
    with compile_cache_disabled():
        loss = cell(x, ms.Tensor(np.array([0, 1, 1, 0], np.int32)))
    assert np.isfinite(float(loss.asnumpy()))
    return before, {p.name: p.asnumpy().copy() for p in net.trainable_params()}


@pytest.mark.parametrize("optim", ["rmsprop", "momentum"])
def test_fixed_loss_scale_applies_the_unscaled_gradient(optim, pynative):
    """loss x 1024 scales every gradient by 1024; the optimizer must divide it back, so one step
    moves the weights as an unscaled step does. (RMSProp would not hide a missing unscale: its
    mean square starts at ones, so a 1024x gradient takes a much larger step.)"""
    before, plain = _one_step(1.0, optim)
    _, scaled = _one_step(1024.0, optim)
    for name, start in before.items():
        step = plain[name] - start
        assert np.abs(step).max() > 1e-5, f"{name} did not move: nothing is compared"
        np.testing.assert_allclose(
            scaled[name] - start, step, rtol=1e-3, atol=1e-3 * np.abs(step).max(), err_msg=name
        )
