"""A real Kubernetes v1.20 control plane for the k8s_real tier: etcd, kube-apiserver,
kube-controller-manager (Job, service-account, garbage-collector and volume-binding controllers)
and kube-scheduler on free loopback ports, plus one Node object labelled as an Atlas 800
training server (``accelerator-type: module``) with CPU and memory but no ``huawei.com/Ascend910``.

The binaries come from ``scripts/build_k8s.sh`` (Debian's source package, cached outside the
clone); etcd from Debian's ``etcd-server``. No kubelet runs: no container ever starts, which is
enough for everything up to the pod (a Job created, its pod Pending with the scheduler's reason).
Every process runs in its own session and is stopped by its group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.ports import free_ports
from support.prerequisites import missing
from support.processes import kill_process_group

REPO = Path(__file__).resolve().parents[2]
VERSION = "v1.20.2"
BIN = Path(
    os.environ.get("IRV2_K8S_CACHE", Path.home() / ".cache" / "irv2" / "k8s")
) / VERSION / "bin"  # fmt: skip
BUILD = "bash scripts/build_k8s.sh   # as root: Debian's kubernetes source, ~14 min cold"
TOKEN = "irv2-k8s-test-admin-token"
NODE = "fake-node-1"


@dataclass
class ControlPlane:
    """A running control plane: its API URL, a kubeconfig file for clients and its logs."""

    api: str
    kubeconfig: Path
    logs: Path

    def client(self) -> httpx.Client:
        """An httpx client for the API, authenticated as cluster admin."""
        return httpx.Client(base_url=self.api, verify=False, timeout=30,
                            headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip


def binaries() -> Path:
    """The folder of the control plane's binaries (skips, or fails in CI, when absent)."""
    needed = ["kube-apiserver", "kube-scheduler", "kube-controller-manager"]
    if not all((BIN / b).is_file() for b in needed):
        missing(f"the Kubernetes {VERSION} control plane ({BIN})", BUILD)
    if shutil.which("etcd") is None:
        missing("etcd", "apt-get install -y etcd-server")
    return BIN


def _keys(home: Path) -> None:
    (home / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")
    subprocess.run(["openssl", "genrsa", "-out", str(home / "sa.key"), "2048"], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run(["openssl", "rsa", "-in", str(home / "sa.key"), "-pubout", "-out",
                    str(home / "sa.pub")], check=True, capture_output=True)  # fmt: skip


def _kubeconfig(home: Path, api: str) -> Path:
    path = home / "admin.kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        f"clusters:\n- name: test\n  cluster:\n    server: {api}\n"
        "    insecure-skip-tls-verify: true\n"
        "contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n"
        f"users:\n- name: admin\n  user:\n    token: {TOKEN}\n"
    )
    return path


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(plane: ControlPlane, procs: list[subprocess.Popen], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    with plane.client() as api:
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            with contextlib.suppress(httpx.HTTPError):
                if api.get("/readyz").status_code == 200:
                    return
            time.sleep(0.3)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in plane.logs.glob("*.log"))
    raise RuntimeError(f"the Kubernetes API server did not become ready:\n{logs}")


def _fake_node(plane: ControlPlane) -> None:
    """A Ready node with CPU and memory and no NPUs (the taint admission adds on create removed:
    no node-lifecycle controller runs to lift it)."""
    capacity = {"cpu": "192", "memory": "1536Gi", "pods": "110"}  # an Atlas 800's, less NPUs
    with plane.client() as api:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            # an Atlas 800 training server's label, without its NPUs
            "metadata": {
                "name": NODE,
                "labels": {"kubernetes.io/hostname": NODE, "accelerator-type": "module"},
            },
        }
        api.post("/api/v1/nodes", json=node).raise_for_status()
        status = {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test"}
                ],
            }
        }
        api.patch(
            f"/api/v1/nodes/{NODE}/status",
            json=status,
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
        api.patch(
            f"/api/v1/nodes/{NODE}",
            json={"spec": {"taints": None}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()


@contextlib.contextmanager
def control_plane(home: Path) -> Iterator[ControlPlane]:
    """Start etcd, the API server, the controller-manager and the scheduler under *home*."""
    b = binaries()
    etcd_client, etcd_peer, api_port = free_ports(3)
    logs = home / "logs"
    logs.mkdir(parents=True)
    _keys(home)
    api = f"https://127.0.0.1:{api_port}"
    plane = ControlPlane(api=api, kubeconfig=_kubeconfig(home, api), logs=logs)
    etcd_url, peer_url = f"http://127.0.0.1:{etcd_client}", f"http://127.0.0.1:{etcd_peer}"
    commands = {
        "etcd": ["etcd", "--name", "t", "--data-dir", str(home / "etcd"),
                 "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                 "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                 "--initial-cluster", f"t={peer_url}"],
        "apiserver": [str(b / "kube-apiserver"), f"--etcd-servers={etcd_url}",
                      "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                      f"--secure-port={api_port}", "--insecure-port=0",
                      f"--cert-dir={home / 'certs'}", f"--token-auth-file={home / 'tokens.csv'}",
                      "--authorization-mode=RBAC", "--service-cluster-ip-range=10.96.0.0/24",
                      "--service-account-issuer=https://kubernetes.default.svc",
                      f"--service-account-key-file={home / 'sa.pub'}",
                      f"--service-account-signing-key-file={home / 'sa.key'}",
                      "--allow-privileged=true", "--enable-priority-and-fairness=false"],
    }  # fmt: skip
    procs = [_start(cmd, logs / f"{name}.log") for name, cmd in commands.items()]
    try:
        _wait_ready(plane, procs)
        kube = ["--kubeconfig", str(plane.kubeconfig), "--bind-address=127.0.0.1", "--port=0",
                "--secure-port=0", "--leader-elect=false"]  # fmt: skip
        procs.append(_start([str(b / "kube-controller-manager"), *kube,
                             "--controllers=job,serviceaccount,serviceaccount-token,"
                             "garbagecollector,ttl-after-finished,persistentvolume-binder",
                             f"--service-account-private-key-file={home / 'sa.key'}",
                             f"--root-ca-file={home / 'certs' / 'apiserver.crt'}"],
                            logs / "controller-manager.log"))  # fmt: skip
        procs.append(_start([str(b / "kube-scheduler"), *kube], logs / "scheduler.log"))
        _fake_node(plane)
        yield plane
    finally:
        for proc in reversed(procs):
            kill_process_group(proc)
