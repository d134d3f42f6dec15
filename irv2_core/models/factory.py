"""``create_model`` / ``list_models`` with every built-in model registered."""

from __future__ import annotations

from irv2_core.models import inception_resnet_v2 as _irv2  # noqa: F401  (registers the builder)
from irv2_core.models.inception_resnet_v2 import InceptionResNetV2
from irv2_core.models.registry import create_model, list_models, register_model

__all__ = ["InceptionResNetV2", "create_model", "list_models", "register_model"]
