"""A multi-node training cluster on localhost for the nodes tests, and what they watch it with.

On the session's real Prefect server (on PostgreSQL, ``support.prefect_server``): the
``irv2-process`` work pool with two ``prefect worker start`` processes and the ``train-node``
deployments made with ``prefect deploy``: ``nodes-test`` (nodes share node 0's folders),
``nodes-idle`` on a pool no worker polls (its node runs never start), ``nodes-apart`` (nodes
with a workdir of their own, sharing nothing with node 0 but the object store) and
``never-starts`` on a pool of its own, whose worker runs a command that never starts the flow
(what a Kubernetes pod no node can schedule looks like to Prefect).
:func:`train` runs the train task (node 0) in a small flow against it; :class:`Watch` follows
the job's processes (psutil, by folders in their command lines).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from support.ports import free_port
from support.prefect_server import Api, client_env
from support.processes import kill_process_group, venv_tool, wait_for
from support.training import SMOKE  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
POOL, DEPLOYMENT = "irv2-process", "train-node/nodes-test"
IDLE_POOL, IDLE_DEPLOYMENT = "irv2-idle", "train-node/nodes-idle"  # no worker polls this pool
# nodes with a disk of their own (workdir): they share nothing with node 0 but the object store
APART_DEPLOYMENT = "train-node/nodes-apart"
# stands in for the Kubernetes pool: its runs never start the flow (a pod no node can take)
NEVER_POOL, NEVER_DEPLOYMENT = "irv2-never-starts", "train-node/never-starts"
NEVER_COMMAND = ["sleep", "301.25"]
BUCKET = "irv2-nodes"


def _start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@contextlib.contextmanager
def running_cluster(home: Path, server: dict[str, Any]):
    """Work pools, two workers and the train-node deployments under *home*, on the session's
    Prefect *server* (``support.prefect_server``); the workers killed after. They get this
    process's environment (the session's S3 credentials)."""
    env = client_env(
        server,
        PREFECT_HOME=str(home),
        PREFECT_LOCAL_STORAGE_PATH=str(home / "storage"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    prefect, database = venv_tool("prefect"), server["db"]
    procs: list[subprocess.Popen] = []
    try:
        for pool in (POOL, IDLE_POOL, NEVER_POOL):
            subprocess.run(
                [prefect, "work-pool", "create", pool, "--type", "process"],
                env=env,
                check=True,
                capture_output=True,
            )
        apart = {"workdir": str(home / "node1-machine")}
        spec = {
            "name": "irv2-nodes-test",
            "deployments": [
                {
                    "name": name.split("/")[1],
                    "entrypoint": "flows/train_node.py:train_node",
                    "work_pool": {"name": pool},
                    "parameters": parameters,
                }
                for name, pool, parameters in (
                    (DEPLOYMENT, POOL, {}),
                    (IDLE_DEPLOYMENT, IDLE_POOL, {}),
                    (APART_DEPLOYMENT, POOL, apart),
                )
            ],
        }
        never = {"data_dir": "-", "run_dir": "-", "config_file": "-", "launch": {}}
        spec["deployments"].append(
            {
                "name": NEVER_DEPLOYMENT.split("/")[1],
                "entrypoint": "flows/train_node.py:train_node",
                "work_pool": {
                    "name": NEVER_POOL,
                    "job_variables": {"command": " ".join(NEVER_COMMAND)},
                },
                "parameters": never,
            }
        )
        prefect_yaml = home / "prefect.yaml"
        prefect_yaml.write_text(yaml.safe_dump(spec), encoding="utf-8")
        done = subprocess.run(
            [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_yaml)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        _assert_kept_in(database, spec)
        # one worker per node (node 0 is the train task itself), and one for NEVER_POOL
        for i, pool in enumerate((POOL, POOL, NEVER_POOL)):
            procs.append(
                _start(
                    [prefect, "worker", "start", "--pool", pool, "--limit", "1"],
                    env,
                    home / f"worker{i}.log",
                    home,
                )
            )
        node1_root = Path(apart["workdir"])
        yield {"env": env, "home": home, "api": server["api"], "node1_root": node1_root,
               "db": database}  # fmt: skip
    finally:
        for proc in reversed(procs):
            kill_process_group(proc)


def _assert_kept_in(database: Any, spec: dict[str, Any]) -> None:
    """The deployments just made are rows of *database*: the server really runs on PostgreSQL
    (with the URL dropped it would use SQLite in PREFECT_HOME and this table would not exist)."""
    rows = database.query("select name from deployment")
    names = {row[0] for row in rows}
    made = {d["name"] for d in spec["deployments"]}
    assert made <= names, (made, names)


def train(
    cluster,
    data: Path,
    runs: Path,
    engine: list[str] | None = None,
    task: Any = None,
    config: dict[str, Any] | None = None,
    **kwargs,
):
    """The train task (node 0 here, node 1 a run of *node_deployment*) in a small flow against
    the test server; returns the flow's final state. *engine* collects the task engine's log
    lines; *config* overrides the one-epoch smoke config."""
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from irv2_core.config import load_config
    from tasks.training import train_task

    cfg = load_config("cpu-smoke", overrides={**SMOKE, "epoch_size": 1, **(config or {})})
    cfg = cfg.to_dict()
    launch = {
        "device_num": 1,
        "num_nodes": 2,
        "node_rank": 0,
        "master_addr": "127.0.0.1",
        "master_port": free_port(),
    }

    @flow(name="nodes-test")
    def nodes_test() -> dict:
        with engine_lines(engine if engine is not None else []):
            return (task or train_task)(
                data_dir=str(data),
                mindrecord_fingerprint="nodes-test",
                config=cfg,
                runs_dir=str(runs),
                launch=launch,
                timeout_s=900,
                **kwargs,
            )

    settings = {
        PREFECT_API_URL: cluster["env"]["PREFECT_API_URL"],
        PREFECT_LOCAL_STORAGE_PATH: str(runs.parent / "results"),
    }
    with temporary_settings(settings):
        return nodes_test(return_state=True)


def job_processes(marker: str | tuple[str, ...]) -> list[psutil.Process]:
    """Live processes whose command line names *marker* (the test's runs folder, or the folders
    of each node): msrun, its scheduler and workers on either node."""
    markers = (marker,) if isinstance(marker, str) else marker
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(m in arg for arg in proc.info["cmdline"] or () for m in markers):
            found.append(proc)
    return found


class Watch(threading.Thread):
    """Records the job's processes while the train task runs; with *kill_node*, SIGKILLs that
    node's msrun process group once it has started and *kill_when()* says so (a node machine
    dying), then calls *after_kill()* once they are gone."""

    def __init__(
        self,
        marker: str | tuple[str, ...],
        kill_node: int | None = None,
        kill_when: Any = None,
        after_kill: Any = None,
    ) -> None:
        super().__init__(daemon=True)
        self.marker, self.kill_node = marker, kill_node
        self.kill_when, self.after_kill = kill_when or (lambda: True), after_kill
        self.seen: dict[int, list[str]] = {}
        self.killed: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.3):
            due = not self.killed and self.kill_when()
            for proc in job_processes(self.marker):
                cmd = proc.info["cmdline"]
                self.seen.setdefault(proc.pid, cmd)
                if due and not self.killed and self._is_msrun(cmd, self.kill_node):
                    self._kill(proc)

    def _kill(self, proc: psutil.Process) -> None:
        victims = [proc]
        with contextlib.suppress(psutil.NoSuchProcess):
            victims = [proc, *proc.children(recursive=True)]  # msrun + its workers
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.kill()
        self.killed.append(proc.pid)
        psutil.wait_procs(victims, timeout=30)
        if self.after_kill is not None:
            self.after_kill()

    @staticmethod
    def _is_msrun(cmd: list[str], node: int | None) -> bool:
        return (
            node is not None
            and len(cmd) > 1
            and Path(cmd[1]).name == "msrun"
            and (f"--node_rank={node}" in cmd)
        )

    def msruns(self, node: int) -> list[int]:
        """pids of the msrun processes of *node* seen."""
        return [pid for pid, cmd in self.seen.items() if self._is_msrun(cmd, node)]

    def __enter__(self) -> Watch:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.join(timeout=30)


def jobnode_runs(api: Api, runs: Path, *tags: str) -> list[dict[str, Any]]:
    """The train-node flow runs (with *tags*) of the job training into *runs*, oldest first."""
    body = {"flow_runs": {"tags": {"all_": ["irv2-train-node", *tags]}}}
    found = api.post("/flow_runs/filter", body)
    found = [r for r in found if str(r["parameters"].get("run_dir", "")).startswith(str(runs))]
    return sorted(found, key=lambda r: r["created"])


def node_runs(api: Api, runs: Path) -> dict[int, dict[str, Any]]:
    """The train-node flow runs of the job training into *runs*, by node rank."""
    return {int(r["parameters"]["launch"]["node_rank"]): r for r in jobnode_runs(api, runs)}


def node1_states(api: Api, runs: Path) -> list[str]:
    """State types of every node-1 run of the job training into *runs*, oldest first."""
    return [r["state"]["type"] for r in jobnode_runs(api, runs, "node-1")]


def assert_all_gone(marker: str) -> None:
    wait_for(f"every process of the job ({marker}) to exit", lambda: not job_processes(marker), 120)


@contextlib.contextmanager
def engine_lines(lines: list[str]):
    """Append the task engine's log lines to *lines* while inside. A handler on the engine's own
    logger, entered inside the flow: Prefect's logging setup, which may run again as the first
    flow run starts, replaces the handlers of its loggers and stops them propagating."""
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("prefect.task_runs")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def error(state) -> str:
    assert state.is_failed(), f"expected a failed flow, got {state!r}"
    with pytest.raises(BaseException) as err:
        state.result()
    return str(err.value)
