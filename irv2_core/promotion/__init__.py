"""Whether a newly trained model replaces the one in service, and the record of who is.

- ``stats``: McNemar's exact test, the paired bootstrap, per-class recall;
- ``gate``: the rules (deployment parameters) and the verdict: promote, reject or ask;
- ``service``: ``models/<deployment>/current.json`` with its history, promotion and rollback
  through one conditional write.
"""

from __future__ import annotations

from irv2_core.promotion.gate import GateRules, Verdict, comparable, compare, decide, judge
from irv2_core.promotion.service import current_key, promote, read_current, rollback

__all__ = [
    "GateRules",
    "Verdict",
    "comparable",
    "compare",
    "current_key",
    "decide",
    "judge",
    "promote",
    "read_current",
    "rollback",
]
