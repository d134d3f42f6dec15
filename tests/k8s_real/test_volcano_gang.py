"""Multi-node training as one Volcano gang, against a real Kubernetes API server (v1.20, with
its scheduler and controllers; tests/support/k8s_control_plane.py).

No Volcano controller or scheduler runs here (a minimal CRD stands for Volcano's), so no pod is
made from the Job by itself: where a test needs the gang's pod, it creates pod 0 as Volcano's
controller would (from the Job's template, owned by it), and the real scheduler leaves it
Pending for want of NPUs. Nothing here runs a container.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.states import Cancelling
from support.images import write_image_tree
from support.prefect_server import client_env
from support.processes import kill_process_group, start_serve, tail, wait_for
from support.training import FLOW_SMOKE

from irv2_core.errors import Irv2Error
from irv2_core.training.gang import GROUP, PLURAL, TASK, VERSION, GangOptions, VolcanoGang
from irv2_core.training.gang_pod import gang_spec
from irv2_core.training.gang_watch import GangLimits, GangNotStarted, run_gang

pytestmark = [
    pytest.mark.k8s_real,
    # the test cluster's self-signed certificate (insecure-skip-tls-verify in its kubeconfig)
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "tests" / "data" / "volcano-job-crd.yaml"
IMAGE = "registry.example.com/irv2/irv2-ascend:0.1.0"
STORE = {"uri": "s3://irv2-out/irv2", "endpoint_url": None}
LIMITS = {"join_timeout_s": 600.0, "stop_grace_s": 60.0}


RBAC = REPO / "deployments" / "k8s" / "gang-rbac.yaml"
FLOW_ACCOUNT = "system:serviceaccount:default:irv2-flow"  # gang-rbac.yaml's


def _api(plane, as_user: str | None = None):
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    if as_user:  # the admin impersonates the account: RBAC judges the account's rights
        api.set_default_header("Impersonate-User", as_user)
    return api


def _gang(plane, run_id: str, as_user: str | None = None) -> VolcanoGang:
    spec = gang_spec(run_id, {"batch_size": 32}, {"device_num": 8, "num_nodes": 2}, STORE,
                     ("mindrecord/0f", "fp"), GangOptions(image=IMAGE), LIMITS)  # fmt: skip
    return VolcanoGang(spec, _api(plane, as_user))


def _apply_rbac(plane) -> None:
    """`kubectl apply -f deployments/k8s/gang-rbac.yaml`, as API calls."""
    from kubernetes import utils

    utils.create_from_yaml(_api(plane), str(RBAC), namespace="default")


def _install_crd(gang: VolcanoGang) -> None:
    """Volcano's Job CRD (minimal), once per control plane; back when the API server serves it."""
    from kubernetes.client.exceptions import ApiException

    try:
        gang.extensions.create_custom_resource_definition(yaml.safe_load(CRD.read_text()))
    except ApiException as exc:
        if exc.status != 409:  # installed by an earlier test on this control plane
            raise

    def served() -> bool:
        try:
            gang.custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
            return True
        except ApiException:
            return False

    wait_for("the API server to serve Volcano Jobs", served, 30)


def _make_pod_0(gang: VolcanoGang) -> None:
    """Pod 0 of the gang as Volcano's controller makes it: the task's template, labelled and
    owned by the Job (so deleting the Job deletes it)."""
    job = gang.read()
    template = job["spec"]["tasks"][0]["template"]
    owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Job",
        "name": gang.spec.name,
        "uid": job["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{gang.spec.name}-{TASK}-0", "ownerReferences": [owner],
                        "labels": {"volcano.sh/job-name": gang.spec.name}},
           "spec": template["spec"]}  # fmt: skip
    gang.core.create_namespaced_pod("default", pod)


def _pods(gang: VolcanoGang) -> list:
    selector = f"volcano.sh/job-name={gang.spec.name}"
    return gang.core.list_namespaced_pod("default", label_selector=selector).items


