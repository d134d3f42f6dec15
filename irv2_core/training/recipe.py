"""The training recipe of the MindSpore model zoo, made explicit and testable.

Per-step warmup + cosine LR exactly as the zoo's ``generate_cosine_lr``, the zoo's label smoothing
(target 1-eps, every other class eps/(K-1)), TF-style RMSProp (or Momentum), weight-decay groups
that really exclude BN gamma/beta and biases, and the AMP / loss-scale train cell. Only the
combinations a device supports are built; anything else is a clear :class:`ConfigError`.
"""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from irv2_core.config import Config, ConfigError, loss_scale_problem

__all__ = [
    "CrossEntropySmooth",
    "build_train_cell",
    "create_optimizer",
    "cosine_lr",
    "lr_schedule",
    "param_groups",
    "smoothing_values",
]

# Substrings the zoo uses to recognise BatchNorm affine params and biases.
NO_DECAY_MARKERS = ("gamma", "beta", "bias")


def cosine_lr(
    lr_init: float,
    lr_end: float,
    lr_max: float,
    total_epochs: int,
    warmup_epochs: int,
    steps_per_epoch: int,
) -> np.ndarray:
    """Per-step LR of the zoo's ``generate_cosine_lr``: linear warmup, then cosine to ``lr_end``.

    Step i of T (W warmup steps) gets ``lr_init + (lr_max-lr_init)*(i+1)/W`` while ``i < W`` and
    ``lr_end + (lr_max-lr_end)*0.5*(1+cos(pi*(i-W)/(T-W)))`` after; float32 like the zoo.
    """
    total = steps_per_epoch * total_epochs
    warmup = steps_per_epoch * warmup_epochs
    i = np.arange(total, dtype=np.float64)
    warm = lr_init + (lr_max - lr_init) * (i + 1) / max(warmup, 1)
    decay_len = max(total - warmup, 1)
    cos = lr_end + (lr_max - lr_end) * 0.5 * (1 + np.cos(math.pi * (i - warmup) / decay_len))
    return np.where(i < warmup, warm, cos).astype(np.float32)


def lr_schedule(cfg: Config, steps_per_epoch: int) -> np.ndarray:
    """The run's LR array: the full schedule sliced from ``start_epoch`` (as the zoo does)."""
    full = cosine_lr(
        cfg.lr_init, cfg.lr_end, cfg.lr_max, cfg.epoch_size, cfg.warmup_epochs, steps_per_epoch
    )
    return full[steps_per_epoch * (cfg.start_epoch - 1) :]


def smoothing_values(smooth_factor: float, num_classes: int) -> tuple[float, float]:
    """(on, off) one-hot values of the zoo's smoothing: ``1-eps`` and ``eps/(K-1)``."""
    return 1.0 - smooth_factor, smooth_factor / (num_classes - 1)


class CrossEntropySmooth(nn.Cell):
    """Softmax cross-entropy against zoo-smoothed one-hot targets from sparse int labels."""

    def __init__(self, num_classes: int, smooth_factor: float = 0.1) -> None:
        super().__init__()
        on, off = smoothing_values(smooth_factor, num_classes)
        self.num_classes = num_classes
        self.on_value = ms.Tensor(on, ms.float32)
        self.off_value = ms.Tensor(off, ms.float32)
        self.ce = nn.SoftmaxCrossEntropyWithLogits(sparse=False, reduction="mean")

    def construct(self, logits: ms.Tensor, label: ms.Tensor) -> ms.Tensor:
        target = ops.one_hot(label, self.num_classes, self.on_value, self.off_value)
        return self.ce(logits, target)


def is_no_decay(name: str) -> bool:
    """True for BN gamma/beta and biases (by the zoo's name test)."""
    leaf = name.rsplit(".", 1)[-1]
    return any(m in leaf for m in NO_DECAY_MARKERS)


def param_groups(net: nn.Cell, weight_decay: float, skip_bn_bias: bool = True) -> list[dict]:
    """Optimizer groups: decayed weights, and (if *skip_bn_bias*) an explicit ``weight_decay=0.0``
    group for BN gamma/beta and biases, plus ``order_params`` to keep the network's order.

    The explicit 0.0 matters: a group without the key falls back to the optimizer-level decay,
    which is how the zoo ended up decaying everything.
    """
    params = net.trainable_params()
    if not skip_bn_bias:
        return [{"params": params, "weight_decay": weight_decay}, {"order_params": params}]
    decayed = [p for p in params if not is_no_decay(p.name)]
    plain = [p for p in params if is_no_decay(p.name)]
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
        {"order_params": params},
    ]


def _optimizer_loss_scale(cfg: Config) -> float:
    # A fixed scale multiplies the loss (TrainOneStepCell's sens); the optimizer divides it back.
    # A dynamic scale is undone inside TrainOneStepWithLossScaleCell instead.
    return float(cfg.loss_scale) if cfg.loss_scale_type == "fixed" else 1.0


def create_optimizer(cfg: Config, net: nn.Cell, lr: np.ndarray | float) -> nn.Optimizer:
    """The recipe's optimizer over *net*: TF-style RMSProp (eps inside the sqrt, ms init to ones,
    LR folded into momentum) or Momentum, with per-step LR array *lr* and the decay groups."""
    groups = param_groups(net, cfg.weight_decay, cfg.weight_decay_skip_bn_bias)
    learning_rate = ms.Tensor(lr, ms.float32) if isinstance(lr, np.ndarray) else float(lr)
    scale = _optimizer_loss_scale(cfg)
    if cfg.optim == "rmsprop":
        return nn.RMSProp(
            groups,
            learning_rate=learning_rate,
            decay=cfg.decay,
            momentum=cfg.momentum,
            epsilon=cfg.epsilon,
            weight_decay=cfg.weight_decay,
            loss_scale=scale,
        )
    return nn.Momentum(
        groups,
        learning_rate=learning_rate,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        loss_scale=scale,
    )


def check_amp_supported(cfg: Config, device_target: str | None = None) -> None:
    """Raise ConfigError when the loss-scale choice cannot run on the device, naming the choices."""
    problem = loss_scale_problem(cfg.loss_scale_type, device_target or cfg.device_target)
    if problem:
        raise ConfigError(problem)


def _loss_scale_manager(cfg: Config) -> ms.amp.LossScaleManager:
    if cfg.loss_scale_type == "dynamic":
        return ms.amp.DynamicLossScaleManager(cfg.loss_scale, scale_factor=2, scale_window=2000)
    # Overflowing steps still update, as in the zoo; drop-overflow needs NPU/GPU status ops.
    return ms.amp.FixedLossScaleManager(cfg.loss_scale, drop_overflow_update=False)


def build_train_cell(cfg: Config, net: nn.Cell, optimizer: nn.Optimizer) -> nn.Cell:
    """One-step train cell: loss (zoo smoothing) + AMP level + loss scale, in train mode.

    Returns a cell called as ``cell(images, labels) -> loss``. Uses MindSpore's
    ``amp.build_train_network`` so O2 keeps BN and the loss in fp32 and O3 casts everything.
    """
    # The device really in use decides, not only the config's claim.
    check_amp_supported(cfg, ms.get_context("device_target"))
    num_classes = cfg.num_classes
    if num_classes is None:
        raise ConfigError("num_classes must be resolved (from classes.json) before training")
    loss = CrossEntropySmooth(num_classes, cfg.smooth_factor)
    cell = ms.amp.build_train_network(
        net, optimizer, loss, level=cfg.amp_level, loss_scale_manager=_loss_scale_manager(cfg)
    )
    cell.set_train(True)
    return cell
