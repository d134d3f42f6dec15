"""Multi-node training as one Volcano gang, against a real Kubernetes API server: the Job is
refused before submitting on a cluster without Volcano's CRD, and with it (a minimal CRD: no
Volcano controller or scheduler runs here, so no pod is ever made) accepted as built, watched,
and deleted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from irv2_core.errors import Irv2Error
from irv2_core.training.gang import GangSpec, VolcanoGang, master_addr

pytestmark = [
    pytest.mark.k8s_real,
    # the test cluster's self-signed certificate (insecure-skip-tls-verify in its kubeconfig)
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

CRD = Path(__file__).resolve().parents[1] / "data" / "volcano-job-crd.yaml"


def _gang(plane, name: str) -> VolcanoGang:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    spec = GangSpec(name=name, image="registry.example.com/irv2/irv2-ascend:0.1.0", nodes=2,
                    npus_per_node=8, train_args=["train", "--data", "/data/irv2/mr"])  # fmt: skip
    return VolcanoGang(spec, api)


def _install_crd(gang: VolcanoGang) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        gang.extensions.create_custom_resource_definition(yaml.safe_load(CRD.read_text()))
    except ApiException as exc:
        if exc.status != 409:  # another test of this session installed it
            raise


def test_the_gang_job_is_refused_without_volcano_then_accepted_watched_and_deleted(plane):
    gang = _gang(plane, "irv2-gang")
    # a cluster without Volcano: nothing is submitted, and the error says what to install
    with pytest.raises(Irv2Error, match=r"no jobs\.batch\.volcano\.sh custom resource.*Volcano"):
        gang.submit()
    assert gang.read() is None
    _install_crd(gang)

    deadline = time.monotonic() + 30  # the API server serves a new CRD within seconds
    while True:
        try:
            stored = gang.submit()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    spec = stored["spec"]
    assert (spec["minAvailable"], spec["schedulerName"]) == (2, "volcano")
    (task,) = spec["tasks"]
    assert task["replicas"] == 2
    container = task["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["huawei.com/Ascend910"] == "8"
    assert master_addr(gang.spec) in container["command"][2]
    phases: list[str] = []
    with pytest.raises(TimeoutError, match="still Pending after 2 s: no pod yet"):
        gang.watch(timeout_s=2, poll_s=0.5, on_phase=phases.append)
    assert phases == ["Pending"]
    gang.delete()
    deadline = time.monotonic() + 30
    while gang.read() is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert gang.read() is None
    gang.delete()  # already gone: nothing to do
