"""The Ascend work pool against a real Kubernetes API server (v1.20, tests/support/
k8s_control_plane.py) and the session's Prefect server on PostgreSQL: the README's "Running on
a cluster" steps 2-4, as written there, with a real Kubernetes worker.

The cluster has one node with CPU and memory and no NPUs, and no kubelet: the Job is created and
its pod stays Pending with the scheduler's reason, which is what a run that asks for NPUs nobody
has sees. The shipped automation (its wait shortened) cancels the run and the worker deletes the
Job. Nothing here runs a container.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.processes import kill_process_group, venv_tool, wait_for

pytestmark = pytest.mark.k8s_real

REPO = Path(__file__).resolve().parents[2]
POOL, DEPLOYMENT = "irv2-ascend-k8s", "ascend-8p-k8s"  # the README's names
IMAGE = "registry.example.com/irv2/irv2-ascend:0.1.0"
NS = "/api/v1/namespaces/default"


def _prefect(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([venv_tool("prefect"), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _secret_and_volume(plane) -> None:
    """Step 2: `kubectl create secret generic irv2-object-store ...` and
    `kubectl apply -f deployments/k8s/data-pvc.yaml`, as API calls; plus the volume the claim
    binds to (a cluster's storage class would provide one)."""
    keys = {"AWS_ACCESS_KEY_ID": "AKIAK8STEST", "AWS_SECRET_ACCESS_KEY": "k8s-test-secret"}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "irv2-object-store"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()},
    }
    pvc = yaml.safe_load((REPO / "deployments" / "k8s" / "data-pvc.yaml").read_text())
    with plane.client() as api:
        api.post(f"{NS}/secrets", json=secret).raise_for_status()
        api.post(f"{NS}/persistentvolumeclaims", json=pvc).raise_for_status()
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "irv2-data-test"},
            "spec": {
                "capacity": {"storage": "500Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/tmp/irv2-data-test"},
                "claimRef": {"namespace": "default", "name": "irv2-data"},
            },
        }
        api.post("/api/v1/persistentvolumes", json=volume).raise_for_status()
    # The controller manager binds the claim a moment later; a pod the scheduler sees before then
    # waits on "unbound immediate PersistentVolumeClaims" instead of the reason under test.
    wait_for("the data claim to be Bound", lambda: _claim_phase(plane) == "Bound", 120)


def _claim_phase(plane) -> str | None:
    with plane.client() as api:
        claim = api.get(f"{NS}/persistentvolumeclaims/irv2-data").json()
    return claim.get("status", {}).get("phase")


def _automation(env: dict[str, str], within_s: int) -> None:
    """Step 4's automation, its 30-minute wait shortened to *within_s*."""
    shipped = REPO / "deployments" / "k8s" / "pod-never-started.yaml"
    automation = yaml.safe_load(shipped.read_text(encoding="utf-8"))["automations"][0]
    assert automation["trigger"]["match_related"]["prefect.resource.name"] == POOL
    automation["trigger"]["within"] = within_s
    _prefect(env, "automation", "create", "--from-json", json.dumps(automation))


def _job(plane, run_id: str) -> dict | None:
    with plane.client() as api:
        jobs = api.get(
            "/apis/batch/v1/namespaces/default/jobs",
            params={"labelSelector": f"prefect.io/flow-run-id={run_id}"},
        ).json()
    return (jobs["items"] or [None])[0]  # fmt: skip


def _pods(plane, job_name: str) -> list[dict]:
    with plane.client() as api:
        pods = api.get(f"{NS}/pods", params={"labelSelector": f"job-name={job_name}"}).json()
    return pods["items"]


def _pod_unschedulable(plane, job_name: str) -> str | None:
    for pod in _pods(plane, job_name):
        for cond in pod["status"].get("conditions", []):
            if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return cond["message"]
    return None


