"""irv2_core: Inception-ResNet-v2 on MindSpore as a library (no Prefect needed).

Stages: ``stage`` (object storage -> local), ``convert`` (images -> MindRecord), ``train``,
``evaluate``, ``export``, ``report``. Importing the package only applies the CPU speed setting
(see ``runtime.env``) so that it is in force before any op runs; it imports no MindSpore.

Layers point one way (a test walks the imports): ``runtime`` -> ``models`` / ``config`` /
``data`` -> ``evaluation`` / ``training`` -> ``export`` / ``report`` -> ``cli``.
"""

from __future__ import annotations

from irv2_core.runtime.env import apply_cpu_speed_settings

apply_cpu_speed_settings()

__version__ = "0.1.0"

__all__ = ["__version__"]
