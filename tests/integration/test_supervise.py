"""The supervised training process group (``irv2_core.runtime.supervise``): lines and progress
streamed, and the whole group killed on a timeout or a cancellation signal, workers in sessions of
their own included; and the msrun command the train task builds."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from irv2_core.runtime.supervise import TrainingProcessError, run_supervised
from irv2_core.training.command import train_command

STARTUP_S = 120  # patience for a python child to start on a loaded machine


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def _group_script(
    tmp_path: Path, pid_file: Path, tail: str, own_session: bool = False
) -> list[str]:
    """A child that starts a sleeping grandchild (in a session of its own, as msrun starts its
    workers, with *own_session*), records both pids (file renamed into place), prints
    ``ready``, then runs *tail*: a ``ready`` line means the whole group is up and known."""
    return _script(
        tmp_path,
        "import os, subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
        f" start_new_session={own_session})\n"
        f"open({str(pid_file)!r} + '.t', 'w').write(f'{{os.getpid()}} {{g.pid}}')\n"
        f"os.replace({str(pid_file)!r} + '.t', {str(pid_file)!r})\n"
        "print('ready', flush=True)\n" + tail,
    )


def _group_pids(pid_file: Path) -> list[int]:
    """The child's and grandchild's pids, once the child has written both (waits for it)."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            pids = [int(p) for p in pid_file.read_text().split()]
            if len(pids) == 2:
                return pids
        time.sleep(0.05)
    raise AssertionError(f"the child did not start its group within {STARTUP_S} s")


def test_supervised_run_streams_lines_and_progress(tmp_path):
    progress = tmp_path / "progress.json"
    cmd = _script(
        tmp_path,
        "import json, os, sys, time\n"
        f"p = {str(progress)!r}\n"
        "for step in (1, 2):\n"
        "    print(f'step {step}', flush=True)\n"
        "    json.dump({'step': step, 'total_steps': 2}, open(p + '.t', 'w'))\n"
        "    os.replace(p + '.t', p); time.sleep(0.3)\n",
    )
    lines, seen = [], []
    assert (
        run_supervised(
            cmd, on_line=lines.append, progress_file=progress, on_progress=seen.append, poll_s=0.05
        )
        == 0
    )
    assert lines == ["step 1", "step 2"]
    assert seen and seen[-1] == {"step": 2, "total_steps": 2}


def test_failure_reports_the_last_lines(tmp_path):
    cmd = _script(
        tmp_path, "import sys\nfor i in range(50): print(f'line {i}')\nsys.exit('boom: bad data')\n"
    )
    with pytest.raises(TrainingProcessError, match=r"(?s)status 1.*line 49.*boom: bad data") as exc:
        run_supervised(cmd, on_line=lambda _: None)
    assert "line 10\n" not in str(exc.value)  # only the tail, not the whole log
    assert exc.value.returncode == 1


def test_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "pids"
    cmd = _group_script(tmp_path, pid_file, "time.sleep(300)\n")
    # the check holds the supervision loop (before its limit test) until the group is up, so a
    # slow start cannot let the 1 s limit strike before there is a group to kill
    with pytest.raises(TimeoutError, match="exceeded its 1 s limit"):
        run_supervised(
            cmd,
            on_line=lambda _: None,
            timeout_s=1,
            poll_s=0.1,
            check=lambda: _group_pids(pid_file) and None,
        )
    for pid in _group_pids(pid_file):
        _assert_dies(pid)


def test_timeout_kills_workers_in_sessions_of_their_own(tmp_path):
    pid_file = tmp_path / "pids"  # msrun: each worker in its own session (os.setsid)
    cmd = _group_script(tmp_path, pid_file, "time.sleep(300)\n", own_session=True)

    def started() -> None:
        if not pid_file.exists():  # killed only once the worker is there to be missed
            return
        raise TimeoutError("stop now")

    with pytest.raises(TimeoutError, match="stop now"):
        run_supervised(cmd, on_line=lambda _: None, poll_s=0.1, check=started)
    for pid in _group_pids(pid_file):
        _assert_dies(pid)


