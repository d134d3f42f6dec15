"""Helpers of the UI tier: subprocesses, polling, the few REST reads, pages, flow-run processes."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FLOW_NAME = "train-eval-export"
DEPLOYMENT = "ui"


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


class Api:
    """The few REST reads the tests need (ids and states), against the test server."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)

    def get(self, path: str) -> Any:
        r = self.http.get(path)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = self.http.post(path, json=body)
        r.raise_for_status()
        return r.json()

    def state(self, flow_run_id: str) -> str | None:
        return (self.get(f"/flow_runs/{flow_run_id}").get("state") or {}).get("name")

    def artifacts(self, flow_run_id: str, key: str) -> list[dict[str, Any]]:
        """The flow run's artifacts under *key*, newest first."""
        body = {
            "artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [flow_run_id]}},
            "sort": "CREATED_DESC",
        }
        return self.post("/artifacts/filter", body)

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        return self.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})


def run_deployment(env: dict[str, str]) -> str:
    """``prefect deployment run train-eval-export/ui``; the flow-run id it prints."""
    done = subprocess.run(
        [venv_tool("prefect"), "deployment", "run", f"{FLOW_NAME}/{DEPLOYMENT}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout)
    assert done.returncode == 0 and found, (
        f"prefect deployment run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    return found.group(1)


def flow_run_process(flow_run_id: str) -> Any | None:
    """The served flow run's ``python -m prefect.engine`` process (psutil), found by the
    ``PREFECT__FLOW_RUN_ID`` the runner puts into its environment."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if "prefect.engine" not in cmdline:
                continue
            if proc.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


# --- pages ------------------------------------------------------------------------------------


def page_text(page: Any) -> str:
    return page.locator("body").inner_text(timeout=30_000)


def poll_page(
    page: Any,
    url: str,
    what: str,
    check: Callable[[str], Any],
    timeout_s: float,
    every_s: float = 1.0,
    reload_s: float = 10.0,
) -> Any:
    """Open *url* and re-read its text until ``check(text)`` is truthy, reloading every
    *reload_s* (the UI refreshes itself too, but the test does not rely on that)."""
    page.goto(url, wait_until="domcontentloaded")
    loaded = time.monotonic()

    def once() -> Any:
        nonlocal loaded
        if time.monotonic() - loaded > reload_s:
            loaded = time.monotonic()
            page.reload(wait_until="domcontentloaded")
        return check(page_text(page))

    return wait_for(f"{what} on {url}", once, timeout_s, every_s)
