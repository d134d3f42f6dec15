"""What a run cost: device-hours per stage (wall time x devices held), a price from a rate card,
and a budget that stops the run before it spends more.

A flow run's pod holds its devices for the whole run, so every stage counts the run's devices
(``device_num`` NPUs or GPUs; CPU cores on CPU); training across nodes counts every node's.
The rate card is a price per device-hour by kind (none by default: then only device-hours are
shown). Budgets are in device-hours, so they mean the same with or without a rate card.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator

from irv2_core.errors import Irv2Error

__all__ = ["DEVICE_KINDS", "BudgetExceeded", "Meter", "RateCard", "devices_held"]

DEVICE_KINDS = ("npu", "gpu", "cpu")  # an NPU, a GPU, or one CPU core, per hour
_KIND_OF_TARGET = {"Ascend": "npu", "GPU": "gpu", "CPU": "cpu"}


class BudgetExceeded(Irv2Error):
    """The run would spend more device-hours than its budget: stopped (not retried)."""


class RateCard(BaseModel):
    """Price of one device-hour by kind (``npu``, ``gpu``, ``cpu``), in *currency*."""

    model_config = ConfigDict(extra="forbid")

    prices: dict[str, float] = Field(description="device kind -> price of one device-hour")
    currency: str = Field(default="USD", min_length=1, max_length=8)

    @field_validator("prices")
    @classmethod
    def _known_and_not_negative(cls, prices: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(prices) - set(DEVICE_KINDS))
        if unknown:
            raise ValueError(f"unknown device kinds {unknown}: use {', '.join(DEVICE_KINDS)}")
        negative = sorted(k for k, v in prices.items() if v < 0)
        if negative:
            raise ValueError(f"negative prices for {negative}: a price is >= 0 per device-hour")
        return prices


def devices_held(device_target: str, device_num: int, nodes: int = 1) -> tuple[str, int]:
    """``(kind, count)`` a stage holds: *device_num* NPUs or GPUs on each of *nodes*, or this
    machine's CPU cores (``os.sched_getaffinity``: what a container was given)."""
    kind = _KIND_OF_TARGET.get(device_target)
    if kind is None:
        raise Irv2Error(f"device_target {device_target!r}: one of {', '.join(_KIND_OF_TARGET)}")
    if kind == "cpu":
        return kind, len(os.sched_getaffinity(0)) * nodes
    return kind, device_num * nodes


class Meter:
    """The running total of a flow run's device-hours (and cost), checked against a budget."""

    def __init__(self, card: RateCard | None = None, budget_device_hours: float | None = None):
        self.card, self.budget = card, budget_device_hours
        self.device_hours = 0.0
        self.cost = 0.0 if card else None

    def record(self, seconds: float, kind: str, count: int) -> dict[str, float | str | None]:
        """Add one stage; its ``devices``, ``device_hours`` and ``cost`` (None: no rate card)."""
        hours = seconds * count / 3600
        self.device_hours += hours
        cost = None
        if self.card is not None:
            cost = hours * self.card.prices.get(kind, 0.0)
            self.cost += cost
        return {"devices": f"{count} {kind}", "device_hours": round(hours, 6),
                "cost": None if cost is None else round(cost, 6)}  # fmt: skip

    def remaining_s(self, count: int) -> float | None:
        """Seconds a stage holding *count* devices may run before the budget is spent."""
        if self.budget is None:
            return None
        return max(0.0, (self.budget - self.device_hours) * 3600 / max(count, 1))

    def check(self, stage: str) -> None:
        """Raise BudgetExceeded when the total is past the budget (after *stage*)."""
        if self.budget is not None and self.device_hours > self.budget:
            raise BudgetExceeded(
                f"stopped after {stage}: {self.device_hours:.4g} device-hours spent, over the "
                f"budget of {self.budget:g} (parameter budget_device_hours)"
            )

    def totals(self) -> dict[str, float | str | None]:
        return {"device_hours": round(self.device_hours, 6),
                "cost": None if self.cost is None else round(self.cost, 6),
                "currency": self.card.currency if self.card else None}  # fmt: skip
