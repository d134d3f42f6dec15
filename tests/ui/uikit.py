"""Helpers of the UI tier: the deployment run, flow-run processes, pages. Processes, polling
and the REST reads are tests/support's (re-exported here for the UI tests)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

from support.prefect_server import Api
from support.processes import kill_process_group, start_serve, tail, venv_tool, wait_for

__all__ = [
    "Api",
    "flow_run_process",
    "kill_process_group",
    "page_text",
    "poll_page",
    "run_deployment",
    "start_serve",
    "tail",
    "venv_tool",
    "wait_for",
]

FLOW_NAME = "train-eval-export"
DEPLOYMENT = "ui"


def run_deployment(env: dict[str, str], **params: Any) -> str:
    """``prefect deployment run train-eval-export/ui [-p key=value ...]``; the flow-run id it
    prints."""
    given = [arg for key, value in params.items() for arg in ("-p", f"{key}={value}")]
    done = subprocess.run(
        [venv_tool("prefect"), "deployment", "run", f"{FLOW_NAME}/{DEPLOYMENT}", *given],
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
