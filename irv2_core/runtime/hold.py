"""A test-only hold: training stops at a named step until released, so that a test can kill or
inspect it at that exact point instead of racing it with "headroom" epochs.

``IRV2_TEST_HOLD=<step>:<folder>``: the process that trains step *step* (rank 0 of a job), once
that step is trained and its checkpoint, if one was due, is saved and in the store, creates
``<folder>/held.json`` (its pid and step) and waits until ``<folder>/release`` exists. A folder
holds once: a later process (a retry that trains the step again) finds ``held.json`` and goes on.
Unset in production; a set variable is named in the run log, so a held run never looks hung
without a reason.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from irv2_core.errors import Irv2Error

HOLD_ENV = "IRV2_TEST_HOLD"
HELD, RELEASE = "held.json", "release"
POLL_S = 0.05

__all__ = ["HELD", "HOLD_ENV", "RELEASE", "hold_at", "parse_hold"]


def parse_hold(value: str | None) -> tuple[int, Path] | None:
    """``(step, folder)`` from the variable's *value*; None when unset or empty."""
    if not value:
        return None
    step, sep, folder = value.partition(":")
    if not sep or not step.strip().isdigit() or not folder:
        raise Irv2Error(
            f"{HOLD_ENV}={value!r} is not '<step>:<folder>' (a test-only setting: unset it)"
        )
    return int(step), Path(folder)


def hold_at(
    step: int,
    before: Callable[[], None] | None = None,
    log=None,
    interrupted: Callable[[], bool] | None = None,
) -> bool:
    """Hold here when ``IRV2_TEST_HOLD`` names *step* and its folder has not held yet; return
    whether this call held. *before* runs first (the mirror's flush: the checkpoint is in the
    store when the test sees ``held.json``); *log* gets one line before and one after. The hold
    also ends once *interrupted()* is true (a SIGTERM: a held process stops as any other)."""
    hold = parse_hold(os.environ.get(HOLD_ENV))
    if hold is None or hold[0] != step:
        return False
    folder = hold[1]
    folder.mkdir(parents=True, exist_ok=True)
    if before is not None:
        before()
    try:  # exclusive create: exactly one process holds per folder
        fd = os.open(folder / HELD, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        json.dump({"pid": os.getpid(), "step": step}, out)
    if log is not None:
        log(f"hold: {HOLD_ENV} holds training after step {step} until {folder / RELEASE} exists")
    while not (folder / RELEASE).exists():
        if interrupted is not None and interrupted():
            break
        time.sleep(POLL_S)
    if log is not None:
        log(f"hold: released after step {step}")
    return True
