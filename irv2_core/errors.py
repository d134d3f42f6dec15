"""The project's error type: raised for bad input or environment, with what/where/how-to-fix."""

from __future__ import annotations

# The CLI's exit statuses for the two kinds of failure, read by the tasks that launch it
# (tasks/common.is_user_error): bad input is never retried, a transient failure is.
EXIT_BAD_INPUT = 2
EXIT_TRANSIENT = 75  # sysexits.h EX_TEMPFAIL


class Irv2Error(Exception):
    """A user-facing failure; the CLI prints its message (no traceback) and exits with status
    EXIT_BAD_INPUT."""


class TransientError(Irv2Error):
    """An Irv2Error that may pass when tried again (dropped connection, throttling, 5xx), so a
    task retries it where it would not retry bad input. The CLI exits with EXIT_TRANSIENT."""
