"""Multi-node training as one gang: a Volcano Job (``batch.volcano.sh/v1alpha1``) whose N pods
are scheduled together or not at all, each running ``irv2 gang-pod`` (training/gang_pod.py).

Node runs as separate Kubernetes Jobs can start some nodes and leave the others Pending forever;
Volcano binds no pod of a Job until ``minAvailable`` of them fit. Here ``minAvailable`` = N, one
task (``worker``) of N replicas; Volcano's ``env`` plugin gives each pod ``VC_TASK_INDEX`` (its
node rank) and the ``svc`` plugin a headless Service, so pod 0 is
``<job>-worker-0.<job>.<namespace>.svc.<domain>`` (msrun's master address). The pods share
nothing but the object store. A pod evicted or failed restarts the whole gang (``RestartJob``),
which resumes from the store. :class:`VolcanoGang` submits, reads and deletes it through the
Kubernetes API (the ``k8s`` extra's client, imported only there); training/gang_watch.py drives it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from irv2_core.errors import Irv2Error

__all__ = ["CRD_NAME", "GROUP", "PLURAL", "TASK", "VERSION", "GangOptions", "GangSpec",
           "VolcanoGang", "kube_api", "master_addr", "pod_command", "volcano_job"]  # fmt: skip

GROUP, VERSION, PLURAL = "batch.volcano.sh", "v1alpha1", "jobs"
CRD_NAME = f"{PLURAL}.{GROUP}"
TASK = "worker"
NPU = "huawei.com/Ascend910"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class GangOptions(BaseModel):
    """How a deployment trains on several nodes as one Volcano gang (flow parameter ``gang``)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, description="the image of the gang's pods")
    namespace: str = "default"
    queue: str = Field("default", description="the Volcano queue")
    object_store_secret: str | None = Field(
        "irv2-object-store", description="Secret with the store's keys, passed to every pod"
    )
    start_timeout_s: float = Field(
        1800.0, gt=0, description="seconds the gang may wait for room for all its pods"
    )
    poll_s: float = Field(5.0, gt=0, description="seconds between reads of the gang's state")


@dataclass
class GangSpec:
    """One multi-node training job: *nodes* pods of *npus_per_node* NPUs in *image*, each
    running ``irv2 gang-pod`` with *pod_args* (what to train, from which store) and *env*."""

    name: str
    image: str
    nodes: int
    npus_per_node: int
    pod_args: list[str]
    namespace: str = "default"
    queue: str = "default"
    master_port: int = 8118
    join_timeout_s: int = 600
    secret: str | None = "irv2-object-store"
    scratch: str = "/scratch"  # each pod's own emptyDir: MindRecord copy, run folder
    cluster_domain: str = "cluster.local"
    grace_s: int = 300  # SIGTERM to SIGKILL: training saves and uploads its step
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # pod hostnames are <job>-worker-<i>: a DNS label of at most 63 characters
        if not _DNS_LABEL.fullmatch(self.name) or len(self.name) > 63 - len(f"-{TASK}-999"):
            raise Irv2Error(
                f"gang job name {self.name!r}: lower-case letters, digits and dashes, at most "
                f"{63 - len(f'-{TASK}-999')} characters (its pods' hostnames are DNS labels)"
            )
        if self.nodes < 2 or self.npus_per_node < 1:
            raise Irv2Error(
                f"a gang needs >= 2 nodes of >= 1 NPU ({self.nodes} x {self.npus_per_node})"
            )


def master_addr(spec: GangSpec) -> str:
    """Pod 0's name in the job's headless Service: msrun's master address on every pod."""
    return f"{spec.name}-{TASK}-0.{spec.name}.{spec.namespace}.svc.{spec.cluster_domain}"


def pod_command(spec: GangSpec) -> list[str]:
    """What every pod runs: ``irv2 gang-pod`` with the job's shape; its node rank comes from
    ``VC_TASK_INDEX``, which Volcano sets in each pod."""
    shape = [
        f"--nodes={spec.nodes}", f"--npus-per-node={spec.npus_per_node}",
        f"--master-addr={master_addr(spec)}", f"--master-port={spec.master_port}",
        f"--join-timeout-s={spec.join_timeout_s}", f"--workdir={spec.scratch}/irv2",
    ]  # fmt: skip
    return ["python", "-m", "irv2_core", "gang-pod", *shape, *spec.pod_args]


def _pod_template(spec: GangSpec) -> dict:
    npus = {NPU: str(spec.npus_per_node)}
    container = {
        "name": "irv2",
        "image": spec.image,
        "command": pod_command(spec),
        "env": [{"name": k, "value": v} for k, v in sorted(spec.env.items())],
        "resources": {"requests": dict(npus), "limits": dict(npus)},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "scratch", "mountPath": spec.scratch}],
    }  # fmt: skip
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory"}},
               {"name": "scratch", "emptyDir": {}}]  # fmt: skip
    if spec.secret:
        container["envFrom"] = [{"secretRef": {"name": spec.secret}}]
    return {"spec": {"restartPolicy": "Never", "containers": [container], "volumes": volumes,
                     "terminationGracePeriodSeconds": spec.grace_s}}  # fmt: skip


