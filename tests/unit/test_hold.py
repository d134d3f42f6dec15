"""The test-only training hold (irv2_core/runtime/hold.py): what the kill tests rely on."""

from __future__ import annotations

import json
import os
import threading

import pytest

from irv2_core.errors import Irv2Error
from irv2_core.runtime.hold import HELD, HOLD_ENV, RELEASE, hold_at, parse_hold


def test_unset_or_another_step_never_holds(monkeypatch, tmp_path):
    monkeypatch.delenv(HOLD_ENV, raising=False)
    assert hold_at(3) is False
    monkeypatch.setenv(HOLD_ENV, f"4:{tmp_path}")
    assert hold_at(3) is False and not (tmp_path / HELD).exists()


@pytest.mark.parametrize("value", ["4", ":/tmp/x", "four:/tmp/x", "4:"])
def test_a_malformed_setting_is_refused_saying_what_it_should_be(value):
    with pytest.raises(Irv2Error, match="<step>:<folder>"):
        parse_hold(value)


def test_it_holds_after_the_flush_until_released_and_only_once(monkeypatch, tmp_path):
    monkeypatch.setenv(HOLD_ENV, f"2:{tmp_path / 'h'}")
    order: list[str] = []
    lines: list[str] = []

    def flush() -> None:
        order.append("flush" if not (tmp_path / "h" / HELD).exists() else "flush after held")

    result: list[bool] = []
    hold = lambda: result.append(hold_at(2, flush, lines.append))  # noqa: E731
    holder = threading.Thread(target=hold, daemon=True)  # a failed check must not hang the run
    holder.start()
    held = tmp_path / "h" / HELD
    for _ in range(400):
        if held.exists() and lines:
            break
        threading.Event().wait(0.01)
    holder.join(timeout=0.3)
    assert holder.is_alive(), "hold_at returned before the release"
    assert json.loads(held.read_text()) == {"pid": os.getpid(), "step": 2}
    assert order == ["flush"] and HOLD_ENV in lines[0]
    (tmp_path / "h" / RELEASE).touch()
    holder.join(timeout=10)
    assert result == [True] and "released" in lines[-1]
    assert hold_at(2) is False  # the folder has held: a retry trains on


def test_a_held_process_that_is_told_to_stop_stops_holding(monkeypatch, tmp_path):
    """A SIGTERM while held (the cancel and preemption tests): the hold ends without a release,
    so training goes on to save its step instead of waiting for SIGKILL."""
    monkeypatch.setenv(HOLD_ENV, f"1:{tmp_path}")
    told = threading.Event()
    timer = threading.Timer(0.3, told.set)
    timer.start()
    assert hold_at(1, interrupted=told.is_set) is True
    assert told.is_set() and not (tmp_path / RELEASE).exists()
