"""The software stack a process runs on: what a resumed run must share with the run it resumes.

Recorded in every checkpoint (inside the file) and in the run's ``train_summary.json`` /
``run.json``; a resume on a different stack is refused, naming what differs, unless the run says
it accepts the change. A new driver, CANN, MindSpore or package set can change numerics or
compiled graphs: a model trained half on one and half on another should be a decision, not an
accident.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from importlib import metadata
from pathlib import Path

__all__ = ["IMAGE_ENV", "software_stack", "stack_differences"]

IMAGE_ENV = "IRV2_IMAGE"  # the container image (set by the Kubernetes job template)
_ASCEND = Path(os.environ.get("ASCEND_HOME_PATH", "/usr/local/Ascend/ascend-toolkit/latest"))
_ASCEND_DRIVER = Path("/usr/local/Ascend/driver/version.info")
_NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


def _read_version(path: Path, pattern: str) -> str | None:
    """The first match of *pattern*'s group in *path*, or None when the file is absent."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(pattern, text, re.MULTILINE)
    return found.group(1).strip() if found else None


def _cann_version() -> str | None:
    for name in ("version.cfg", "ascend_toolkit_install.info", "compiler/version.info"):
        found = _read_version(_ASCEND / name, r"^\s*(?:version|Version)\s*=\s*(\S+)")
        if found:
            return found
    return None


def _driver_version() -> str | None:
    return _read_version(_ASCEND_DRIVER, r"^\s*Version\s*=\s*(\S+)") or _read_version(
        _NVIDIA_DRIVER, r"Kernel Module\s+(\S+)"
    )


def _packages_digest() -> str:
    """sha256 (16 hex) of the installed distributions' sorted ``name==version`` lines."""
    lines = sorted(
        {f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in metadata.distributions()}
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def software_stack(device_target: str) -> dict[str, str | None]:
    """MindSpore and device target, CANN and driver versions (None where absent), Python, the
    project version and training-code fingerprint, the installed packages' digest and the
    container image (``IRV2_IMAGE``, when set)."""
    import mindspore as ms

    from irv2_core import __version__
    from irv2_core.runtime.fingerprint import training_code_version

    return {
        "mindspore": ms.__version__,
        "device_target": device_target,
        "cann": _cann_version(),
        "driver": _driver_version(),
        "python": platform.python_version(),
        "irv2": __version__,
        "code": training_code_version()[:16],
        "packages": _packages_digest(),
        "image": os.environ.get(IMAGE_ENV) or None,
    }


def stack_differences(saved: dict[str, str | None], now: dict[str, str | None]) -> list[str]:
    """``name: saved -> now`` for each part of the stack that changed (parts one side does not
    record, e.g. from an older release, are not compared)."""
    return [
        f"{key}: {saved[key]} -> {now[key]}"
        for key in sorted(saved.keys() & now.keys())
        if saved[key] != now[key]
    ]
