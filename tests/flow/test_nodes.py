"""Multi-node training launched by the flow: 2 nodes x 1 CPU worker on localhost.

A real ``prefect server start`` (temp PREFECT_HOME), the ``irv2-process`` work pool with two
``prefect worker start`` processes, the ``train-node`` deployment made with ``prefect deploy``;
the train task (in a small flow) runs node 0 and starts node 1 as a run of that deployment.
A second deployment sits on a pool no worker polls: its node runs never start; a third gives its
nodes a workdir of their own, so they share nothing with node 0 but the object store (moto). The
failure tests watch the job's processes (psutil, by the test's run folder in their command lines)
and check that every one the job started is gone afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from ui.uikit import Api, free_port, kill_process_group, tail, venv_tool, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from train_data import (  # noqa: E402
    SMOKE,
    assert_ranks_hold_equal_weights,
    first_batches,
    make_mindrecord,
)

pytestmark = [pytest.mark.flow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
POOL, DEPLOYMENT = "irv2-process", "train-node/nodes-test"
IDLE_POOL, IDLE_DEPLOYMENT = "irv2-idle", "train-node/nodes-idle"  # no worker polls this pool
# nodes with a disk of their own (workdir): they share nothing with node 0 but the object store
APART_DEPLOYMENT = "train-node/nodes-apart"
BUCKET = "irv2-nodes"
STARTUP_S = 300


def _start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    """Server, work pool, two workers and the train-node deployments; everything killed after.
    The workers have the session's S3 credentials (s3_server sets them) in their environment."""
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
        for pool in (POOL, IDLE_POOL):
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
        yield {"env": env, "home": home, "api": api, "node1_root": Path(apart["workdir"])}
    finally:
        for proc in reversed(procs):
            kill_process_group(proc)


@pytest.fixture(scope="module")
def train_only(tmp_path_factory) -> Path:
    """Train split only (no val): these tests are about the nodes, not evaluation."""
    root = tmp_path_factory.mktemp("nodes-data")
    full = make_mindrecord(root / "src")
    data = root / "train-only"
    data.mkdir()
    for f in [*full.glob("train.mindrecord*"), full / "classes.json"]:
        (data / f.name).symlink_to(f)
    return data


