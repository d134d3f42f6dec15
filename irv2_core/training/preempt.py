"""Last words on preemption: a SIGTERM stops training after the step in flight, with a checkpoint
of that step, instead of losing everything since the last periodic one.

Kubernetes evicting a pod, a spot node being reclaimed and Prefect cancelling a run all send
SIGTERM, then wait (``terminationGracePeriodSeconds``; the supervising task's ``stop_grace_s``)
before SIGKILL. The handler only notes the signal: the step in flight finishes, every rank of a
data-parallel job agrees to stop after the same step (a one-number all-reduce each step: a rank
that saw the signal stops them all), rank 0 saves that step's weights, optimizer moments and data
position as a recovery checkpoint, the mirror uploads it, and the process exits with
``EXIT_TRANSIENT`` (the task retries; the retry resumes at that step, mid-epoch). A SIGKILL
during the save leaves only a temp file, never a checkpoint that looks complete: the previous
one stands.
"""

from __future__ import annotations

import signal
import threading
import time

from irv2_core.errors import TransientError
from irv2_core.training.distributed import DistInfo

__all__ = ["Preempted", "StopSignal"]


class Preempted(TransientError):
    """Training stopped on SIGTERM after *step*, with a checkpoint of that step (retry it)."""

    def __init__(self, step: int, saved_s: float) -> None:
        super().__init__(
            f"preempted: stopped on SIGTERM after step {step}, whose checkpoint was saved and "
            f"uploaded in {saved_s:.1f} s; a retry resumes there"
        )
        self.step = step


class _Vote:
    """Sum of one number over the ranks (graph mode; the gradients' collective, one float)."""

    def __init__(self) -> None:
        import numpy as np
        from mindspore import Tensor, nn, ops

        class Vote(nn.Cell):
            def __init__(self) -> None:
                super().__init__()
                self.sum = ops.AllReduce()

            def construct(self, x):
                return self.sum(x)

        self.cell, self.tensor, self.np = Vote(), Tensor, np

    def __call__(self, mine: bool) -> bool:
        flag = self.tensor(self.np.array([1.0 if mine else 0.0], self.np.float32))
        return float(self.cell(flag).asnumpy()[0]) > 0


class StopSignal:
    """SIGTERM noted while installed; ``agreed()`` after each step says whether to stop now."""

    def __init__(self, world: DistInfo) -> None:
        self.at: float | None = None  # monotonic time of the first SIGTERM
        self._previous = None
        self._vote = _Vote() if world.size > 1 else None

    def install(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            self._previous = signal.signal(signal.SIGTERM, self._note)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _note(self, signum, frame) -> None:  # a handler: note it, nothing that could block
        if self.at is None:
            self.at = time.monotonic()

    def agreed(self) -> bool:
        """Whether every rank stops after this step: this one saw SIGTERM, or (data-parallel)
        any rank did. Called by every rank after every step, so the collectives line up."""
        mine = self.at is not None
        return self._vote(mine) if self._vote is not None else mine
