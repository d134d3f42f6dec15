"""Process-level settings that must be in place before MindSpore runs its first op.

Without ``ONEDNN_MAX_CPU_ISA=AVX2`` the bundled oneDNN runs every spatial convolution on its
reference kernel on AVX-512 CPUs: IRv2 training becomes ~30x slower, silently. The variable is read
when the first oneDNN primitive is created, so setting it at package import (before any op) works
even if MindSpore is already imported. A user's explicit value is respected.
"""

from __future__ import annotations

import os

ONEDNN_ISA_VAR = "ONEDNN_MAX_CPU_ISA"
ONEDNN_ISA_DEFAULT = "AVX2"


def apply_cpu_speed_settings() -> str:
    """Set ONEDNN_MAX_CPU_ISA=AVX2 unless the user chose a value; return the value in force."""
    return os.environ.setdefault(ONEDNN_ISA_VAR, ONEDNN_ISA_DEFAULT)
