"""Running a flow's tasks one after another while recording each one's wall time, state and
device-hours, and keeping the run within its budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from irv2_core.records import Record
from irv2_core.runtime.cost import BudgetExceeded, Meter

__all__ = ["Stages"]

R = TypeVar("R", bound=Record)


class Stages:
    """Runs tasks one after another, recording each one's wall time, final state name and
    device-hours (*held*: the ``(kind, count)`` of devices a stage holds); with an object store,
    their results and cache records are persisted there. A stage does not start once the
    *meter*'s budget is spent, and the run stops after a stage that spent past it."""

    def __init__(
        self,
        storage: Any = None,
        meter: Meter | None = None,
        held: Callable[[str], tuple[str, int]] | None = None,
    ) -> None:
        self.timings: dict[str, dict[str, Any]] = {}
        self.storage = storage
        self.meter = meter or Meter()
        self.held = held or (lambda name: ("cpu", 1))

    def budget_s(self, name: str) -> float | None:
        """Seconds stage *name* may run before the budget is spent (None: no budget)."""
        return self.meter.remaining_s(self.held(name)[1])

    def __call__(self, name: str, task: Any, record: type[R], **kwargs: Any) -> R:
        """Run *task*; return its result (fresh or cached) read as *record*."""
        if self.budget_s(name) == 0:
            raise BudgetExceeded(
                f"not starting {name}: the budget of {self.meter.budget:g} device-hours is spent "
                f"({self.meter.device_hours:.4g} so far; parameter budget_device_hours)"
            )
        start = time.perf_counter()
        if self.storage is not None:
            task = task.with_options(result_storage=self.storage)
        state = task(**kwargs, return_state=True)
        seconds = time.perf_counter() - start
        spent = self.meter.record(seconds, *self.held(name))
        self.timings[name] = {"seconds": round(seconds, 3), "state": state.name, **spent}
        result = record.model_validate(state.result())  # raises the task's exception if failed
        self.meter.check(name)
        return result
