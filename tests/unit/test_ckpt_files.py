"""Checkpoint files: atomic, readable writes, and loads that survive page-cache pressure."""

from __future__ import annotations

import os

import numpy as np
import pytest

from irv2_core.errors import Irv2Error


@pytest.fixture
def small_ckpt(tmp_path):
    from mindspore import nn

    from irv2_core.models.ckpt_io import save_checkpoint_atomic

    net = nn.Dense(64, 64)
    return net, save_checkpoint_atomic(net, tmp_path / "w.ckpt")


def test_save_is_atomic_and_writable(small_ckpt, tmp_path):
    from irv2_core.runtime.io import FILE_MODE

    _, path = small_ckpt
    assert path.stat().st_mode & 0o777 == FILE_MODE  # MindSpore alone writes 0400
    assert [p.name for p in tmp_path.iterdir()] == ["w.ckpt"]  # no temp file left behind


def test_load_counts_reclaimable_page_cache(small_ckpt, monkeypatch):
    """MindSpore compares a .ckpt's size with MemFree only; with little *free* memory (the page
    cache full of earlier checkpoints) it refuses files the machine could easily hold."""
    import mindspore as ms

    from irv2_core.models.ckpt_io import read_checkpoint

    net, path = small_ckpt
    real_sysconf = os.sysconf

    def low_free_memory(name):  # one free page: what a page-cache-full machine reports
        return 1 if name == "SC_AVPHYS_PAGES" else real_sysconf(name)

    monkeypatch.setattr(os, "sysconf", low_free_memory)
    with pytest.raises(ValueError, match="exceeds current available memory"):
        ms.load_checkpoint(str(path))
    params = read_checkpoint(path)
    np.testing.assert_array_equal(params["weight"].asnumpy(), net.weight.asnumpy())


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    from irv2_core.models.ckpt_io import read_checkpoint

    bad = tmp_path / "half.ckpt"
    bad.write_bytes(b"\x08\x01" * 50)
    with pytest.raises(Irv2Error, match="truncated, corrupt or not a MindSpore checkpoint"):
        read_checkpoint(bad)
    with pytest.raises(Irv2Error, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.ckpt")