def volcano_job(spec: GangSpec) -> dict:
    """The Volcano Job of *spec*: one gang of ``nodes`` pods, restarted whole on a lost pod."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Job",
        "metadata": {"name": spec.name, "namespace": spec.namespace,
                     "labels": {"app.kubernetes.io/name": "irv2-train"}},
        "spec": {
            "schedulerName": "volcano",
            "minAvailable": spec.nodes,
            "queue": spec.queue,
            "maxRetry": 3,
            "plugins": {"env": [], "svc": ["--publish-not-ready-addresses=true"]},
            "policies": [{"event": "PodEvicted", "action": "RestartJob"},
                         {"event": "PodFailed", "action": "RestartJob"},
                         {"event": "TaskCompleted", "action": "CompleteJob"}],
            "tasks": [{"name": TASK, "replicas": spec.nodes, "template": _pod_template(spec)}],
        },
    }  # fmt: skip


NOT_STARTED = {"Pending", "Inqueue"}  # Volcano's phases before its pods are bound
DONE, FAILED = {"Completed"}, {"Failed", "Aborted", "Terminated"}
INSTALL_VOLCANO = (
    "install Volcano (https://volcano.sh/en/docs/installation/: its Helm chart or "
    "installer/volcano-development.yaml), or train on several nodes without the gang"
)


def kube_api() -> Any:
    """A Kubernetes API client: the pod's service account inside a cluster, else the kubeconfig
    (``KUBECONFIG`` or ``~/.kube/config``), as kubectl and Prefect's worker find it."""
    import os

    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config()


class VolcanoGang:
    """One Volcano Job on a cluster: submitted, watched until it ends, deleted on the way out.
    *api* is a ``kubernetes.client.ApiClient`` (from a kubeconfig, or in-cluster)."""

    def __init__(self, spec: GangSpec, api: Any) -> None:
        from kubernetes import client

        self.spec, self.api = spec, api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.extensions = client.ApiextensionsV1Api(api)

    def check_crd(self) -> None:
        """Fail before submitting when the cluster does not serve Volcano Jobs (asked by listing
        them in the namespace, which the flow's Role allows; the CRD itself is cluster-scoped)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.spec.namespace, PLURAL, limit=1
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            raise Irv2Error(
                f"the cluster has no {CRD_NAME} custom resource (Volcano's Job): " + INSTALL_VOLCANO
            ) from None

    def submit(self, replace_s: float = 0.0) -> dict:
        """Create the Job (after checking the CRD); the object the API server stored. With
        *replace_s*, a Job of the same name (left by an attempt whose process died) is deleted
        first, waiting up to that long for it to go."""
        from kubernetes.client.exceptions import ApiException

        self.check_crd()
        deadline = time.monotonic() + replace_s
        while True:
            try:
                return self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, self.spec.namespace, PLURAL, volcano_job(self.spec)
                )
            except ApiException as exc:
                if exc.status != 409 or time.monotonic() > deadline:
                    raise
            self.delete()
            time.sleep(0.5)

    def read(self) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.spec.namespace, PLURAL, self.spec.name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def phase(self) -> str:
        """``status.state.phase`` (``Pending`` until Volcano's controller has set one)."""
        job = self.read() or {}
        return ((job.get("status") or {}).get("state") or {}).get("phase") or "Pending"

    def pod_reasons(self) -> list[str]:
        """Why the job's pods are where they are: each pod's unmet condition or waiting reason."""
        pods = self.core.list_namespaced_pod(
            self.spec.namespace, label_selector=f"volcano.sh/job-name={self.spec.name}"
        )
        reasons = []
        for pod in pods.items:
            name = pod.metadata.name
            for cond in pod.status.conditions or []:
                if cond.status != "True" and cond.message:
                    reasons.append(f"{name}: {cond.reason}: {cond.message}")
            for cs in pod.status.container_statuses or []:
                waiting, ended = cs.state.waiting, cs.state.terminated
                if waiting is not None and waiting.reason:
                    reasons.append(f"{name}: {waiting.reason}: {waiting.message or ''}".rstrip())
                if ended is not None and ended.exit_code:
                    reasons.append(f"{name}: exited {ended.exit_code} ({ended.reason})")
        return reasons

    def pod_log(self, index: int = 0, since_s: int | None = None) -> str:
        """The log of pod *index* (``<job>-worker-<index>``) with timestamps, the last *since_s*
        seconds of it (all when None); '' while the pod has no container started."""
        from kubernetes.client.exceptions import ApiException

        pod = f"{self.spec.name}-{TASK}-{index}"
        kwargs = {"timestamps": True, **({"since_seconds": since_s} if since_s else {})}
        try:
            return self.core.read_namespaced_pod_log(pod, self.spec.namespace, **kwargs) or ""
        except ApiException as exc:
            if exc.status in (400, 404):  # not created yet, or its container not started
                return ""
            raise

    def delete(self) -> None:
        """Delete the job and, through their owner references, its pods (gone: nothing to do)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.spec.namespace, PLURAL, self.spec.name,
                body={"propagationPolicy": "Foreground"},
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise
