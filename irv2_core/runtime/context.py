"""The MindSpore execution context of a process: device and mode, and scoped switches.

:func:`setup_context` picks GRAPH or PyNative mode on the configured device and fails clearly when
that device is absent; :func:`pynative_mode` and :func:`compile_cache_disabled` change a setting
for one block (a one-shot forward, an export check) and restore the caller's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mindspore as ms
import numpy as np

from irv2_core.errors import Irv2Error
from irv2_core.runtime.compile_cache import (
    cache_enabled,
    configure_compile_cache,
    set_cache_enabled,
)

__all__ = ["compile_cache_disabled", "pynative_mode", "setup_context"]


def setup_context(cfg, cache_scope: str = "") -> str | None:
    """GRAPH (or PyNative) mode on ``cfg.device_target``; a clear error if that device is absent.

    *cache_scope* names the graphs this process will compile (see
    :mod:`irv2_core.runtime.compile_cache`); returns the compile cache folder in use, or None.
    """
    cache = configure_compile_cache(f"{cache_scope}|{cfg.model_dump_json()}")
    mode = ms.GRAPH_MODE if cfg.mode == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=mode)
    try:
        # set_device refuses any call once ops have run, even with the same target.
        if ms.get_context("device_target") != cfg.device_target:
            ms.set_device(cfg.device_target)
        (ms.Tensor(np.ones(1, np.float32)) + 1).asnumpy()  # the device fails on first use
    except (RuntimeError, ValueError) as exc:
        raise Irv2Error(
            f"device_target {cfg.device_target!r} cannot run here ({str(exc).splitlines()[0]}); "
            "use --set device_target=CPU (or --preset cpu-smoke) on a machine without it"
        ) from None
    return cache


@contextlib.contextmanager
def compile_cache_disabled() -> Iterator[None]:
    """Compile without MindSpore's compile cache inside the block, then restore the setting.

    The cache files are numbered by compile order in a process and validated only by a hash of
    the entry script's local imports, so two processes with the same entry script (two pytest
    runs, two `irv2` commands) that compile graphs in a different order load each other's
    graphs. An export and its verification must compile what they are given.
    """
    before = cache_enabled()
    set_cache_enabled(False)
    try:
        yield
    finally:
        set_cache_enabled(before)


@contextlib.contextmanager
def pynative_mode() -> Iterator[None]:
    """Run the block in PyNative mode, then restore the caller's mode.

    A one-shot forward (the export check, a few predictions) costs seconds uncompiled but a
    15-25 s graph compile in GRAPH mode, which an earlier stage in the process may have left on.
    """
    before = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=before)
