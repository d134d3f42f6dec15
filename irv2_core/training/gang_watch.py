"""Following a gang job from the train task: submitted, its rank 0 log streamed, its end
waited for, and the Job deleted however the wait ends (completed, failed, timed out, budget
spent, or the task cancelled: Prefect turns that into an exception in this process)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from irv2_core.errors import Irv2Error
from irv2_core.training.gang import DONE, FAILED, NOT_STARTED, VolcanoGang

__all__ = ["GangFailed", "GangLimits", "GangNotStarted", "LogFollower", "run_gang"]


class GangFailed(Irv2Error):
    """The gang ended Failed/Aborted (Volcano had already restarted it ``maxRetry`` times)."""


class GangNotStarted(Irv2Error):
    """The gang was still not running after the start timeout: no room for all its pods."""


@dataclass
class GangLimits:
    start_timeout_s: float = 1800.0  # Pending longer than this: the cluster has no room
    timeout_s: float | None = None  # the whole job, from its submission
    poll_s: float = 5.0


def _stamp(line: str) -> tuple[str, str]:
    """(sortable timestamp, text) of a ``timestamps=True`` log line; the API trims trailing
    zeros of the nanoseconds, so they are padded back for comparison."""
    stamp, _, text = line.partition(" ")
    head, _, frac = stamp.rstrip("Z").partition(".")
    return f"{head}.{frac:0<9}", text


class LogFollower:
    """Passes each new line of pod 0's log to *on_line* once, across polls that each ask for a
    little more than the time since the last one."""

    def __init__(self, gang: VolcanoGang, on_line: Callable[[str], None]) -> None:
        self.gang, self.on_line = gang, on_line
        self.last, self.at_last = "", set()  # newest timestamp passed on, and its lines
        self.read_at: float | None = None

    def poll(self) -> None:
        since = None if self.read_at is None else math.ceil(time.monotonic() - self.read_at) + 5
        self.read_at = time.monotonic()
        for raw in self.gang.pod_log(0, since).splitlines():
            stamp, text = _stamp(raw)
            if stamp < self.last or (stamp == self.last and text in self.at_last):
                continue
            if stamp > self.last:
                self.last, self.at_last = stamp, set()
            self.at_last.add(text)
            self.on_line(text)


def _reasons(gang: VolcanoGang) -> str:
    return "; ".join(gang.pod_reasons()) or "no pod of it exists (is Volcano's scheduler running?)"


def run_gang(
    gang: VolcanoGang,
    limits: GangLimits,
    on_line: Callable[[str], None],
    check: Callable[[], None] | None = None,
) -> str:
    """Submit *gang* (replacing a Job left by a dead attempt), stream pod 0's log to *on_line*
    and return the phase it completed in; *check* is called every poll and may raise. The Job is
    deleted on the way out, whatever ends the wait."""
    spec = gang.spec
    gang.submit(replace_s=120)
    on_line(f"gang job {spec.namespace}/{spec.name} submitted: {spec.nodes} pods x "
            f"{spec.npus_per_node} NPUs, Volcano queue {spec.queue}")  # fmt: skip
    follower, started, seen = LogFollower(gang, on_line), time.monotonic(), None
    try:
        while True:
            phase = gang.phase()
            if phase != seen:
                on_line(f"gang job {spec.name}: {phase}")
                seen = phase
            follower.poll()
            if phase in DONE:
                return phase
            if phase in FAILED:
                raise GangFailed(f"gang job {spec.name} {phase}: {_reasons(gang)}")
            waited = time.monotonic() - started
            if phase in NOT_STARTED and waited > limits.start_timeout_s:
                raise GangNotStarted(
                    f"gang job {spec.name} still {phase} after {limits.start_timeout_s:g} s "
                    f"(start_timeout_s), deleted: {_reasons(gang)}"
                )
            if limits.timeout_s is not None and waited > limits.timeout_s:
                raise TimeoutError(f"gang job {spec.name} ran past {limits.timeout_s:g} s, "
                                   f"deleted ({phase})")  # fmt: skip
            if check is not None:
                check()
            time.sleep(limits.poll_s)
    finally:
        gang.delete()
