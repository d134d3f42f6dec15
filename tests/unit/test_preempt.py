"""The SIGTERM note training stops on (the save and the retry: tests/flow, tests/integration)."""

from __future__ import annotations

import os
import signal

from irv2_core.training.distributed import DistInfo
from irv2_core.training.preempt import Preempted, StopSignal


def test_a_sigterm_is_noted_not_obeyed_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopSignal(DistInfo()).install()
    try:
        assert not stop.agreed()
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal: this process goes on
        os.kill(os.getpid(), signal.SIGTERM)  # a second one while "saving" changes nothing
        assert stop.agreed() and stop.at is not None
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def test_preempted_is_retried_by_the_task_and_says_where():
    from tasks.common import is_user_error

    err = Preempted(1234, 8.25)
    assert not is_user_error(err)
    assert "after step 1234" in str(err) and "8.2 s" in str(err)
