"""Multi-node training launched by the flow: 2 nodes x 1 CPU worker on localhost.

A real ``prefect server start`` (temp PREFECT_HOME), the ``irv2-process`` work pool with two
``prefect worker start`` processes, the ``train-node`` deployment made with ``prefect deploy``;
the train task (in a small flow) runs node 0 and starts node 1 as a run of that deployment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ui.uikit import Api, free_port, kill_process_group, tail, venv_tool, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from train_data import SMOKE, assert_two_ranks_trained_one_model, make_mindrecord  # noqa: E402

pytestmark = [pytest.mark.flow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
POOL, DEPLOYMENT = "irv2-process", "train-node/nodes-test"
STARTUP_S = 300


def _start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Server, work pool, two workers and the train-node deployment; everything killed after."""
    home = tmp_path_factory.mktemp("prefect-nodes")
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    prefect = venv_tool("prefect")
    port = api_url.split(":")[2].split("/")[0]
    procs = [
        _start(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", port],
            env,
            home / "server.log",
            home,
        )
    ]
    try:
        api = Api(api_url)
        wait_for("the Prefect server", lambda: api.get("/health") is True, STARTUP_S)
        subprocess.run(
            [prefect, "work-pool", "create", POOL, "--type", "process"],
            env=env,
            check=True,
            capture_output=True,
        )
        spec = {
            "name": "irv2-nodes-test",
            "deployments": [
                {
                    "name": DEPLOYMENT.split("/")[1],
                    "entrypoint": "flows/train_node.py:train_node",
                    "work_pool": {"name": POOL},
                }
            ],
        }
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
        for i in range(2):  # one worker per node; node 0 is the train task itself
            procs.append(
                _start(
                    [prefect, "worker", "start", "--pool", POOL, "--limit", "1"],
                    env,
                    home / f"worker{i}.log",
                    home,
                )
            )
        yield {"env": env, "home": home}
    finally:
        for proc in reversed(procs):
            kill_process_group(proc)


def test_two_nodes_train_one_model(cluster, tmp_path):
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from irv2_core.config import load_config
    from irv2_core.runtime.io import read_json
    from tasks.training import train_task

    full = make_mindrecord(tmp_path / "src")
    data = tmp_path / "train-only"  # no val split: this test is about the two nodes' all-reduce
    data.mkdir()
    for f in [*full.glob("train.mindrecord*"), full / "classes.json"]:
        (data / f.name).symlink_to(f)
    cfg = load_config("cpu-smoke", overrides={**SMOKE, "epoch_size": 1}).to_dict()
    launch = {
        "device_num": 1,
        "num_nodes": 2,
        "node_rank": 0,
        "master_addr": "127.0.0.1",
        "master_port": free_port(),
    }

    @flow(name="nodes-test")
    def nodes_test() -> dict:
        return train_task(
            data_dir=str(data),
            data_fingerprint="nodes-test",
            config=cfg,
            runs_dir=str(tmp_path / "runs"),
            launch=launch,
            timeout_s=900,
            node_deployment=DEPLOYMENT,
            join_timeout_s=300,
        )

    env = cluster["env"]
    with temporary_settings(
        {
            PREFECT_API_URL: env["PREFECT_API_URL"],
            PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "results"),
        }
    ):
        state = nodes_test(return_state=True)
    logs = "\n".join(tail(p, 60) for p in sorted(cluster["home"].glob("worker*.log")))
    assert state.is_completed(), f"{state.message}\nworkers:\n{logs}"
    result = state.result()
    run = Path(result["run_dir"])
    summary = read_json(run / "train_summary.json")
    assert (summary["rank_size"], summary["global_step"]) == (2, 2)
    assert_two_ranks_trained_one_model(run)  # rank 1 ran on node 1, its files in the shared folder
    assert (run / "msrun_log" / "node1").is_dir()  # node 1 ran as its own msrun
    assert list(run.rglob("final.ckpt")) == [run / "final.ckpt"]  # one model, written once
