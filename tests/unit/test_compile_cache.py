"""The compile cache is switched through the environment, scoped, and used once per command."""

from __future__ import annotations

import os
import sys

import pytest
from support.images import write_image_tree


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


@pytest.fixture
def cache_requested(tmp_path, monkeypatch):
    """The environment conftest gives a test process (cache asked for), with fresh module state;
    monkeypatch puts every variable and the process's execution mode back afterwards."""
    import mindspore as ms

    from irv2_core.runtime import compile_cache as cc

    monkeypatch.setenv(cc.ENABLE_VAR, "1")
    monkeypatch.setenv(cc.PATH_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv(cc.REQUESTED_VAR, raising=False)
    monkeypatch.setattr(cc, "_state", {"allowed": False, "used": False})
    mode = ms.get_context("mode")
    yield cc
    ms.set_context(mode=mode)


def _train_argv(tmp_path) -> list[str]:
    """``irv2 train`` on a tiny image tree into a run folder that already holds a run: the
    command sets up its context (and so its compile cache), then refuses before building."""
    write_image_tree(tmp_path / "data", classes=2, per_class=2, split="train")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.json").write_text('{"path": "x", "epoch": 1, "step": 1}')
    data = str(tmp_path / "data")
    return [
        "train",
        "--data",
        data,
        "--out",
        str(run),
        "--preset",
        "cpu-smoke",
        "--set",
        "batch_size=2",
    ]


def test_an_in_process_cli_call_leaves_the_compile_cache_off(cache_requested, tmp_path, capsys):
    """A test or notebook that calls ``main([...])`` has compiled other graphs before: turning
    the order-numbered cache on there would let its later graphs load the wrong cached ones."""
    from irv2_core.cli import main

    cc = cache_requested
    assert main(_train_argv(tmp_path)) == 2
    assert "already holds a training run" in capsys.readouterr().err  # it got past the setup
    assert not cc.cache_enabled() and os.environ[cc.ENABLE_VAR] == "0"
    assert os.environ[cc.PATH_VAR] == str(tmp_path / "cache")  # not pointed at a scoped folder
    assert not cc._state["allowed"] and not cc._state["used"]


def test_the_command_as_its_own_process_opts_in(cache_requested, tmp_path, monkeypatch):
    """``irv2 train`` / ``python -m irv2_core train`` (argv from sys.argv) keeps the cache."""
    from irv2_core.cli import main

    cc = cache_requested
    argv = ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", ["irv2", *argv])
    assert main() == 2  # no data: refused before any context or graph
    assert cc._state["allowed"] and os.environ[cc.ENABLE_VAR] == "1"


def test_training_a_stage_starts_has_the_cache_on_unless_someone_chose(monkeypatch, tmp_path):
    """Flow runs train with the scoped cache on by default (the process is an ``irv2 train``
    command); a user's MS_COMPILER_CACHE_ENABLE=0 is kept, and so is a parent's choice that
    an in-process switch-off hid."""
    from irv2_core.runtime import compile_cache as cc

    on = cc.worker_cache_env({})
    assert (on[cc.ENABLE_VAR], on[cc.PATH_VAR]) == ("1", cc.DEFAULT_PATH)
    assert cc.worker_cache_env({cc.ENABLE_VAR: "0"})[cc.ENABLE_VAR] == "0"
    hidden = {cc.ENABLE_VAR: "0", cc.REQUESTED_VAR: "1", cc.PATH_VAR: str(tmp_path)}
    assert cc.worker_cache_env(dict(hidden)) == hidden  # the child turns itself back on
    # a process that switched the cache off without anyone having asked: still nobody's choice
    monkeypatch.delenv(cc.ENABLE_VAR, raising=False)
    monkeypatch.delenv(cc.REQUESTED_VAR, raising=False)
    cc.set_cache_enabled(False)
    assert cc.worker_cache_env(dict(os.environ))[cc.ENABLE_VAR] == "1"