def _train(
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
        with _engine_lines(engine if engine is not None else []):
            return (task or train_task)(
                data_dir=str(data),
                data_fingerprint="nodes-test",
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


def _job_processes(marker: str | tuple[str, ...]) -> list[psutil.Process]:
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


class _Watch(threading.Thread):
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
            for proc in _job_processes(self.marker):
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

    def __enter__(self) -> _Watch:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.join(timeout=30)


def _job_node_runs(api: Api, runs: Path, *tags: str) -> list[dict[str, Any]]:
    """The train-node flow runs (with *tags*) of the job training into *runs*, oldest first."""
    body = {"flow_runs": {"tags": {"all_": ["irv2-train-node", *tags]}}}
    found = api.post("/flow_runs/filter", body)
    found = [r for r in found if str(r["parameters"].get("run_dir", "")).startswith(str(runs))]
    return sorted(found, key=lambda r: r["created"])


def _node_runs(api: Api, runs: Path) -> dict[int, dict[str, Any]]:
    """The train-node flow runs of the job training into *runs*, by node rank."""
    return {int(r["parameters"]["launch"]["node_rank"]): r for r in _job_node_runs(api, runs)}


def _node1_states(api: Api, runs: Path) -> list[str]:
    """State types of every node-1 run of the job training into *runs*, oldest first."""
    return [r["state"]["type"] for r in _job_node_runs(api, runs, "node-1")]


def _assert_all_gone(marker: str) -> None:
    wait_for(
        f"every process of the job ({marker}) to exit", lambda: not _job_processes(marker), 120
    )


@contextlib.contextmanager
def _engine_lines(lines: list[str]):
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


def _error(state) -> str:
    assert state.is_failed(), f"expected a failed flow, got {state!r}"
    with pytest.raises(BaseException) as err:
        state.result()
    return str(err.value)


def test_missing_node_deployment_fails_at_once_saying_how_to_deploy(cluster, train_only, tmp_path):
    runs = tmp_path / "runs"
    engine: list[str] = []
    with _Watch(str(runs)) as watch:
        state = _train(cluster, train_only, runs, engine, node_deployment="train-node/absent")
    message = _error(state)
    assert "'train-node/absent'" in message and "prefect --no-prompt deploy" in message, message
    assert "--name train-node/process" in message, message
    assert watch.seen == {}  # failed before starting anything: no msrun, no node run
    assert _node_runs(cluster["api"], runs) == {}
    # Bad setup: not retried. Read from the task engine's own log lines, not the test server's
    # task runs: Prefect sends task-run states through one events client per process, which
    # stays on the API of the first flow run (the session harness once a flow test ran first).
    assert not [m for m in engine if " will start " in m], engine
    assert len([m for m in engine if "Finished in state Failed" in m]) == 1, engine


def test_node_that_never_starts_fails_naming_it_and_kills_node0(cluster, train_only, tmp_path):
    from tasks.training import train_task

    runs = tmp_path / "runs"
    with _Watch(str(runs)) as watch:
        state = _train(
            cluster,
            train_only,
            runs,
            task=train_task.with_options(retries=0),  # one attempt is the behaviour under test
            node_deployment=IDLE_DEPLOYMENT,
            join_timeout_s=15,
        )
    message = _error(state)
    assert "training node(s) [1] did not start within 15 s" in message, message
    assert watch.msruns(0), f"node 0's msrun was never seen: {watch.seen}"
    assert "--cluster_time_out=15" in watch.seen[watch.msruns(0)[0]]  # msrun: the same bound
    _assert_all_gone(str(runs))
    node1 = _node_runs(cluster["api"], runs)[1]
    assert node1["state"]["type"] == "CANCELLED", node1["state"]  # no worker had it: cancelled


def test_failing_node_cancels_node0_with_its_log_tail(cluster, train_only, tmp_path):
    from tasks.training import train_task

    runs = tmp_path / "runs"
    with _Watch(str(runs), kill_node=1) as watch:
        state = _train(
            cluster,
            train_only,
            runs,
            task=train_task.with_options(retries=0),
            node_deployment=DEPLOYMENT,
            join_timeout_s=300,
        )
    message = _error(state)
    assert watch.killed, f"node 1's msrun was never seen: {watch.seen}"
    assert "training node 1 " in message and "ended Failed" in message, message
    tail_text = message.split("last log lines of node 1:", 1)[1]
    assert "node 1: training exited with status -9" in tail_text, message  # from node 1's log
    assert watch.msruns(0), f"node 0's msrun was never seen: {watch.seen}"
    _assert_all_gone(str(runs))
    node1 = _node_runs(cluster["api"], runs)[1]
    assert node1["state"]["type"] == "FAILED", node1["state"]


def test_a_node_without_the_data_or_a_store_fails_saying_what_it_needs(prefect_harness, tmp_path):
    """A node on its own disk with no object store to fetch from: a clear error, nothing run."""
    from flows.train_node import train_node

    launch = {"device_num": 1, "num_nodes": 2, "node_rank": 1, "master_addr": "127.0.0.1"}
    state = train_node(
        data_dir=str(tmp_path / "node0" / "mindrecord"),
        run_dir=str(tmp_path / "node0" / "runs" / "run-x"),
        config_file=str(tmp_path / "node0" / "runs" / "run-x" / "requested_config.yaml"),
        launch=launch,
        config={"epoch_size": 1},
        workdir=str(tmp_path / "node1"),
        return_state=True,
    )
    message = _error(state)
    assert f"node 1: no MindRecord conversion in {tmp_path / 'node1' / 'mindrecord'}" in message
    assert "set output_uri" in message, message
    assert not (tmp_path / "node1" / "runs").exists()  # nothing started, nothing written


def _published_mindrecord(data: Path, store: dict[str, Any], fingerprint: str) -> str:
    """A copy of the MindRecord *data* stamped with *fingerprint*, published to *store* as the
    convert task publishes it; returns its prefix there."""
    from irv2_core.runtime.io import atomic_write_json
    from irv2_core.storage.layout import convert_prefix
    from irv2_core.storage.publish import folder_files
    from tasks.storage import open_ref, publish

    atomic_write_json(data / "conversion.json", {"fingerprint": fingerprint})
    prefix = convert_prefix(fingerprint)
    publish(open_ref(store), prefix, folder_files(data), fingerprint)
    return prefix


def test_a_node_on_a_fresh_machine_resumes_the_job_from_the_store(
    cluster, train_only, s3_server, tmp_path
):
    """Two nodes that share nothing but the object store train one model over 3 epochs. Node 1
    (its own workdir) dies once the job's first checkpoint is complete in the store, and its
    machine with it (its folder is deleted): the train task fails and retries; node 1 comes back
    on a fresh disk, fetches the MindRecord and the job's checkpoint from the store, and both
    nodes resume at the same step (the store's newest complete checkpoint: not node 1 from step
    0, not node 0 from a newer local one whose upload was cut off, either of which would leave
    the ranks steps apart in every all-reduce); the model is trained to the end, written once
    and published."""
    import boto3

    from irv2_core.runtime.io import read_json

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    store = {"uri": f"s3://{BUCKET}/out", "endpoint_url": s3_server}
    data = tmp_path / "mindrecord"
    shutil.copytree(train_only, data)
    prefix = _published_mindrecord(data, store, "nodes-test")
    runs, node1_root = tmp_path / "runs", cluster["node1_root"]

    def first_checkpoint() -> bool:  # complete in the store: its sidecar is there
        found = client.list_objects_v2(Bucket=BUCKET, Prefix="out/runs/").get("Contents", [])
        return any(o["Key"].endswith(".ckpt.sha256") for o in found)

    def node1_machine_lost() -> None:
        shutil.rmtree(node1_root, ignore_errors=True)

    config = {"epoch_size": 3, "save_checkpoint_epochs": 1}
    markers = (str(runs), str(node1_root))
    with _Watch(markers, 1, first_checkpoint, node1_machine_lost) as watch:
        state = _train(
            cluster,
            data,
            runs,
            config=config,
            node_deployment=APART_DEPLOYMENT,
            join_timeout_s=300,
            store=store,
            data_prefix=prefix,
        )
    logs = "\n".join(tail(p, 60) for p in sorted(cluster["home"].glob("worker*.log")))
    assert state.is_completed(), f"{state.message}\nworkers:\n{logs}"
    assert watch.killed, f"node 1's msrun was never seen: {watch.seen}"
    assert _node1_states(cluster["api"], runs) == ["FAILED", "COMPLETED"]  # died, then retried
    run = Path(state.result()["run_dir"])
    node1_run = node1_root / "runs" / run.name  # node 1's own copy of the job's run folder
    summary = read_json(run / "train_summary.json")
    assert (summary["rank_size"], summary["global_step"]) == (2, 6), summary
    resumed = summary["resumed_from_step"]  # an epoch checkpoint from the first attempt
    assert resumed in (2, 4), summary
    # node 1's fresh disk got the data and the job's checkpoint from the store
    assert read_json(node1_root / "mindrecord" / "conversion.json")["fingerprint"] == "nodes-test"
    assert list((node1_run / "checkpoints").glob(f"irv2-e*-s{resumed}.ckpt")), node1_run
    again = [(epoch, 2 * epoch - 1) for epoch in range(resumed // 2 + 1, 4)]  # (epoch, 1st step)
    rank0 = [(r["epoch"], r["step"]) for r in first_batches(run, 0)]  # over both attempts
    assert rank0.count((1, 1)) == 1 and rank0[-len(again) :] == again, rank0
    rank1 = first_batches(node1_run, 1)  # the retry's only: the first attempt's disk is gone
    assert [(r["epoch"], r["step"]) for r in rank1] == again, rank1
    assert first_batches(run, 0)[-1]["images_sha256"] != rank1[-1]["images_sha256"]
    assert_ranks_hold_equal_weights(run, "irv2-e3-s6.ckpt", node1_run)  # one model at the end
    assert (node1_run / "msrun_log" / "node1").is_dir()  # node 1 ran as its own msrun there
    assert list(run.rglob("final.ckpt")) == [run / "final.ckpt"]  # one model, written once
    assert not list(node1_root.rglob("final.ckpt"))
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert f"out/runs/{run.name}/final.ckpt" in keys  # published
    assert not [k for k in keys if "/rank1/" in k], keys  # rank 1's own checkpoints stay local
