"""Whether a newly trained model replaces the one in service, and the record of who is.

- ``stats``: McNemar's exact test, the paired bootstrap, per-class recall;
- ``gate``: the rules (deployment parameters) and the verdict: promote, reject or ask;
- ``service``: ``models/<deployment>/current.json`` with its history, changed through one
  conditional write;
- ``aliases``: ``champion``, ``challenger`` and other names for a deployment's models; putting
  a named or earlier model in service (rollback).
"""

from __future__ import annotations

from irv2_core.promotion.aliases import (
    CHALLENGER,
    CHAMPION,
    read_aliases,
    resolve,
    rollback,
    serve,
    set_alias,
)
from irv2_core.promotion.gate import GateRules, Verdict, comparable, compare, decide, judge
from irv2_core.promotion.service import current_key, promote, read_current

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GateRules",
    "Verdict",
    "comparable",
    "compare",
    "current_key",
    "decide",
    "judge",
    "promote",
    "read_aliases",
    "read_current",
    "resolve",
    "rollback",
    "serve",
    "set_alias",
]
