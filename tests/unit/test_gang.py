"""The Volcano gang's manifest (irv2_core/training/gang.py); against an API server:
tests/k8s_real/test_volcano_gang.py."""

from __future__ import annotations

import subprocess

import pytest

from irv2_core.errors import Irv2Error
from irv2_core.training.gang import GangSpec, master_addr, pod_script, volcano_job


def _spec(**kw) -> GangSpec:
    base = dict(name="irv2-r1", image="reg/irv2:1", nodes=4, npus_per_node=8,
                train_args=["train", "--data", "/data/irv2/mr dir", "--resume"])  # fmt: skip
    return GangSpec(**{**base, **kw})


def test_the_gang_is_all_nodes_at_once_and_restarts_whole():
    job = volcano_job(_spec())
    spec = job["spec"]
    assert job["apiVersion"] == "batch.volcano.sh/v1alpha1" and spec["minAvailable"] == 4
    assert {"event": "PodEvicted", "action": "RestartJob"} in spec["policies"]
    assert set(spec["plugins"]) == {"env", "svc"} and spec["tasks"][0]["replicas"] == 4
    container = spec["tasks"][0]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"huawei.com/Ascend910": "8"}
    assert container["envFrom"] == [{"secretRef": {"name": "irv2-object-store"}}]


def test_every_pod_runs_msrun_with_its_rank_and_waits_for_pod_0():
    script = pod_script(_spec())
    master = master_addr(_spec())
    assert master == "irv2-r1-worker-0.irv2-r1.default.svc.cluster.local"
    assert f"getent hosts {master}" in script and f"--master_addr={master}" in script
    assert "--node_rank=$VC_TASK_INDEX" in script and "--worker_num=32" in script
    assert "'/data/irv2/mr dir'" in script  # arguments quoted, the rank variable not
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0  # valid shell


@pytest.mark.parametrize("bad", [dict(name="Irv2_Job"), dict(name="x" * 60), dict(nodes=1)])
def test_a_gang_that_cannot_be_named_or_is_no_gang_is_refused(bad):
    with pytest.raises(Irv2Error):
        _spec(**bad)
