"""Multi-node training launched by the flow: 2 nodes x 1 CPU worker on localhost.

The train task (in a small flow) runs node 0 and starts node 1 as a run of a ``train-node``
deployment served by two process workers of a real Prefect server (``nodes_cluster``). The
failure tests check that every process the job started is gone afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.nodes_cluster import (  # noqa: E402
    APART_DEPLOYMENT,
    BUCKET,
    DEPLOYMENT,
    IDLE_DEPLOYMENT,
    NEVER_COMMAND,
    NEVER_DEPLOYMENT,
    NEVER_POOL,
    REPO,
    Watch,
    assert_all_gone,
    error,
    job_processes,
    node1_states,
    node_runs,
    running_cluster,
    train,
)
from support.processes import tail, venv_tool, wait_for  # noqa: E402
from support.training import (  # noqa: E402
    assert_ranks_hold_equal_weights,
    first_batches,
)

from irv2_core.runtime.hold import HELD, HOLD_ENV  # noqa: E402

pytestmark = [pytest.mark.flow, pytest.mark.slow]
EPOCHS = 3  # of 2 steps each, in the fresh-machine test (held after step 2, killed there)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server, prefect_server):
    """The cluster of ``nodes_cluster`` on the session's server; s3_server first, so its
    workers hold its credentials."""
    home = tmp_path_factory.mktemp("prefect-nodes")
    with running_cluster(home, prefect_server) as running:
        yield running


@pytest.fixture(scope="module")
def train_only(smoke_train_only) -> Path:
    """Train split only (no val): these tests are about the nodes, not evaluation."""
    return smoke_train_only


def test_missing_node_deployment_fails_at_once_saying_how_to_deploy(cluster, train_only, tmp_path):
    runs = tmp_path / "runs"
    engine: list[str] = []
    with Watch(str(runs)) as watch:
        state = train(cluster, train_only, runs, engine, node_deployment="train-node/absent")
    message = error(state)
    assert "'train-node/absent'" in message and "prefect --no-prompt deploy" in message, message
    assert "--name train-node/process" in message, message
    assert watch.seen == {}  # failed before starting anything: no msrun, no node run
    assert node_runs(cluster["api"], runs) == {}
    # Bad setup: not retried. Read from the task engine's own log lines, not the test server's
    # task runs: Prefect sends task-run states through one events client per process, which
    # stays on the API of the first flow run (the session harness once a flow test ran first).
    assert not [m for m in engine if " will start " in m], engine
    assert len([m for m in engine if "Finished in state Failed" in m]) == 1, engine


def test_node_that_never_starts_fails_naming_it_and_kills_node0(cluster, train_only, tmp_path):
    from tasks.training import train_task

    runs = tmp_path / "runs"
    with Watch(str(runs)) as watch:
        state = train(
            cluster,
            train_only,
            runs,
            task=train_task.with_options(retries=0),  # one attempt is the behaviour under test
            node_deployment=IDLE_DEPLOYMENT,
            join_timeout_s=15,
        )
    message = error(state)
    assert "training node(s) [1] did not start within 15 s" in message, message
    assert watch.msruns(0), f"node 0's msrun was never seen: {watch.seen}"
    assert "--cluster_time_out=15" in watch.seen[watch.msruns(0)[0]]  # msrun: the same bound
    assert_all_gone(str(runs))
    node1 = node_runs(cluster["api"], runs)[1]
    assert node1["state"]["type"] == "CANCELLED", node1["state"]  # no worker had it: cancelled


def test_failing_node_cancels_node0_with_its_log_tail(cluster, train_only, tmp_path):
    from tasks.training import train_task

    runs = tmp_path / "runs"
    with Watch(str(runs), kill_node=1) as watch:
        state = train(
            cluster,
            train_only,
            runs,
            task=train_task.with_options(retries=0),
            node_deployment=DEPLOYMENT,
            join_timeout_s=300,
        )
    message = error(state)
    assert watch.killed, f"node 1's msrun was never seen: {watch.seen}"
    assert "training node 1 " in message and "ended Failed" in message, message
    tail_text = message.split("last log lines of node 1:", 1)[1]
    assert "node 1: training exited with status -9" in tail_text, message  # from node 1's log
    assert watch.msruns(0), f"node 0's msrun was never seen: {watch.seen}"
    assert_all_gone(str(runs))
    node1 = node_runs(cluster["api"], runs)[1]
    assert node1["state"]["type"] == "FAILED", node1["state"]
    # read from the server's PostgreSQL database itself, not through its API
    sql = f"select state_type from flow_run where id = '{node1['id']}'"
    assert cluster["db"].scalar(sql) == "FAILED"


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
    message = error(state)
    assert f"node 1: no MindRecord conversion in {tmp_path / 'node1' / 'mindrecord'}" in message
    assert "set output_uri" in message, message
    assert not (tmp_path / "node1" / "runs").exists()  # nothing started, nothing written


def _published_mindrecord(data: Path, store: dict[str, Any], fingerprint: str) -> str:
    """A copy of the MindRecord *data* stamped with *fingerprint*, published to *store* as the
    convert task publishes it; returns its prefix there."""
    from irv2_core.runtime.io import atomic_write_json
    from irv2_core.storage.layout import convert_prefix
    from irv2_core.storage.outputs import publish
    from irv2_core.storage.publish import folder_files, open_ref

    atomic_write_json(data / "conversion.json", {"fingerprint": fingerprint})
    prefix = convert_prefix(fingerprint)
    publish(open_ref(store), prefix, folder_files(data), fingerprint)
    return prefix


def test_a_node_on_a_fresh_machine_resumes_the_job_from_the_store(
    cluster, train_only, s3_server, tmp_path, monkeypatch
):
    """Two nodes that share nothing but the object store train one model over 3 epochs. Node 1 (its
    own workdir) dies once the job's first checkpoint is complete in the store (node 0 holds
    training there: IRV2_TEST_HOLD), and its machine with it (its folder is deleted): the train task
    fails and retries; node 1 comes back on a fresh disk, fetches the MindRecord and the job's
    checkpoint from the store, and both nodes resume at the same step (the store's newest complete
    checkpoint: not node 1 from step 0, not node 0 from a newer local one whose upload was cut off,
    either of which would leave the ranks steps apart in every all-reduce); the model is trained to
    the end, written once and published."""
    import boto3

    from irv2_core.runtime.io import read_json

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    store = {"uri": f"s3://{BUCKET}/out", "endpoint_url": s3_server}
    data = tmp_path / "mindrecord"
    shutil.copytree(train_only, data)
    prefix = _published_mindrecord(data, store, "nodes-test")
    runs, node1_root = tmp_path / "runs", cluster["node1_root"]

    hold = tmp_path / "hold"  # node 0 (this process's child) holds after step 2, uploaded
    monkeypatch.setenv(HOLD_ENV, f"2:{hold}")

    def node1_machine_lost() -> None:
        shutil.rmtree(node1_root, ignore_errors=True)

    config = {"epoch_size": EPOCHS, "save_checkpoint_epochs": 1}
    markers = (str(runs), str(node1_root))
    with Watch(markers, 1, (hold / HELD).exists, node1_machine_lost) as watch:
        state = train(
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
    assert node1_states(cluster["api"], runs) == ["FAILED", "COMPLETED"]  # died, then retried
    run = Path(state.result()["run_dir"])
    node1_run = node1_root / "runs" / run.name  # node 1's own copy of the job's run folder
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    summary = read_json(run / "train_summary.json")
    assert (summary["rank_size"], summary["global_step"]) == (2, 2 * EPOCHS), summary
    resumed = summary["resumed_from_step"]  # the checkpoint the first attempt held at
    assert resumed == 2, summary
    # node 1's fresh disk got the data and the job's checkpoint from the store
    assert read_json(node1_root / "mindrecord" / "conversion.json")["fingerprint"] == "nodes-test"
    assert list((node1_run / "checkpoints").glob(f"irv2-e*-s{resumed}.ckpt")), node1_run
    again = [(e, 2 * e - 1) for e in range(resumed // 2 + 1, EPOCHS + 1)]  # (epoch, 1st step)
    rank0 = [(r["epoch"], r["step"]) for r in first_batches(run, 0)]  # over both attempts
    # epoch 1 trained once: the first attempt's rows survive (had it finished before the kill,
    # the retry would have found no stamp and started the run folder over)
    assert rank0.count((1, 1)) == 1 and rank0[-len(again) :] == again, rank0
    rank1 = first_batches(node1_run, 1)  # the retry's only: the first attempt's disk is gone
    assert [(r["epoch"], r["step"]) for r in rank1] == again, rank1
    assert first_batches(run, 0)[-1]["images_sha256"] != rank1[-1]["images_sha256"]
    last = f"irv2-e{EPOCHS}-s{2 * EPOCHS}.ckpt"
    assert_ranks_hold_equal_weights(run, last, node1_run)  # one model at the end
    assert (node1_run / "msrun_log" / "node1").is_dir()  # node 1 ran as its own msrun there
    assert list(run.rglob("final.ckpt")) == [run / "final.ckpt"]  # one model, written once
    assert not list(node1_root.rglob("final.ckpt"))
    assert f"out/runs/{run.name}/final.ckpt" in keys  # published
    assert not [k for k in keys if "/rank1/" in k], keys  # rank 1's own checkpoints stay local


def test_a_run_whose_pod_never_starts_is_cancelled_by_the_shipped_automation(cluster):
    """deployments/k8s/pod-never-started.yaml on a real server: a run of its pool that stays
    Pending (here a worker whose job never starts the flow, as a pod that no node has the NPUs
    for) is moved to Cancelling with the automation's message, and its worker kills what it
    started. Only the pool name and the wait are changed for the test."""
    shipped = REPO / "deployments" / "k8s" / "pod-never-started.yaml"
    automation = yaml.safe_load(shipped.read_text(encoding="utf-8"))["automations"][0]
    trigger = automation["trigger"]
    assert trigger["match_related"]["prefect.resource.name"] == "irv2-ascend-k8s"
    trigger["match_related"]["prefect.resource.name"] = NEVER_POOL
    trigger["within"] = 15
    prefect, env, api = venv_tool("prefect"), cluster["env"], cluster["api"]
    create = [prefect, "automation", "create", "--from-json", json.dumps(automation)]
    done = subprocess.run(create, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    deployment = api.get(f"/deployments/name/{NEVER_DEPLOYMENT}")
    run = api.post(f"/deployments/{deployment['id']}/create_flow_run", {})

    def started() -> bool:
        return any(p.info["cmdline"] == NEVER_COMMAND for p in job_processes(NEVER_COMMAND[1]))

    wait_for("the worker to start the run's job", started, 120)
    wait_for(
        "the automation to cancel the run",
        lambda: api.get(f"/flow_runs/{run['id']}")["state"]["type"] == "CANCELLED",
        180,
    )
    states = api.get(f"/flow_run_states/?flow_run_id={run['id']}")
    kinds = [s["type"] for s in sorted(states, key=lambda s: s["timestamp"])]
    assert "RUNNING" not in kinds and kinds[-1] == "CANCELLED", kinds
    cancelling = [s for s in states if s["type"] == "CANCELLING"]
    assert cancelling and "did not start within the time" in cancelling[0]["message"], states
    wait_for("the job's process to be killed", lambda: not started(), 60)
