"""What a test does when a tool it needs is missing: skip on a developer's machine, fail in CI.

CI installs every prerequisite (``pip install -e .[test]``, apt for Chromium), so there a
missing one is an install bug; a skip would hide it behind a green run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NoReturn

import pytest


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``CI`` is set to anything non-empty (GitHub Actions, GitLab, ... set it), as
    ``[ -n "$CI" ]`` in scripts/test.sh."""
    env = os.environ if environ is None else environ
    return bool(env.get("CI"))


def missing(what: str, install: str, environ: Mapping[str, str] | None = None) -> NoReturn:
    """Fail (with ``CI`` set) or skip, saying what is missing and the command that installs it."""
    message = f"{what} is missing; install it with: {install}"
    if in_ci(environ):
        pytest.fail(f"{message} (CI is set: a missing prerequisite fails, never skips)", False)
    pytest.skip(message)
