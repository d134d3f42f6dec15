"""Safe use of MindSpore's graph compile cache (``MS_COMPILER_CACHE_ENABLE``).

MindSpore names cached graphs by their order in the process (``compile_cache_0.mindir``, ``_1``
...) and validates them only by a hash of the entry script's own imports. Two runs whose first
graphs differ (another config, another input size, a test session that compiled something else
first) would silently load each other's graphs. So a cache is used only where graph order is
known: an ``irv2`` command process (the CLI opts in before any graph is built), in a folder
scoped by the command, every value that shapes its graphs and the package's source code.
Anywhere else the cache is turned off for the process.
"""

from __future__ import annotations

import hashlib
import os

import mindspore as ms

from irv2_core.runtime.fingerprint import code_fingerprint

__all__ = ["allow_scoped_cache", "configure_compile_cache"]

_state = {"allowed": False, "used": False}


def allow_scoped_cache() -> None:
    """Declare that this process is an irv2 command that has compiled no graph yet."""
    _state["allowed"] = True


def _enabled() -> bool:
    flag = ms.get_context("enable_compile_cache")
    if flag is None:
        return os.environ.get("MS_COMPILER_CACHE_ENABLE") == "1"
    return bool(flag)


def configure_compile_cache(scope: str) -> str | None:
    """Point an enabled cache at a folder unique to *scope* (a string naming the command and all
    graph-shaping values) when allowed and first in this process; otherwise disable it.
    Returns the cache folder in use, or None."""
    if not _enabled():
        return None
    if not _state["allowed"] or _state["used"]:
        ms.set_context(enable_compile_cache=False)
        return None
    base = ms.get_context("compile_cache_path") or os.environ.get("MS_COMPILER_CACHE_PATH")
    key = hashlib.sha256(f"{ms.__version__}|{code_fingerprint()}|{scope}".encode()).hexdigest()
    key = key[:20]
    path = os.path.join(base or ".", f"irv2-{key}")
    ms.set_context(compile_cache_path=path)
    _state["used"] = True
    return path
