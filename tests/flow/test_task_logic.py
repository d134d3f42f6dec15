"""The tasks' own logic, tested directly where the Prefect engine adds nothing: cache keys that
notice changed outputs, the supervised training process group, retry conditions, parameters."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from deployments import load_deployment_specs
from flows.params import validate_params
from flows.serve import build_deployments, served
from irv2_core.cli import main as cli_main
from irv2_core.errors import EXIT_BAD_INPUT, EXIT_TRANSIENT, Irv2Error, TransientError
from irv2_core.runtime.supervise import TrainingProcessError, run_supervised
from irv2_core.storage.stamps import local_key as cache_key
from irv2_core.storage.stamps import stamp_path, write_stamp
from tasks.common import is_transient_network_error, is_user_error
from tasks.training import train_command


def _output(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "mindrecord"
    out.mkdir()
    f = out / "train.mindrecord0"
    f.write_bytes(b"x" * 100)
    return out, f


def _digest(key: str) -> str:
    """The content digest a key starts with (before a fresh suffix ``-…`` or record tag ``~…``)."""
    return key.split("~")[0].split("-")[0]


def test_cache_key_is_stable_only_while_the_stamped_output_is_intact(tmp_path):
    """Each case asserts both ways: the key changes when the output cannot be reused, and comes
    back equal to the stamped one as soon as it can (a key that always changed, or never did,
    fails here)."""
    out, f = _output(tmp_path)
    inputs = {"fingerprint": "abc", "shards": 1}
    first, second = cache_key(out, inputs), cache_key(out, inputs)
    assert first != second  # nothing stamped yet: every call must recompute
    assert _digest(first) == _digest(second)  # ... under the same content digest
    assert cache_key(out, dict(reversed(inputs.items()))).startswith(_digest(first))  # key order
    write_stamp(out, first, [f])
    assert cache_key(out, inputs) == cache_key(out, inputs) == first  # intact: reuse

    other = cache_key(out, {**inputs, "shards": 2})  # other inputs: another digest, fresh key
    assert _digest(other) != _digest(first) and other != first
    assert cache_key(out, inputs) == first  # the stamp still stands for the first inputs


def test_cache_key_changes_with_the_output_files(tmp_path):
    out, f = _output(tmp_path)
    inputs = {"fingerprint": "abc"}
    first = cache_key(out, inputs)
    write_stamp(out, first, [f])
    st = f.stat()
    f.write_bytes(b"y" * 100)  # same size, new content: only the mtime tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    changed = cache_key(out, inputs)
    assert changed != first and _digest(changed) == _digest(first)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the stamped size and mtime again
    assert cache_key(out, inputs) == first
    f.write_bytes(b"y" * 101)  # another size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache_key(out, inputs) != first
    write_stamp(out, first, [f])  # the task re-stamps what it produced
    assert cache_key(out, inputs) == first
    f.unlink()  # deleted output
    assert cache_key(out, inputs) != first
    assert stamp_path(out).name == ".mindrecord.cache.json" and stamp_path(out).parent == tmp_path


def test_store_cache_key_is_shared_unless_a_held_result_lost_its_publication(tmp_path):
    """With an object store the key is the same on every worker (one worker's result is another's
    cache hit), except while Prefect holds a result whose publication is missing or was made for
    other inputs: then a fresh key each time, until the output is published again."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore
    from irv2_core.storage.outputs import publish

    from irv2_core.records import ConversionRecord
    from irv2_core.runtime.io import sha256_json
    from irv2_core.storage import open_store
    from tasks.caching import store_cache_key

    def worker(name: str) -> SimpleNamespace:  # the part of a TaskRunContext the key reads
        results = LocalFileSystem(basepath=str(tmp_path / name))
        return SimpleNamespace(result_store=ResultStore(result_storage=results))

    store, content = open_store(str(tmp_path / "store")), {"fingerprint": "abc"}
    a, b = worker("a"), worker("b")

    def key(ctx, inputs=content):
        return store_cache_key(ctx, store, "mindrecord", inputs, ConversionRecord)

    shared = key(a)
    assert key(a) == key(b) == shared  # nothing held anywhere: the deterministic key
    assert _digest(key(a, {"fingerprint": "abd"})) != _digest(shared)
    a.result_store.write({"held": True}, key=shared)  # a result, but nothing published
    lost, again = key(a), key(a)
    assert len({lost, again, shared}) == 3 and _digest(lost) == _digest(shared)
    out = tmp_path / "part.mindrecord"
    out.write_bytes(b"x")
    publish(store, "mindrecord", {"part.mindrecord": out}, sha256_json(content))
    assert key(a) == key(b) == shared  # published for these inputs: the held result is valid
    publish(store, "mindrecord", {"part.mindrecord": out}, sha256_json({"other": 1}))
    assert key(a) != shared  # the publication now stands for other inputs
    assert key(b) == shared  # a worker that holds no result keeps the shared key


def test_garbage_stamp_means_recompute(tmp_path):
    out, _ = _output(tmp_path)
    stamp_path(out).write_text("{not json")
    assert "-" in cache_key(out, {"a": 1})


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


