"""The rate card a flow run prices its device-hours with, when its parameters give none: the
Prefect Variable ``irv2-rate-card`` (set once per workspace, e.g. in the UI's Variables page)."""

from __future__ import annotations

from pydantic import ValidationError

from irv2_core.errors import Irv2Error
from irv2_core.runtime.cost import RateCard

__all__ = ["RATE_CARD_VARIABLE", "rate_card_variable"]

RATE_CARD_VARIABLE = "irv2-rate-card"


def rate_card_variable(name: str = RATE_CARD_VARIABLE) -> RateCard | None:
    """The workspace's rate card (the Variable *name*), or None when it is not set. Irv2Error,
    naming the Variable, when it is set but is not a valid rate card."""
    from prefect.variables import Variable

    value = Variable.get(name, default=None)
    if value is None:
        return None
    try:
        return RateCard.model_validate(value)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise Irv2Error(
            f"Prefect Variable {name} is not a rate card ({problems}); set it to "
            '{"prices": {"npu": 1.2, "cpu": 0.01}, "currency": "USD"} or delete it'
        ) from None