def test_the_ascend_deployment_submits_its_job_and_a_pod_without_npus_is_cancelled(
    plane, prefect_server, tmp_path
):
    api_url = prefect_server["api_url"]
    env = {**os.environ, "PREFECT_API_URL": api_url, "IRV2_IMAGE": IMAGE,
           "KUBECONFIG": str(plane.kubeconfig), "PREFECT_WORKER_QUERY_SECONDS": "2",
           "PREFECT_WORKER_PREFETCH_SECONDS": "2"}  # fmt: skip
    _secret_and_volume(plane)
    template = "deployments/k8s/ascend-job-template.json"
    _prefect(env, "work-pool", "create", POOL, "--type", "kubernetes", "--base-job-template",
             template)  # fmt: skip
    _prefect(env, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml",
             "--name", DEPLOYMENT)  # fmt: skip
    # the gang deployment (README "Several nodes as one gang"): its pods' image from IRV2_IMAGE
    _prefect(env, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml",
             "--name", "ascend-2x8p-gang")  # fmt: skip
    gang = _deployment(api_url, "ascend-2x8p-gang")
    assert gang["parameters"]["gang"]["image"] == IMAGE and gang["parameters"]["num_nodes"] == 2
    assert gang["job_variables"]["npu_count"] == 1
    _automation(env, within_s=20)
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen([venv_tool("prefect"), "worker", "start", "--pool", POOL,
                                   "--type", "kubernetes"], env=env, cwd=REPO, stdout=sink,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        # no node has the NPUs it asks for
        run_id = _run(env, api_url)
        job = wait_for("the worker to create the Job", lambda: _job(plane, run_id), 180, log=log)
        _assert_ascend_job(job)
        _cancelled_by_the_automation(plane, env, api_url, run_id, job, log,
                                     "Insufficient huawei.com/Ascend910")  # fmt: skip
        # no node has the accelerator-type it asks for (Atlas 300T cards, on a module server)
        run_id = _run(env, api_url, "--job-variable", 'node_selector={"accelerator-type": "card"}')
        job = wait_for("the worker to create the Job", lambda: _job(plane, run_id), 180, log=log)
        assert job["spec"]["template"]["spec"]["nodeSelector"] == {"accelerator-type": "card"}
        _cancelled_by_the_automation(plane, env, api_url, run_id, job, log,
                                     "didn't match Pod's node affinity")  # fmt: skip
    finally:
        kill_process_group(worker)


def _run(env: dict[str, str], api_url: str, *extra: str) -> str:
    """`prefect deployment run` of the deployment; the new run's id."""
    before = set(_runs(api_url))
    _prefect(env, "deployment", "run", f"train-eval-export/{DEPLOYMENT}", *extra)
    (new,) = set(_runs(api_url)) - before
    return new


def _cancelled_by_the_automation(plane, env, api_url, run_id, job, log, reason) -> None:
    """The pod waits with the scheduler's *reason*; the automation cancels the run; the reaper
    deletes its Job (and so its pod) and marks it Cancelled."""
    name = job["metadata"]["name"]
    said = wait_for("the pod to be unschedulable", lambda: _pod_unschedulable(plane, name), 120)
    assert reason in said, said
    state = _flow_run_state(api_url, run_id)
    wait_for("the automation to cancel the run",
             lambda: state()["type"] == "CANCELLING", 240, log=log)  # fmt: skip
    assert "did not start within the time" in state()["message"]
    # Prefect 3.9's worker no longer owns a submitted run: the reaper deletes its Job
    reaped = subprocess.run([sys.executable, "-m", "deployments.k8s.reap", "--pool", POOL,
                             "--once"], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert reaped.returncode == 0 and run_id in reaped.stdout, reaped.stdout + reaped.stderr
    assert state()["type"] == "CANCELLED"
    wait_for("the Job to be deleted", lambda: _job(plane, run_id) is None, 60, log=log)
    wait_for("its pod to be deleted", lambda: not _pods(plane, name), 60, log=log)


def _assert_ascend_job(job: dict) -> None:
    """The Job as the template and `prefect.yaml` make it (read back from the API server)."""
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    resources = container["resources"]
    assert resources["requests"]["huawei.com/Ascend910"] == "8"
    assert resources["limits"]["huawei.com/Ascend910"] == "8"
    assert container["image"] == IMAGE and pod["nodeSelector"] == {"accelerator-type": "module"}
    assert pod["terminationGracePeriodSeconds"] == 300
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"ascend-driver": "/usr/local/Ascend/driver",
                      "ascend-add-ons": "/usr/local/Ascend/add-ons", "dshm": "/dev/shm",
                      "irv2-data": "/data/irv2"}  # fmt: skip
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert volumes["irv2-data"]["persistentVolumeClaim"]["claimName"] == "irv2-data"
    assert container["envFrom"] == [{"secretRef": {"name": "irv2-object-store"}}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"
    assert env["IRV2_IMAGE"] == IMAGE
    assert not any("SECRET" in name for name in env), "a key in the Job's env"


def _deployment(api_url: str, name: str) -> dict:
    import httpx

    return httpx.get(f"{api_url}/deployments/name/train-eval-export/{name}", timeout=10).json()


def _runs(api_url: str) -> list[str]:
    """The ids of the deployment's flow runs (only this test uses it on the shared server)."""
    import httpx

    deployment = _deployment(api_url, DEPLOYMENT)
    body = {"deployments": {"id": {"any_": [deployment["id"]]}}}
    return [
        r["id"] for r in httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=10).json()
    ]


def _flow_run_state(api_url: str, run_id: str):
    import httpx

    def state() -> dict:
        return httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10).json()["state"]

    return state
