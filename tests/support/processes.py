"""Processes the tests start and wait on: console scripts of this environment, ``irv2 serve``,
process groups to kill, log tails and polling with a named timeout."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def venv_tool(name: str) -> str:
    """A console script of this interpreter's environment (``prefect``), else from PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


def start_serve(prefect_yaml: Path, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """``irv2 serve --file prefect_yaml`` in a session of its own, its output in *log*; stop it
    with :func:`kill_process_group`."""
    irv2 = shutil.which("irv2", path=str(Path(sys.executable).parent))
    command = [irv2] if irv2 else [sys.executable, "-m", "flows.cli"]
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*command, "serve", "--file", str(prefect_yaml)],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_process_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the group of *proc* twice (``irv2 serve`` ignored the first), then SIGKILL it."""
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # whatever else is left in the group
        os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout_s: float,
    every_s: float = 1.0,
    log: Path | None = None,
) -> Any:
    """Poll *check* until it returns something truthy; fail naming *what* after *timeout_s*.

    An exception from *check* counts as "not yet" (a poll may race with what it watches), except
    pytest's own failures, which end the wait at once.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = check()
        except pytest.fail.Exception:
            raise
        except Exception as exc:
            last_error, value = exc, None
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(every_s)
    detail = f" (last error: {last_error!r})" if last_error else ""
    if log is not None:
        detail += f"\n--- {log} ---\n{tail(log)}"
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
