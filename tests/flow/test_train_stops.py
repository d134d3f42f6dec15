"""The training process group ends with the train task, however the task ends.

Prefect itself does not kill child processes: the train task does
(``irv2_core.runtime.supervise``). Here on the real launch of ``python -m irv2_core train``: (1)
the flow's ``train_timeout_s`` runs out, and (2) Prefect's own cancellation of a flow run served
by ``irv2 serve`` (the runner SIGTERMs the flow-run process, as the UI's Cancel does).
Afterwards no process of any training group may remain."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.states import Cancelling
from support.images import write_image_tree
from support.prefect_server import client_env
from support.processes import kill_process_group, start_serve, tail, wait_for
from support.training import FLOW_SMOKE

from irv2_core.runtime.hold import HELD, HOLD_ENV

pytestmark = [pytest.mark.flow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FLOW, DEPLOYMENT = "train-eval-export", "cancel-test"
STARTUP_S = 300  # a cold `irv2 serve` or flow-run process on a busy 2-core machine
# training holds after its first step (IRV2_TEST_HOLD, never released): it is still training,
# however fast the machine, when the timeout or the cancel arrives
HOLD_STEP = 1


def _proc_stat(pid: str) -> tuple[str, int] | None:
    """(state letter, process group) of *pid*, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the process group *pgid*."""
    found = []
    for entry in Path("/proc").iterdir():
        st = _proc_stat(entry.name) if entry.name.isdigit() else None
        if st and st[0] != "Z" and st[1] == pgid:
            found.append(int(entry.name))
    return found


class TrainingWatcher(threading.Thread):
    """Records every training group leader (``python -m irv2_core train --out <under>/...``)."""

    def __init__(self, under: Path) -> None:
        super().__init__(daemon=True)
        self.under, self.leaders, self.done = str(under).encode(), set(), threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) in self.leaders:
                    continue
                try:
                    argv = (entry / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                ours = any(a.startswith(self.under) for a in argv)
                if ours and b"irv2_core" in argv and b"train" in argv:
                    st = _proc_stat(entry.name)
                    if st and st[1] == int(entry.name):  # the leader of its own group
                        self.leaders.add(int(entry.name))
            self.done.wait(0.2)


def assert_groups_gone(leaders: set[int], within_s: float = 60) -> None:
    """Every group led by *leaders* has no live process left (within *within_s*)."""
    assert leaders, "no training process was ever seen"
    wait_for(
        f"the training process groups {sorted(leaders)} to end",
        lambda: not any(group_members(pid) for pid in leaders),
        within_s,
        every_s=0.5,
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stop-images")
    return write_image_tree(root, classes=3, per_class=8)


def test_train_timeout_fails_the_run_and_kills_the_training_group(
    prefect_harness, images, tmp_path, monkeypatch
):
    from flows.train_eval_export import train_eval_export

    monkeypatch.setenv(HOLD_ENV, f"{HOLD_STEP}:{tmp_path / 'hold'}")
    watcher = TrainingWatcher(tmp_path / "work" / "runs")
    watcher.start()
    try:
        state = train_eval_export(
            source=str(images),
            workdir=str(tmp_path / "work"),
            overrides=FLOW_SMOKE,
            export_formats=["ONNX"],
            train_timeout_s=8,
            return_state=True,
        )
    finally:
        watcher.done.set()
        watcher.join()
    assert state.is_failed() and state.name == "TimedOut", state
    error = str(state.result(raise_on_failure=False))
    assert "training exceeded its 8 s limit; killed" in error, error
    assert_groups_gone(watcher.leaders)
    assert not list((tmp_path / "work" / "runs").glob("run-*/final.ckpt"))


def _serve(tmp_path: Path, images: Path, server: dict) -> tuple[subprocess.Popen, Path, dict]:
    """``irv2 serve`` of one train-eval-export deployment against the session's *server*."""
    spec = {
        "name": "irv2-cancel-test",
        "deployments": [
            {
                "name": DEPLOYMENT,
                "entrypoint": "flows/train_eval_export.py:train_eval_export",
                "parameters": {
                    "source": str(images),
                    "workdir": str(tmp_path / "work"),
                    "export_formats": ["ONNX"],
                    "overrides": FLOW_SMOKE,
                },
            }
        ],
    }
    prefect_yaml = tmp_path / "prefect.yaml"
    prefect_yaml.write_text(yaml.safe_dump(spec), encoding="utf-8")
    env = client_env(
        server,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "results"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **{HOLD_ENV: f"{HOLD_STEP}:{tmp_path / 'hold'}"},
    )
    log = tmp_path / "serve.log"
    return start_serve(prefect_yaml, env, tmp_path, log), log, env


def _logged(client, flow_run_id, text: str) -> bool:
    logs = client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
    )
    return any(text in log.message for log in logs)


def test_cancelling_a_served_run_kills_its_training_group(
    prefect_harness, prefect_server, images, tmp_path
):
    proc, log, _ = _serve(tmp_path, images, prefect_server)
    watcher = TrainingWatcher(tmp_path / "work" / "runs")
    watcher.start()
    try:
        with get_client(sync_client=True) as client:

            def deployment():
                if proc.poll() is not None:
                    pytest.fail(f"irv2 serve exited ({proc.returncode}):\n{tail(log)}")
                return client.read_deployment_by_name(f"{FLOW}/{DEPLOYMENT}")

            found = wait_for("the served deployment", deployment, STARTUP_S, log=log)
            run = client.create_flow_run_from_deployment(found.id)
            # really training (held after its first step), and its own lines reach the run's log
            wait_for(
                "the training process to train a step and log",
                lambda: (tmp_path / "hold" / HELD).exists() and _logged(client, run.id, "hold: "),
                STARTUP_S * 2,
                log=log,
            )
            client.set_flow_run_state(run.id, Cancelling(message="cancelled by the test"))
            wait_for(
                "the flow run to be Cancelled",
                lambda: client.read_flow_run(run.id).state.is_cancelled(),
                STARTUP_S,
                log=log,
            )
        assert_groups_gone(watcher.leaders)
        assert not list((tmp_path / "work" / "runs").glob("run-*/final.ckpt"))
    finally:
        watcher.done.set()
        kill_process_group(proc)
