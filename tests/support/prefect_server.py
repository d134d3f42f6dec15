"""The session's one real Prefect server: ``prefect server start`` on a free port, its data in a
PostgreSQL database (support/postgres.py), as production runs it. Every test that needs a
server is a client of this one (flows run in the test process, ``irv2 serve``, workers, the
UI): one start per session, and one API for Prefect's per-process events client, which stays
on the API of the first flow run a process makes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.ports import free_port
from support.processes import kill_process_group, tail, venv_tool, wait_for

STARTUP_S = 300  # a cold `prefect server start` on a busy 2-core machine


@contextlib.contextmanager
def running_server(home: Path, database: Any) -> Iterator[dict[str, Any]]:
    """Start the server under *home* with its data in *database* (``support.postgres``);
    yield ``{"env", "api", "api_url", "ui", "log", "db"}``: *env* is this process's
    environment pointed at the server (for the clients the tests start). Killed after."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_API_URL": api_url,  # the UI's default is port 4200
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PYTHONUNBUFFERED": "1",
    }
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [venv_tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            # the server only: flows, `irv2 serve`, workers and CLI calls are its clients
            env={**env, "PREFECT_API_DATABASE_CONNECTION_URL": database.url},
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        api = Api(api_url)

        def healthy() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited ({proc.returncode}):\n{tail(log)}")
            return api.get("/health") is True

        wait_for("the Prefect server's /api/health", healthy, STARTUP_S, log=log)
        ui_api = api.http.get(f"http://127.0.0.1:{port}/ui-settings").json().get("api_url")
        assert ui_api == api_url, f"the UI would talk to {ui_api}, not to this server ({api_url})"
        # it migrated this database (without the URL it would have used SQLite in PREFECT_HOME,
        # and the table would not exist here)
        assert database.scalar("select count(*) from alembic_version") == "1"
        ui = f"http://127.0.0.1:{port}"
        yield {"env": env, "api": api, "api_url": api_url, "ui": ui, "log": log, "db": database}
    finally:
        kill_process_group(proc)


def client_env(server: dict[str, Any], **extra: str) -> dict[str, str]:
    """This process's environment *now* (credentials set since the server started included),
    pointed at *server*, plus *extra*: for the clients a test starts (workers, ``irv2 serve``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    keep = ("PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")
    return {**env, **{k: server["env"][k] for k in keep}, "PYTHONUNBUFFERED": "1", **extra}


class Api:
    """The few REST reads the tests need (ids and states), against the session's server."""

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