def test_only_transient_network_errors_are_retried():
    def client_error(code: str, status: int) -> ClientError:
        body = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(body, "GetObject")

    assert is_transient_network_error(EndpointConnectionError(endpoint_url="http://x"))
    assert is_transient_network_error(client_error("SlowDown", 503))
    assert not is_transient_network_error(client_error("AccessDenied", 403))
    assert not is_transient_network_error(client_error("NoSuchBucket", 404))
    try:  # a stage that wraps a dropped connection keeps it visible through the cause
        raise Irv2Error("download failed") from ConnectionResetError()
    except Irv2Error as exc:
        assert is_transient_network_error(exc)
    assert is_user_error(Irv2Error("bad")) and is_user_error(TrainingProcessError("x", 2))
    # what stage raises once botocore's own retries are spent: retried, and not bad input
    assert is_transient_network_error(TransientError("3 of 9 objects failed"))
    assert not is_user_error(TransientError("3 of 9 objects failed"))
    assert not is_user_error(TrainingProcessError("killed", -9))


def test_a_transient_failure_in_the_cli_is_retried_not_taken_for_bad_input(tmp_path, monkeypatch):
    """A training child that fails on an unreachable store (a TransientError) exits with its own
    status, which the launching task retries; status 2 (bad input) it does not."""
    for key, value in (("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")):
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("IRV2_S3_MAX_ATTEMPTS", "1")  # the same error, without ~15 s of back-off
    unreachable = ["--endpoint-url", "http://127.0.0.1:9"]  # the discard port: refused
    rc = cli_main(["pull", "s3://b/runs/run-x", str(tmp_path / "d"), *unreachable])
    assert rc == EXIT_TRANSIENT
    assert not is_user_error(TrainingProcessError("store unreachable", rc))
    assert cli_main(["pull", "not-a-uri", str(tmp_path / "d")]) == EXIT_BAD_INPUT
    assert is_user_error(TrainingProcessError("bad input", EXIT_BAD_INPUT))


def test_invalid_parameters_name_the_field(tmp_path):
    with pytest.raises(Irv2Error) as exc:
        validate_params(
            source=str(tmp_path / "missing"),
            overrides={"batch_size": 0},
            export_formats=["ONNX", "PNG"],
            device_num=0,
        )
    text = str(exc.value)
    assert "source:" in text and "neither an s3:// URI nor an existing local folder" in text
    assert "export_formats.1:" in text and "device_num:" in text
    with pytest.raises(Irv2Error, match=r"overrides: .*batch_size"):
        validate_params(source=str(tmp_path), overrides={"batch_size": 0})
    with pytest.raises(Irv2Error, match="AIR needs device_target Ascend"):
        validate_params(source="s3://b/p", export_formats=["AIR"])
    ok = validate_params(source="s3://bucket/prefix", overrides={"batch_size": 2})
    assert ok.resolve_config().batch_size == 2 and ok.export_formats == ["MINDIR", "ONNX"]


def test_deployments_file_defines_the_deployments():
    specs = load_deployment_specs()
    names = ["local", "nightly-retrain", "ascend-8p", "ascend-8p-k8s", "evaluate", "export",
             "report", "process"]  # fmt: skip
    assert [s["name"] for s in specs] == names
    node_spec = specs.pop()  # train-node/process: one node of a multi-node job
    assert node_spec["entrypoint"] == "flows/train_node.py:train_node"
    assert node_spec not in served(load_deployment_specs(), named=False)
    reruns = specs[-3:]  # re-evaluate/evaluate, re-export/export, re-report/report
    assert all(s in served(load_deployment_specs(), named=False) for s in reruns)
    for spec in specs[:-3]:  # every deployment's parameters pass the flow's validation
        validate_params(**{"source": "s3://bucket/prefix", **spec["parameters"]})
    deployments = {d.name: d for d in build_deployments(specs)}
    assert {n: deployments[n].flow_name for n in ("evaluate", "export", "report")} == {
        "evaluate": "re-evaluate", "export": "re-export", "report": "re-report"}  # fmt: skip
    assert deployments["nightly-retrain"].schedules[0].schedule.cron == "0 2 * * *"
    # one run of a deployment at a time: a second (schedule or manual) queues
    assert all(d.concurrency_limit == 1 for d in deployments.values())
    assert deployments["ascend-8p"].parameters["device_num"] == 8
    assert deployments["ascend-8p"].parameters["preset"] == "zoo-ascend-8p"
    assert deployments["local"].entrypoint.endswith("train_eval_export.py:train_eval_export")
    with pytest.raises(Irv2Error, match="no deployment named nope"):
        load_deployment_specs(names=["nope"])


def test_demo_settings_pass_the_flow_validation(tmp_path):
    from flows.demo import DEMO_PRESET

    params = validate_params(source=str(tmp_path), preset=DEMO_PRESET, device_target="CPU")
    cfg = params.resolve_config()
    assert cfg.image_size == 75 and cfg.device_target == "CPU" and cfg.amp_level == "O0"
