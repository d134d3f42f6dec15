"""The compile cache is switched through the environment, scoped, and used once per command."""

from __future__ import annotations

import os


def test_the_cache_is_switched_through_the_environment_not_the_deprecated_context(
    tmp_path, monkeypatch
):
    """MindSpore 2.10 reads MS_COMPILER_CACHE_ENABLE at every compile (checked: set after import,
    on and off, it is honoured); set_context(enable_compile_cache=...) is deprecated."""
    import mindspore as ms

    from irv2_core.runtime import compile_cache as cc

    monkeypatch.setenv("MS_COMPILER_CACHE_ENABLE", "1")
    monkeypatch.setenv("MS_COMPILER_CACHE_PATH", str(tmp_path))
    monkeypatch.delenv("IRV2_COMPILER_CACHE_ENABLE", raising=False)
    monkeypatch.setattr(cc, "_state", {"allowed": False, "used": False})
    # not an irv2 command: off here, but a child irv2 command still sees that it was asked for
    assert cc.configure_compile_cache("train|a") is None
    assert os.environ["MS_COMPILER_CACHE_ENABLE"] == "0" and not cc.cache_enabled()
    assert os.environ["IRV2_COMPILER_CACHE_ENABLE"] == "1"
    # an irv2 command (a child inherits the environment above): on, in a scoped folder, once
    cc.allow_scoped_cache()
    path = cc.configure_compile_cache("train|a")
    assert path is not None and path.startswith(str(tmp_path / "irv2-"))
    assert os.environ["MS_COMPILER_CACHE_PATH"] == path and cc.cache_enabled()
    assert cc.configure_compile_cache("evaluate|b") is None and not cc.cache_enabled()
    assert ms.get_context("enable_compile_cache") is None  # the context API was never touched
