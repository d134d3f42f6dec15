"""irv2_core: Inception-ResNet-v2 on MindSpore as a library (no Prefect needed).

Stages: ``stage`` (object storage -> local), ``convert`` (images -> MindRecord), ``train``,
``evaluate``, ``export``, ``report``. Heavy modules import MindSpore lazily; importing the package
only applies the CPU speed setting (see ``_env``) so that it is in force before any op runs.
"""

from __future__ import annotations

from irv2_core.runtime.env import apply_cpu_speed_settings

apply_cpu_speed_settings()

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str):  # lazy: keep `import irv2_core` free of the 2 s MindSpore import
    if name in ("create_model", "list_models"):
        from irv2_core import models

        return getattr(models, name)
    raise AttributeError(f"module 'irv2_core' has no attribute {name!r}")