class _Terminated(BaseException):
    """Stands in for Prefect's TerminationSignal (raised by its SIGTERM bridge on cancel)."""


def test_cancellation_signal_kills_the_whole_process_group(tmp_path):
    """A cancel is a SIGTERM to the task's process that arrives while it waits on the child:
    sent once the child printed its first line, it lands on a running group."""
    pid_file = tmp_path / "pids"
    cmd = _group_script(tmp_path, pid_file, "time.sleep(300)\n")
    lines, ready, stop = [], threading.Event(), threading.Event()

    def on_line(line: str) -> None:
        lines.append(line)
        ready.set()

    def cancel(signum, frame):
        raise _Terminated()

    def send_when_ready():
        if ready.wait(STARTUP_S) and not stop.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, cancel)
    sender = threading.Thread(target=send_when_ready, daemon=True)
    try:
        sender.start()
        # the limit only ends a hang: a cancel that never came fails as a TimeoutError
        with pytest.raises(_Terminated):
            run_supervised(cmd, on_line=on_line, poll_s=0.1, timeout_s=STARTUP_S + 60)
    finally:
        stop.set()  # the run ended another way: a sender still waiting must not send
        ready.set()
        sender.join(timeout=10)
        signal.signal(signal.SIGTERM, previous)
    assert lines == ["ready"]
    for pid in _group_pids(pid_file):  # the child and its grandchild
        _assert_dies(pid)


def _assert_dies(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), "a worker of the training group survived"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as dead
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_msrun_command_for_several_devices(tmp_path):
    single, log = train_command("mr", tmp_path / "run", tmp_path / "c.yaml", {"device_num": 1})
    assert single[:4] == [sys.executable, "-m", "irv2_core", "train"] and log is None
    assert "--resume" in single
    launch = {"device_num": 8, "num_nodes": 2, "node_rank": 1, "master_addr": "10.0.0.1"}
    multi, log = train_command("mr", tmp_path / "run", tmp_path / "c.yaml", launch)
    assert Path(multi[0]).name == "msrun"
    assert "--worker_num=16" in multi and "--local_worker_num=8" in multi
    assert "--master_addr=10.0.0.1" in multi and "--node_rank=1" in multi
    # node 1 (a train-node run) keeps its msrun logs apart in the shared run folder
    assert f"--log_dir={tmp_path / 'run' / 'msrun_log' / 'node1'}" in multi and log is None
    node0, log = train_command(
        "mr", tmp_path / "run", tmp_path / "c.yaml", {**launch, "node_rank": 0}
    )
    assert "--master_port=8118" in node0
    assert log == tmp_path / "run" / "msrun_log" / "worker_0.log"
    # a node that never joins is bounded by the train task's join timeout, in msrun too
    bounded, _ = train_command("mr", tmp_path / "run", tmp_path / "c.yaml", launch, None, 42.5)
    assert "--cluster_time_out=43" in bounded and "--cluster_time_out=600" in node0


def test_under_msrun_rank_0s_log_lines_are_streamed(tmp_path):
    """README: the train task streams rank 0's log lines. msrun writes each rank's output to a
    file of its own; the task streams worker_0.log's lines, not msrun's console or other ranks."""
    run_dir = tmp_path / "run"
    command, log = train_command("mr", run_dir, tmp_path / "c.yaml", {"device_num": 2})
    assert "--worker_num=2" in command and log == run_dir / "msrun_log" / "worker_0.log"
    cmd = _script(
        tmp_path,
        "import os, time\n"
        f"os.makedirs({str(log.parent)!r})\n"
        "print('msrun: the cluster is up', flush=True)\n"
        f"open({str(log.parent / 'worker_1.log')!r}, 'w').write('rank 1: step 1\\n')\n"
        f"with open({str(log)!r}, 'w') as f:\n"
        "    for step in (1, 2):\n"
        "        f.write(f'rank 0: step {step}\\n'); f.flush(); time.sleep(0.3)\n",
    )
    lines: list[str] = []
    assert run_supervised(cmd, on_line=lines.append, rank0_log=log, poll_s=0.05) == 0
    assert lines == ["rank 0: step 1", "rank 0: step 2"]
