"""Inception-ResNet-v2 (Szegedy et al. 2016) as MindSpore cells, laid out like timm's model.

Attribute names follow timm (``conv2d_1a``, ``mixed_5b.branch1.0``, ``repeat.3.conv2d`` ...) so
that every parameter maps 1:1 onto a timm state-dict key (see ``irv2_core.models.weights``).
Two choices are MindSpore-specific but numerically identical to timm, and both are required for
a correct ONNX export: every padded stride-1 conv uses ``pad_mode="same"`` (the ONNX exporter
silently
mis-orders explicit 4-tuple pads), and Mixed_5b's avg-pool uses ``pad_mode="same"`` (which
excludes padding from the count, like timm's ``count_include_pad=False``, and lowers to a plain
AvgPool instead of the unexportable AvgPool3D).

Input contract (issue 12): ``construct`` takes RGB pixels 0..255, NCHW, as uint8 (what the data
pipeline ships) or float, and normalises them as its first op with the mean/std of the
``input_protocol`` it was built with (``metadata.EVAL_PROTOCOLS``; train and eval share it).
``input_protocol=None`` builds the timm contract instead: ``construct`` takes already-normalised
float32, which is how the timm-parity tests feed it. ``forward_features`` always takes normalised
float32 (the convolutional trunk only).
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import XavierUniform

from irv2_core.models.metadata import NUM_FEATURES, check_image_size, protocol_mean_std
from irv2_core.models.registry import register_model


def _conv(cin: int, cout: int, kernel, stride: int = 1, same: bool = False, bias: bool = False):
    """Conv2d with the zoo's init (XavierUniform weight, zero bias); valid pad unless *same*."""
    return nn.Conv2d(
        cin,
        cout,
        kernel,
        stride=stride,
        pad_mode="same" if same else "valid",
        has_bias=bias,
        weight_init=XavierUniform(),
        bias_init="zeros" if bias else None,
    )


class InputNormalize(nn.Cell):
    """Pixels 0..255 (uint8 or float, NCHW) -> float32 ``(x - 255*mean) / (255*std)``.

    The same arithmetic, in float32, as the ``vision.Normalize`` the data pipeline used to run,
    so moving it into the network does not change what the trunk sees. Mean and std are graph
    constants, not parameters: checkpoints keep exactly timm's tensors.
    """

    def __init__(self, protocol: str):
        super().__init__()
        mean, std = protocol_mean_std(protocol)
        self.protocol = protocol
        shape = (1, 3, 1, 1)
        self.mean = ms.Tensor(np.array(mean, np.float32).reshape(shape) * np.float32(255))
        self.std = ms.Tensor(np.array(std, np.float32).reshape(shape) * np.float32(255))

    def construct(self, x):
        return (ops.cast(x, ms.float32) - self.mean) / self.std


class BasicConv2d(nn.Cell):
    """Conv (no bias) -> BatchNorm (eps 1e-3, MindSpore momentum 0.9) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, same: bool = False):
        super().__init__()
        self.conv = _conv(cin, cout, kernel, stride, same)
        self.bn = nn.BatchNorm2d(cout, eps=0.001, momentum=0.9)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.relu(self.bn(self.conv(x)))


class Mixed5b(nn.Cell):
    """35x35: 192 -> 320 channels (96 + 64 + 96 + 64)."""

    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(192, 96, 1)
        self.branch1 = nn.SequentialCell(BasicConv2d(192, 48, 1), BasicConv2d(48, 64, 5, same=True))
        self.branch2 = nn.SequentialCell(
            BasicConv2d(192, 64, 1),
            BasicConv2d(64, 96, 3, same=True),
            BasicConv2d(96, 96, 3, same=True),
        )
        self.branch3 = nn.SequentialCell(
            nn.AvgPool2d(3, stride=1, pad_mode="same"), BasicConv2d(192, 64, 1)
        )

    def construct(self, x):
        return ops.concat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class Block35(nn.Cell):
    """Inception-ResNet-A (35x35x320): three branches, 1x1 up-projection, scaled residual."""

    def __init__(self, scale: float = 1.0, residual_bias: bool = True):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(320, 32, 1)
        self.branch1 = nn.SequentialCell(BasicConv2d(320, 32, 1), BasicConv2d(32, 32, 3, same=True))
        self.branch2 = nn.SequentialCell(
            BasicConv2d(320, 32, 1),
            BasicConv2d(32, 48, 3, same=True),
            BasicConv2d(48, 64, 3, same=True),
        )
        self.conv2d = _conv(128, 320, 1, bias=residual_bias)
        self.relu = nn.ReLU()

    def construct(self, x):
        out = ops.concat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)
        return self.relu(self.conv2d(out) * self.scale + x)


class Mixed6a(nn.Cell):
    """Reduction-A: 35x35x320 -> 17x17x1088 (384 + 384 + 320)."""

    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(320, 384, 3, stride=2)
        self.branch1 = nn.SequentialCell(
            BasicConv2d(320, 256, 1),
            BasicConv2d(256, 256, 3, same=True),
            BasicConv2d(256, 384, 3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def construct(self, x):
        return ops.concat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Block17(nn.Cell):
    """Inception-ResNet-B (17x17x1088): 1x1 and 1x7->7x1 branches, scaled residual."""

    def __init__(self, scale: float = 1.0, residual_bias: bool = True):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(1088, 192, 1)
        self.branch1 = nn.SequentialCell(
            BasicConv2d(1088, 128, 1),
            BasicConv2d(128, 160, (1, 7), same=True),
            BasicConv2d(160, 192, (7, 1), same=True),
        )
        self.conv2d = _conv(384, 1088, 1, bias=residual_bias)
        self.relu = nn.ReLU()

    def construct(self, x):
        out = ops.concat((self.branch0(x), self.branch1(x)), 1)
        return self.relu(self.conv2d(out) * self.scale + x)


class Mixed7a(nn.Cell):
    """Reduction-B: 17x17x1088 -> 8x8x2080 (384 + 288 + 320 + 1088)."""

    def __init__(self):
        super().__init__()
        self.branch0 = nn.SequentialCell(BasicConv2d(1088, 256, 1), BasicConv2d(256, 384, 3, 2))
        self.branch1 = nn.SequentialCell(BasicConv2d(1088, 256, 1), BasicConv2d(256, 288, 3, 2))
        self.branch2 = nn.SequentialCell(
            BasicConv2d(1088, 256, 1),
            BasicConv2d(256, 288, 3, same=True),
            BasicConv2d(288, 320, 3, stride=2),
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def construct(self, x):
        return ops.concat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class Block8(nn.Cell):
    """Inception-ResNet-C (8x8x2080); the final one has scale 1.0 and no ReLU."""

    def __init__(self, scale: float = 1.0, no_relu: bool = False, residual_bias: bool = True):
        super().__init__()
        self.scale = scale
        self.no_relu = no_relu
        self.branch0 = BasicConv2d(2080, 192, 1)
        self.branch1 = nn.SequentialCell(
            BasicConv2d(2080, 192, 1),
            BasicConv2d(192, 224, (1, 3), same=True),
            BasicConv2d(224, 256, (3, 1), same=True),
        )
        self.conv2d = _conv(448, 2080, 1, bias=residual_bias)
        self.relu = nn.ReLU()

    def construct(self, x):
        out = ops.concat((self.branch0(x), self.branch1(x)), 1)
        out = self.conv2d(out) * self.scale + x
        if self.no_relu:
            return out
        return self.relu(out)


class InceptionResNetV2(nn.Cell):
    """The full classifier: input normalisation, stem, 10xA, Reduction-A, 20xB, Reduction-B,
    10xC, 1x1 conv, head.

    ``construct`` takes pixels 0..255 and normalises them with *input_protocol*'s mean/std (or,
    with ``input_protocol=None``, takes normalised float32 as timm does); ``forward_features``
    maps normalised float32 to the (N, 1536, h, w) map before pooling (1x1 at 75 px, 8x8 at
    299 px); ``forward_head`` adds global mean pooling, dropout and the Dense classifier.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        residual_bias: bool = True,
        drop_rate: float = 0.2,
        input_protocol: str | None = "zoo",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.input_protocol = input_protocol
        self.takes_pixels = input_protocol is not None
        self.normalize = InputNormalize(input_protocol) if self.takes_pixels else nn.Identity()
        self.num_features = NUM_FEATURES
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, same=True)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        self.mixed_5b = Mixed5b()
        self.repeat = nn.SequentialCell([Block35(0.17, residual_bias) for _ in range(10)])
        self.mixed_6a = Mixed6a()
        self.repeat_1 = nn.SequentialCell([Block17(0.10, residual_bias) for _ in range(20)])
        self.mixed_7a = Mixed7a()
        self.repeat_2 = nn.SequentialCell([Block8(0.20, False, residual_bias) for _ in range(9)])
        self.block8 = Block8(1.0, no_relu=True, residual_bias=residual_bias)
        self.conv2d_7b = BasicConv2d(2080, NUM_FEATURES, 1)
        self.use_dropout = drop_rate > 0
        self.dropout = nn.Dropout(p=drop_rate) if self.use_dropout else nn.Identity()
        self.classif = nn.Dense(
            NUM_FEATURES, num_classes, weight_init=XavierUniform(), bias_init="zeros"
        )

    def __call__(self, *args, **kwargs):
        # A too-small input otherwise fails deep inside graph compilation with a cryptic
        # message about kernel sizes; check it here, where the user's call enters.
        if args and hasattr(args[0], "shape") and len(args[0].shape) == 4:
            check_image_size(args[0].shape[2], args[0].shape[3])
        return super().__call__(*args, **kwargs)

    def forward_features(self, x):
        """Backbone features before pooling: (N, 1536, h, w)."""
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
        x = self.conv2d_4a(self.conv2d_3b(self.maxpool_3a(x)))
        x = self.mixed_5b(self.maxpool_5a(x))
        x = self.mixed_6a(self.repeat(x))
        x = self.mixed_7a(self.repeat_1(x))
        x = self.block8(self.repeat_2(x))
        return self.conv2d_7b(x)

    def forward_head(self, features):
        """Global mean pool, dropout, classifier: (N, 1536, h, w) -> logits."""
        return self.classif(self.dropout(ops.mean(features, (2, 3))))

    def construct(self, x):
        return self.forward_head(self.forward_features(self.normalize(x)))


@register_model
def inception_resnet_v2(
    num_classes: int = 1000,
    residual_bias: bool = True,
    drop_rate: float = 0.2,
    input_protocol: str | None = "zoo",
) -> InceptionResNetV2:
    """Inception-ResNet-v2; residual_bias=True is timm/slim (55,843,464 params at 1000 classes).

    *input_protocol* (``zoo``/``inception``) makes it take 0..255 pixels and normalise inside;
    None makes it take normalised float32 (timm's contract)."""
    return InceptionResNetV2(num_classes, residual_bias, drop_rate, input_protocol)
