"""What callers need to know about the network without building it (pure Python, no MindSpore).

Kept next to the model, as timm keeps ``PretrainedCfg``: the smallest input, the feature width, the
default input size and the two evaluation protocols with their mean/std. The config validates
against these, the transforms and the exporter read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from irv2_core.errors import Irv2Error

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "EVAL_PROTOCOLS",
    "MIN_IMAGE_SIZE",
    "NUM_FEATURES",
    "TIMM_PROTOCOL",
    "EvalProtocol",
    "check_image_size",
    "protocol_mean_std",
]

MIN_IMAGE_SIZE = 75  # the smallest input for which every valid conv in IRv2 still has room
DEFAULT_IMAGE_SIZE = 299
NUM_FEATURES = 1536  # width of the pooled features in front of the classifier


@dataclass(frozen=True)
class EvalProtocol:
    """How an evaluation image is resized, cropped and normalised (mean/std in [0, 1] units)."""

    crop_pct: float
    square_resize: bool  # True: resize to a square (aspect not kept), as the model zoo does
    interpolation: str  # "linear" or "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


EVAL_PROTOCOLS: dict[str, EvalProtocol] = {
    # the model zoo's eval: square resize to size/0.875, center crop, ImageNet mean/std
    "zoo": EvalProtocol(0.875, True, "linear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # what timm's published weights expect: shorter side to size/0.8975 bicubic, mean = std = 0.5
    "inception": EvalProtocol(0.8975, False, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
TIMM_PROTOCOL = "inception"  # the protocol timm's IRv2 weights were trained with


def check_image_size(height: int, width: int | None = None) -> None:
    """Raise Irv2Error unless an input of *height* x *width* pixels is large enough for IRv2."""
    width = height if width is None else width
    if height is None or width is None or height < 0 or width < 0:
        return  # dynamic dimensions: nothing to check before run time
    if min(height, width) < MIN_IMAGE_SIZE:
        raise Irv2Error(
            f"input images are {height}x{width} px, but Inception-ResNet-v2 needs at least "
            f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} (its valid-padded convs and pools leave no pixels "
            f"below that); resize the input or set image_size >= {MIN_IMAGE_SIZE}"
        )


def protocol_mean_std(protocol: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in [0, 1] units of eval protocol *protocol*; Irv2Error names the known ones."""
    try:
        p = EVAL_PROTOCOLS[protocol]
    except KeyError:
        raise Irv2Error(
            f"unknown eval protocol {protocol!r}; choose one of: {', '.join(EVAL_PROTOCOLS)}"
        ) from None
    return p.mean, p.std