def test_the_gang_is_refused_without_volcano_then_deleted_with_its_pod_when_it_cannot_start(plane):
    _apply_rbac(plane)
    # driven with the flow pod's rights only (gang-rbac.yaml); pod 0 made with the admin's
    gang, admin = (_gang(plane, "run-00000000a001", as_user) for as_user in (FLOW_ACCOUNT, None))
    with pytest.raises(Exception, match="Forbidden"):  # the account is not the admin
        gang.core.list_namespaced_pod("kube-system")
    # a cluster without Volcano: nothing is submitted, and the error says what to install
    with pytest.raises(Irv2Error, match=r"no jobs\.batch\.volcano\.sh custom resource.*Volcano"):
        run_gang(gang, GangLimits(), print)
    assert gang.read() is None
    _install_crd(admin)

    lines: list[str] = []
    stored: list[dict] = []

    def controller() -> None:  # what Volcano's controller would do once, after the submission
        if not stored:
            stored.append(gang.read())
            _make_pod_0(admin)

    with pytest.raises(GangNotStarted) as failed:
        run_gang(gang, GangLimits(start_timeout_s=8, poll_s=0.5), lines.append, check=controller)
    # the scheduler's own reason, read from the pod, is what the task fails with
    assert "still Pending after 8 s (start_timeout_s), deleted" in str(failed.value)
    assert "Insufficient huawei.com/Ascend910" in str(failed.value)
    name = gang.spec.name
    assert lines[:2] == [
        f"gang job default/{name} submitted: 2 pods x 8 NPUs, Volcano queue default",
        f"gang job {name}: Pending",
    ]
    spec = stored[0]["spec"]
    assert (spec["minAvailable"], spec["schedulerName"], spec["tasks"][0]["replicas"]) == (
        2, "volcano", 2)  # fmt: skip
    container = spec["tasks"][0]["template"]["spec"]["containers"][0]
    assert container["command"][3] == "gang-pod"
    assert container["resources"]["limits"]["huawei.com/Ascend910"] == "8"
    wait_for("the Job and its pod to be deleted",
             lambda: gang.read() is None and not _pods(gang), 60)  # fmt: skip


def _gang_jobs(gang: VolcanoGang) -> list[dict]:
    found = gang.custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    return [j for j in found["items"] if j["metadata"]["name"].startswith("irv2-run-")]


def _serve_gang_deployment(tmp_path: Path, plane, server: dict, s3_server: str):
    """``irv2 serve`` of a train-eval-export deployment that trains 2 nodes as a gang, with this
    cluster's kubeconfig, as a user outside the cluster would run it."""
    images = write_image_tree(tmp_path / "images", classes=3, per_class=8)
    params = {"source": str(images), "workdir": str(tmp_path / "work"), "num_nodes": 2,
              "output_uri": "s3://k8s-gang/irv2", "output_endpoint_url": s3_server,
              "export_formats": ["ONNX"], "overrides": FLOW_SMOKE,
              "gang": {"image": IMAGE, "start_timeout_s": 600, "poll_s": 1}}  # fmt: skip
    spec = {"name": "irv2-gang-test", "deployments": [
        {"name": "gang-cancel-test", "parameters": params,
         "entrypoint": "flows/train_eval_export.py:train_eval_export"}]}  # fmt: skip
    prefect_yaml = tmp_path / "prefect.yaml"
    prefect_yaml.write_text(yaml.safe_dump(spec), encoding="utf-8")
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = client_env(server, KUBECONFIG=str(plane.kubeconfig), PYTHONPATH=path,
                     PREFECT_HOME=str(tmp_path / "prefect-home"),
                     PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "results"))  # fmt: skip
    log = tmp_path / "serve.log"
    return start_serve(prefect_yaml, env, tmp_path, log), log


def test_cancelling_the_flow_run_deletes_its_gang(
    plane, prefect_harness, prefect_server, s3_server, s3_client, tmp_path
):
    gang = _gang(plane, "run-00000000a002")  # for its API clients
    _install_crd(gang)
    wait_for("no gang job left by another test", lambda: not _gang_jobs(gang), 60)
    s3_client.create_bucket(Bucket="k8s-gang")
    proc, log = _serve_gang_deployment(tmp_path, plane, prefect_server, s3_server)
    try:
        with get_client(sync_client=True) as client:

            def deployment():
                if proc.poll() is not None:
                    pytest.fail(f"irv2 serve exited ({proc.returncode}):\n{tail(log)}")
                return client.read_deployment_by_name("train-eval-export/gang-cancel-test")

            found = wait_for("the served deployment", deployment, 300, log=log)
            run = client.create_flow_run_from_deployment(found.id)
            # staged, converted and published; then the train task submits the gang
            jobs = wait_for("the train task's gang job", lambda: _gang_jobs(gang), 600, log=log)
            (container,) = jobs[0]["spec"]["tasks"][0]["template"]["spec"]["containers"]
            command = container["command"]
            assert command[command.index("--store-uri") + 1] == "s3://k8s-gang/irv2"
            assert command[command.index("--endpoint-url") + 1] == s3_server
            time.sleep(3)  # a few polls of the pending gang
            client.set_flow_run_state(run.id, Cancelling(message="cancelled by the test"))
            cancelled = lambda: client.read_flow_run(run.id).state.is_cancelled()  # noqa: E731
            wait_for("the flow run to be Cancelled", cancelled, 300, log=log)
        wait_for("the gang job to be deleted", lambda: not _gang_jobs(gang), 60, log=log)
    finally:
        kill_process_group(proc)
