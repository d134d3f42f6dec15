"""Multi-node training as one gang: a Volcano Job (``batch.volcano.sh/v1alpha1``) whose N pods
are scheduled together or not at all, each running the multi-node ``msrun`` with its rank.

Node runs as separate Kubernetes Jobs can start some nodes and leave the others Pending forever;
Volcano binds no pod of a Job until ``minAvailable`` of them fit. Here ``minAvailable`` = N, one
task (``worker``) of N replicas; Volcano's ``env`` plugin gives each pod ``VC_TASK_INDEX`` (its
node rank) and the ``svc`` plugin a headless Service, so pod 0 is
``<job>-worker-0.<job>.<namespace>.svc.<domain>`` (msrun's master address; the other pods wait
until it resolves). A pod evicted or failed restarts the whole gang (``RestartJob``), which
resumes from the store. :class:`VolcanoGang` submits it, watches it and deletes it through the
Kubernetes API (the ``k8s`` extra's client, imported only there).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from irv2_core.errors import Irv2Error

__all__ = ["CRD_NAME", "GROUP", "PLURAL", "TASK", "VERSION", "GangSpec", "VolcanoGang",
           "master_addr", "pod_script", "volcano_job"]  # fmt: skip

GROUP, VERSION, PLURAL = "batch.volcano.sh", "v1alpha1", "jobs"
CRD_NAME = f"{PLURAL}.{GROUP}"
TASK = "worker"
NPU = "huawei.com/Ascend910"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass
class GangSpec:
    """One multi-node training job: *nodes* pods of *npus_per_node* NPUs running *train_args*
    (``irv2 train ...``) in *image*."""

    name: str
    image: str
    nodes: int
    npus_per_node: int
    train_args: list[str]
    namespace: str = "default"
    queue: str = "default"
    master_port: int = 8118
    join_timeout_s: int = 600
    secret: str | None = "irv2-object-store"
    data_pvc: str | None = "irv2-data"
    data_mount_path: str = "/data/irv2"
    cluster_domain: str = "cluster.local"
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


def pod_script(spec: GangSpec) -> str:
    """The shell line every pod runs: wait until pod 0's name resolves (pods start at different
    times), then msrun with this pod's node rank, joined so the pod lives as long as training."""
    master = master_addr(spec)
    msrun = [
        "msrun", f"--worker_num={spec.nodes * spec.npus_per_node}",
        f"--local_worker_num={spec.npus_per_node}", f"--master_addr={master}",
        f"--master_port={spec.master_port}", "--node_rank=$VC_TASK_INDEX", "--join=True",
        f"--cluster_time_out={spec.join_timeout_s}", "--log_dir=msrun_log/node$VC_TASK_INDEX",
        "python", "-m", "irv2_core", *spec.train_args,
    ]  # fmt: skip
    quoted = " ".join(a if "$VC_TASK_INDEX" in a else shlex.quote(a) for a in msrun)
    wait = (f"for i in $(seq {spec.join_timeout_s}); do getent hosts {master} >/dev/null && "
            "break; sleep 1; done")  # fmt: skip
    return f"{wait}; exec {quoted}"


def _pod_template(spec: GangSpec) -> dict:
    npus = {NPU: str(spec.npus_per_node)}
    container = {
        "name": "irv2",
        "image": spec.image,
        "command": ["sh", "-c", pod_script(spec)],
        "env": [{"name": k, "value": v} for k, v in sorted(spec.env.items())],
        "resources": {"requests": dict(npus), "limits": dict(npus)},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    volumes: list[dict] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    if spec.secret:
        container["envFrom"] = [{"secretRef": {"name": spec.secret}}]
    if spec.data_pvc:
        container["volumeMounts"].append({"name": "irv2-data", "mountPath": spec.data_mount_path})
        volumes.append({"name": "irv2-data", "persistentVolumeClaim": {"claimName": spec.data_pvc}})
    return {"spec": {"restartPolicy": "Never", "containers": [container], "volumes": volumes}}


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


_DONE, _FAILED = {"Completed"}, {"Failed", "Aborted", "Terminated"}
INSTALL_VOLCANO = (
    "install Volcano (https://volcano.sh/en/docs/installation/: its Helm chart or "
    "installer/volcano-development.yaml), or train on several nodes without the gang"
)


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
        """Fail before submitting when the cluster does not know Volcano Jobs."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.extensions.read_custom_resource_definition(CRD_NAME)
        except ApiException as exc:
            if exc.status != 404:
                raise
            raise Irv2Error(
                f"the cluster has no {CRD_NAME} custom resource (Volcano's Job): " + INSTALL_VOLCANO
            ) from None

    def submit(self) -> dict:
        """Create the Job (after checking the CRD); the object the API server stored."""
        self.check_crd()
        return self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.spec.namespace, PLURAL, volcano_job(self.spec)
        )

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
            for cond in pod.status.conditions or []:
                if cond.status != "True" and cond.message:
                    reasons.append(f"{pod.metadata.name}: {cond.reason}: {cond.message}")
        return reasons

    def watch(
        self, timeout_s: float, poll_s: float = 5.0, on_phase: Callable[[str], None] | None = None
    ) -> str:
        """Poll until the job completes (its phase), fails (Irv2Error with the pods' reasons) or
        *timeout_s* passes (TimeoutError, naming the phase and reasons)."""
        deadline, seen = time.monotonic() + timeout_s, None
        while True:
            phase = self.phase()
            if phase != seen and on_phase is not None:
                on_phase(phase)
            seen = phase
            if phase in _DONE:
                return phase
            if phase in _FAILED:
                reasons = "; ".join(self.pod_reasons()) or "no pod reported a reason"
                raise Irv2Error(f"gang job {self.spec.name} {phase}: {reasons}")
            if time.monotonic() > deadline:
                reasons = "; ".join(self.pod_reasons()) or "no pod yet"
                raise TimeoutError(f"gang job {self.spec.name} still {phase} after "
                                   f"{timeout_s:g} s: {reasons}")  # fmt: skip
            time.sleep(poll_s)

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
