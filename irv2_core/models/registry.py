"""A tiny model registry: builders register under a name; ``create_model`` looks them up.

Keeping the lookup by name lets configs and the CLI say ``model: inception_resnet_v2`` and lets a
later variant be added without touching any caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from irv2_core.errors import Irv2Error

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a model builder under its function name (decorator); return it unchanged.

    A second builder with the same name is refused, so two modules can never silently shadow
    each other.
    """
    name = fn.__name__
    if name in _REGISTRY and _REGISTRY[name] is not fn:
        raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name].__module__}")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Sorted names of every registered model builder."""
    return sorted(_REGISTRY)


def create_model(
    name: str = "inception_resnet_v2",
    num_classes: int = 1000,
    residual_bias: bool = True,
    drop_rate: float = 0.2,
    **kwargs: Any,
):
    """Build the registered model *name* and return it as a MindSpore ``nn.Cell``.

    ``num_classes`` sets the classifier width, ``residual_bias`` keeps (timm/slim) or drops (the
    MindSpore zoo) the bias of the residual 1x1 up-projections, ``drop_rate`` is the dropout
    probability before the classifier. An unknown name raises Irv2Error listing the known ones.
    """
    try:
        builder = _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models()) or "(none)"
        raise Irv2Error(
            f"unknown model {name!r}; known models: {known}. "
            "Set `model:` in the config (or --model) to one of them."
        ) from None
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise Irv2Error(f"num_classes must be a positive integer, got {num_classes!r}")
    if not 0.0 <= float(drop_rate) < 1.0:
        raise Irv2Error(f"drop_rate must be in [0, 1), got {drop_rate!r}")
    return builder(
        num_classes=num_classes, residual_bias=residual_bias, drop_rate=drop_rate, **kwargs
    )
