"""Model builders, looked up by name: ``create_model("inception_resnet_v2", num_classes=...)``."""

from __future__ import annotations

from irv2_core.models import inception_resnet_v2 as _irv2  # noqa: F401  (registers the builder)
from irv2_core.models.inception_resnet_v2 import InceptionResNetV2, check_image_size
from irv2_core.models.registry import create_model, list_models, register_model

__all__ = [
    "InceptionResNetV2",
    "check_image_size",
    "create_model",
    "list_models",
    "register_model",
]
