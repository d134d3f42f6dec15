"""Running a flow's tasks one after another while recording each one's wall time and state."""

from __future__ import annotations

import time
from typing import Any, TypeVar

from irv2_core.records import Record

__all__ = ["Stages"]

R = TypeVar("R", bound=Record)


class Stages:
    """Runs tasks one after another, recording each one's wall time and final state name; with
    an object store, their results and cache records are persisted there."""

    def __init__(self, storage: Any = None) -> None:
        self.timings: dict[str, dict[str, Any]] = {}
        self.storage = storage

    def __call__(self, name: str, task: Any, record: type[R], **kwargs: Any) -> R:
        """Run *task*; return its result (fresh or cached) read as *record*."""
        start = time.perf_counter()
        if self.storage is not None:
            task = task.with_options(result_storage=self.storage)
        state = task(**kwargs, return_state=True)
        seconds = time.perf_counter() - start
        self.timings[name] = {"seconds": round(seconds, 3), "state": state.name}
        return record.model_validate(state.result())  # raises the task's exception if it failed
