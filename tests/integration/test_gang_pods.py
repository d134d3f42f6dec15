"""The pods of a gang job, run as two local processes the way Volcano starts them (``irv2
gang-pod`` with ``VC_TASK_INDEX`` and ``IRV2_GANG_CONFIG``; pod 0's address replaced by
127.0.0.1, there being no cluster DNS here). They share nothing but the real S3 server.

First attempt: each pod fetches the MindRecord conversion into its own empty folder and they
train as one msrun job of two nodes; held after step 1, both get SIGTERM (what deleting or
evicting the gang sends) and stop with their step saved to the store. Second attempt (Volcano's
``RestartJob``: new pods, empty folders): they resume from the store, with the compile cache the
first attempt published, finish, and pod 0 hands the outputs to the train task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from support.ports import free_port
from support.processes import wait_for
from support.training import assert_ranks_hold_equal_weights, smoke_config

from irv2_core.data.local_copy import conversion_fingerprint
from irv2_core.runtime.hold import HELD, HOLD_ENV
from irv2_core.runtime.io import read_json
from irv2_core.storage import open_store
from irv2_core.storage.layout import gang_prefix, run_prefix
from irv2_core.storage.publish import folder_files, publish_files
from irv2_core.training.gang import GangOptions, pod_command
from irv2_core.training.gang_pod import RANK_ENV, collect_outputs, gang_spec

pytestmark = pytest.mark.slow

RUN_ID = "run-0000gang0001"
CACHE_CHOICE = ("MS_COMPILER_CACHE_ENABLE", "IRV2_COMPILER_CACHE_ENABLE")


def _start_pods(spec, root, extra_env: dict[str, str], new_cache: bool) -> list[subprocess.Popen]:
    """The gang's two pods, as the Job runs them, on this machine: pod 0 at 127.0.0.1, each
    with an empty folder of its own under *root*; with *new_cache*, an empty compile cache
    folder too (else this machine's, as the test session's settings say)."""
    pods = []
    for index in range(2):
        args = [a for a in pod_command(spec)[3:]
                if not a.startswith(("--master-addr=", "--workdir="))]  # fmt: skip
        args += ["--master-addr=127.0.0.1", f"--workdir={root / f'pod{index}'}"]
        env = {**os.environ, **spec.env, **extra_env, RANK_ENV: str(index)}
        if new_cache:  # a new pod: nobody chose about the cache (on by default), none there
            env = {k: v for k, v in env.items() if k not in CACHE_CHOICE}
            env["MS_COMPILER_CACHE_PATH"] = str(root / f"pod{index}" / "ms-cache")
        pods.append(subprocess.Popen([sys.executable, "-m", "irv2_core", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True))  # fmt: skip
    return pods


def _ended(pods) -> list[str]:
    try:
        return [p.communicate(timeout=900)[0] for p in pods]
    finally:
        for p in pods:
            if p.poll() is None:
                p.kill()


def test_gang_pods_train_from_the_store_stop_on_sigterm_and_a_restarted_gang_finishes(
    smoke_mindrecord, s3_client, s3_server, tmp_path
):
    s3_client.create_bucket(Bucket="gang")
    ref = {"uri": "s3://gang/irv2", "endpoint_url": s3_server}
    store = open_store(ref["uri"], s3_server)
    publish_files(store, "mindrecord/gangtest", folder_files(smoke_mindrecord))
    fingerprint = conversion_fingerprint(smoke_mindrecord)
    config = smoke_config(epoch_size=2, eval_every_epochs=0).to_dict()  # 4 steps
    launch = {"device_num": 1, "num_nodes": 2, "master_port": free_port()}
    spec = gang_spec(RUN_ID, config, launch, ref, ("mindrecord/gangtest", fingerprint),
                     GangOptions(image="unused"), {"join_timeout_s": 300.0,
                                                   "stop_grace_s": 120.0})  # fmt: skip
    first, hold = tmp_path / "attempt1", tmp_path / "hold"
    pods = _start_pods(spec, first, {HOLD_ENV: f"1:{hold}"}, new_cache=False)
    try:
        wait_for("rank 0 held after step 1", lambda: (hold / HELD).exists(), 600, every_s=0.2)
    except BaseException:
        _ended([*pods])
        raise
    for pod in pods:  # the gang deleted or evicted: every pod gets SIGTERM
        pod.send_signal(signal.SIGTERM)
    said = _ended(pods)
    for index, (pod, out) in enumerate(zip(pods, said, strict=True)):
        assert pod.returncode == 143, f"pod {index}:\n{out[-4000:]}"
        # each pod fetched the conversion into its own folder
        assert conversion_fingerprint(first / f"pod{index}" / "mindrecord") == fingerprint
    assert "node 0: stopped (SIGTERM); training saved its step" in said[0], said[0][-4000:]
    saved = read_json(first / "pod0" / "runs" / RUN_ID / "checkpoints" / "latest.json")["step"]
    assert saved in (1, 2)  # the step both ranks agreed to stop after
    assert store.list(gang_prefix(RUN_ID)) == []  # stopped: no outputs handed over

    pods = _start_pods(spec, tmp_path / "attempt2", {}, new_cache=True)  # RestartJob: new pods
    said = _ended(pods)
    for index, (pod, out) in enumerate(zip(pods, said, strict=True)):
        assert pod.returncode == 0, f"pod {index}:\n{out[-4000:]}"
    assert f"resume: restored step {saved}/4" in said[0], said[0][-4000:]
    # the first attempt's rank 0 published its compile cache (compiled, or found on its machine)
    assert "compile cache: fetched" in said[0]
    keys = {o.key for o in store.list(run_prefix(RUN_ID))}
    assert any(k.endswith(".ckpt.sha256") for k in keys), keys  # rank 0's mirrored checkpoints

    run_dir = tmp_path / "task" / RUN_ID
    collect_outputs(store, RUN_ID, run_dir)
    summary = read_json(run_dir / "train_summary.json")
    assert (summary["rank_size"], summary["global_step"]) == (2, 4)
    assert summary["resumed_from_step"] == saved
    assert (run_dir / "final.ckpt").stat().st_size > 100 << 20
    assert store.list(gang_prefix(RUN_ID)) == []  # handed over: nothing left behind
    runs = [tmp_path / "attempt2" / f"pod{i}" / "runs" / RUN_ID for i in (0, 1)]
    assert_ranks_hold_equal_weights(runs[0], "irv2-e2-s4.ckpt", rank1_run=runs[1])
