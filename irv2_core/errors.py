"""The project's error type: raised for bad input or environment, with what/where/how-to-fix."""

from __future__ import annotations


class Irv2Error(Exception):
    """A user-facing failure; the CLI prints its message (no traceback) and exits with status 2."""


class TransientError(Irv2Error):
    """An Irv2Error that may pass when tried again (dropped connection, throttling, 5xx), so a
    task retries it where it would not retry bad input."""
