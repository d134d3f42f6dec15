"""The pods of a gang job, run as two local processes the way Volcano starts them (``irv2
gang-pod`` with ``VC_TASK_INDEX`` and ``IRV2_GANG_CONFIG``; pod 0's address replaced by
127.0.0.1, there being no cluster DNS here): each fetches the MindRecord conversion from the real
S3 server into its own empty folder, they train as one msrun job of two nodes, rank 0 mirrors its
checkpoints, and pod 0 hands the outputs to the train task through the store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.ports import free_port
from support.training import assert_ranks_hold_equal_weights, smoke_config

from irv2_core.data.local_copy import conversion_fingerprint
from irv2_core.runtime.io import read_json
from irv2_core.storage import open_store
from irv2_core.storage.layout import gang_prefix, run_prefix
from irv2_core.storage.publish import folder_files, publish_files
from irv2_core.training.gang import GangOptions, pod_command
from irv2_core.training.gang_pod import RANK_ENV, collect_outputs, gang_spec

pytestmark = pytest.mark.slow

RUN_ID = "run-0000gang0001"


def _pod_args(spec, workdir) -> list[str]:
    """The pod's command line as the Job has it, for this machine: pod 0 at 127.0.0.1 and a
    workdir of its own."""
    args = pod_command(spec)[3:]
    args = [a for a in args if not a.startswith(("--master-addr=", "--workdir="))]
    return [*args, "--master-addr=127.0.0.1", f"--workdir={workdir}"]


def test_gang_pods_train_from_the_store_alone_and_hand_the_task_their_outputs(
    smoke_mindrecord, s3_client, s3_server, tmp_path
):
    s3_client.create_bucket(Bucket="gang")
    ref = {"uri": "s3://gang/irv2", "endpoint_url": s3_server}
    store = open_store(ref["uri"], s3_server)
    publish_files(store, "mindrecord/gangtest", folder_files(smoke_mindrecord))
    fingerprint = conversion_fingerprint(smoke_mindrecord)
    config = smoke_config(epoch_size=1, eval_every_epochs=0).to_dict()
    launch = {"device_num": 1, "num_nodes": 2, "master_port": free_port()}
    limits = {"join_timeout_s": 300.0, "stop_grace_s": 10.0}
    spec = gang_spec(RUN_ID, config, launch, ref, ("mindrecord/gangtest", fingerprint),
                     GangOptions(image="unused"), limits)  # fmt: skip
    pods = []
    for index in range(2):
        env = {**os.environ, **spec.env, RANK_ENV: str(index)}
        args = _pod_args(spec, tmp_path / f"pod{index}")
        pods.append(subprocess.Popen([sys.executable, "-m", "irv2_core", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True))  # fmt: skip
    outputs = [p.communicate(timeout=900)[0] for p in pods]
    for index, (pod, out) in enumerate(zip(pods, outputs, strict=True)):
        assert pod.returncode == 0, f"pod {index}:\n{out[-4000:]}"
        # each pod fetched the conversion into its own folder and trained its own copy
        assert conversion_fingerprint(tmp_path / f"pod{index}" / "mindrecord") == (fingerprint)
    assert "published" in outputs[0] and "published" not in outputs[1]
    keys = {o.key for o in store.list(run_prefix(RUN_ID))}
    assert any(k.endswith(".ckpt.sha256") for k in keys), keys  # rank 0's mirrored checkpoints

    run_dir = tmp_path / "task" / RUN_ID
    collect_outputs(store, RUN_ID, run_dir)
    summary = read_json(run_dir / "train_summary.json")
    assert (summary["rank_size"], summary["global_step"]) == (2, 2)
    assert (run_dir / "final.ckpt").stat().st_size > 100 << 20
    assert store.list(gang_prefix(RUN_ID)) == []  # handed over: nothing left behind
    runs = [tmp_path / f"pod{i}" / "runs" / RUN_ID for i in (0, 1)]
    assert_ranks_hold_equal_weights(runs[0], "irv2-e1-s2.ckpt", rank1_run=runs[1])
