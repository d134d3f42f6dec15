"""Safe use of MindSpore's graph compile cache (``MS_COMPILER_CACHE_ENABLE``).

MindSpore names cached graphs by their order in the process (``compile_cache_0.mindir``, ``_1``
...) and validates them only by a hash of the entry script's own imports. Two runs whose first
graphs differ (another config, another input size, a test session that compiled something else
first) would silently load each other's graphs. So a cache is used only where graph order is
known: an ``irv2`` command process (the CLI opts in before any graph is built, and only when
the command is the process: an in-process ``main([...])`` call does not), in a folder
scoped by the command, every value that shapes its graphs and the package's source code.
Anywhere else the cache is turned off for the process.

The switch is the environment, as MindSpore 2.10 wants it (``set_context(enable_compile_cache=
...)`` is deprecated): ``MS_COMPILER_CACHE_ENABLE`` is read at every graph compile, so setting it
at run time turns the cache on or off for the graphs compiled from then on;
``MS_COMPILER_CACHE_PATH`` is read at the first cached compile of a process and kept after that.
Child processes inherit both, so turning the cache off here also records what was asked for in
``IRV2_COMPILER_CACHE_ENABLE``, from which a child ``irv2`` command takes its own decision.
"""

from __future__ import annotations

import hashlib
import os

import mindspore as ms

from irv2_core.runtime.fingerprint import code_fingerprint

__all__ = [
    "DEFAULT_PATH",
    "ENABLE_VAR",
    "PATH_VAR",
    "allow_scoped_cache",
    "cache_enabled",
    "configure_compile_cache",
    "set_cache_enabled",
    "worker_cache_env",
]

ENABLE_VAR = "MS_COMPILER_CACHE_ENABLE"
PATH_VAR = "MS_COMPILER_CACHE_PATH"
REQUESTED_VAR = "IRV2_COMPILER_CACHE_ENABLE"  # the user's choice, kept for child processes

DEFAULT_PATH = os.path.join(os.path.expanduser("~"), ".cache", "irv2", "ms-compile")

_state = {"allowed": False, "used": False}


def worker_cache_env(env: dict[str, str]) -> dict[str, str]:
    """*env* for a training process that a pipeline stage starts: the scoped cache on (in
    :data:`DEFAULT_PATH`) unless the environment already says otherwise. Safe there: the
    process is an ``irv2 train`` command, whose cache folder is scoped to its graphs."""
    if env.get(REQUESTED_VAR, env.get(ENABLE_VAR)) in (None, ""):  # nobody chose: on
        env[ENABLE_VAR] = env[REQUESTED_VAR] = "1"
    env.setdefault(PATH_VAR, DEFAULT_PATH)
    return env


def allow_scoped_cache() -> None:
    """Declare that this process is an irv2 command that has compiled no graph yet."""
    _state["allowed"] = True


def _context_flag() -> bool | None:
    """The deprecated context setting, if someone set it (it then wins over the environment)."""
    return ms.get_context("enable_compile_cache")


def cache_enabled() -> bool:
    """Whether the next graph compiled in this process would use the compile cache."""
    flag = _context_flag()
    if flag is None:
        return os.environ.get(ENABLE_VAR) == "1"
    return bool(flag)


def _requested() -> bool:
    """Whether the user asked for the cache (also when a parent irv2 process turned it off)."""
    flag = _context_flag()
    if flag is None:
        return os.environ.get(REQUESTED_VAR, os.environ.get(ENABLE_VAR)) == "1"
    return bool(flag)


def set_cache_enabled(enabled: bool, path: str | None = None) -> None:
    """Turn the cache on or off for the graphs compiled from now on in this process.

    Uses the environment variables; the deprecated context API only where a caller already set
    the context flag, since that would otherwise override the environment."""
    os.environ.setdefault(REQUESTED_VAR, os.environ.get(ENABLE_VAR, ""))  # "": nobody chose
    os.environ[ENABLE_VAR] = "1" if enabled else "0"
    if path is not None:
        os.environ[PATH_VAR] = path
    if _context_flag() is not None:
        ms.set_context(enable_compile_cache=enabled)
        if path is not None:
            ms.set_context(compile_cache_path=path)


def configure_compile_cache(scope: str) -> str | None:
    """Point a requested cache at a folder unique to *scope* (a string naming the command and all
    graph-shaping values) when allowed and first in this process; otherwise disable it.
    Returns the cache folder in use, or None."""
    if not _requested():
        if cache_enabled():  # an inconsistent environment: stay on the safe side
            set_cache_enabled(False)
        return None
    if not _state["allowed"] or _state["used"]:
        set_cache_enabled(False)
        return None
    base = os.environ.get(PATH_VAR) or ms.get_context("compile_cache_path")
    key = hashlib.sha256(f"{ms.__version__}|{code_fingerprint()}|{scope}".encode()).hexdigest()
    key = key[:20]
    path = os.path.join(base or ".", f"irv2-{key}")
    set_cache_enabled(True, path)
    _state["used"] = True
    return path
