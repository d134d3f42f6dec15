"""Helpers of the flow tests that run train-eval-export in the test process: kill its training
at a hold, find its task runs and artifacts, publish a run as the flow does, and answer a pause as
the Prefect UI's Resume form does."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)

from irv2_core.runtime.hold import HELD

__all__ = [
    "SignalTrainingAtHold",
    "flow_result",
    "flow_tables",
    "publish_like_the_flow",
    "resume_when_paused",
    "task_runs",
    "training_leader",
    "wait_gone",
    "webhook_receiver",
]


class SignalTrainingAtHold(threading.Thread):
    """Sends *sig* to the training process group once its training holds after a step
    (IRV2_TEST_HOLD, runtime/hold.py; set by the fixture) and waits for the group to end.
    SIGKILL is a crash: the retry resumes from the checkpoint on disk. SIGTERM is a
    preemption: it ends the hold (nothing releases it) and training saves the held step.
    ``stopped_at_step`` is the step of ``latest.json`` once the group is gone: the checkpoint
    a retry must resume from."""

    def __init__(self, runs_dir: Path, hold: Path, sig: int = signal.SIGTERM) -> None:
        super().__init__(daemon=True)
        self.runs_dir, self.hold, self.sig = runs_dir, hold, sig
        self.stopped_at_step, self.done = None, threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 900
        while not self.done.is_set() and time.monotonic() < deadline:
            leader = training_leader(self.runs_dir)
            if leader is None or not (self.hold / HELD).exists():
                time.sleep(0.1)
                continue
            with contextlib.suppress(ProcessLookupError):  # else it ended: fail in the test
                os.killpg(leader, self.sig)  # the leader of its own session; SIGTERM ends
                wait_gone(leader, 120)  # its hold (no release), so it saves the held step
                latest = next(self.runs_dir.glob("run-*/checkpoints/latest.json"))
                self.stopped_at_step = json.loads(latest.read_text())["step"]
            return


def training_leader(runs_dir: Path) -> int | None:
    """The pid of the training process group leader whose run folder is under *runs_dir*."""
    under = f"{runs_dir}{os.sep}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            pid = int(proc.name)
            ours = b"train" in argv and any(a.startswith(under) for a in argv)
            if ours and b"irv2_core" in argv and os.getpgid(pid) == pid:
                return pid
        except OSError:
            continue
    return None


def wait_gone(pgid: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def task_runs(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {r.name.rsplit("-", 1)[0] if r.name.startswith("train-") else r.name: r for r in runs}


def flow_tables(flow_run_id) -> dict[str, list[dict]]:
    """The report task's table artifacts of one flow run, by key (rows as dicts)."""
    keys = ["irv2-final-metrics", "irv2-exports", "irv2-timings"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=keys),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    return {a.key: json.loads(a.data) if isinstance(a.data, str) else a.data for a in found}


def flow_result(state) -> tuple[dict, set[str]]:
    """The flow's result and the names of the tasks it ran (without Prefect's run suffix)."""
    return state.result(), {n.rsplit("-", 1)[0] for n in task_runs(state.state_details.flow_run_id)}


def publish_like_the_flow(run_dir: Path, mindrecord: Path, root: str, endpoint: str) -> str:
    """Publish the finished run as the flow's tasks do with output_uri; return its URI."""
    from irv2_core.runtime.io import sha256_file
    from irv2_core.storage import open_store
    from irv2_core.storage.layout import convert_prefix, eval_prefix, run_prefix
    from irv2_core.storage.publish import folder_files, publish_files, run_files

    st, run_id = open_store(root, endpoint), run_dir.name
    conversion = json.loads((mindrecord / "conversion.json").read_text())
    meta = {"digest": "test", "record": conversion}
    publish_files(st, convert_prefix(conversion["fingerprint"]), folder_files(mindrecord), meta)
    publish_files(st, run_prefix(run_id), run_files(run_dir), {"digest": "test"})
    publish_files(st, eval_prefix(run_id), {"eval.json": run_dir / "eval.json"}, {"digest": "e"})
    ckpt_sha = sha256_file(run_dir / "final.ckpt")
    # a run.json as written before runs named their conversion by address: found by fingerprint
    evaluation = json.loads((run_dir / "eval.json").read_text())
    record = {"run_id": run_id, "source": "s3://b/p", "source_fingerprint": "listing",
              "mindrecord_fingerprint": conversion["fingerprint"], "config": {},
              "checkpoint": {"key": f"{run_prefix(run_id)}/final.ckpt", "sha256": ckpt_sha},
              "exports": [], "metrics": {k: evaluation[k] for k in ("top1", "top5", "count")},
              "code_version": "test", "published_at": 0.0,
              "uri": f"{root}/{run_prefix(run_id)}"}  # fmt: skip
    st.put_bytes(json.dumps(record).encode(), f"{run_prefix(run_id)}/run.json")
    return f"{root}/{run_prefix(run_id)}"


def resume_when_paused(output_uri: str, answer: dict, done: threading.Event) -> threading.Thread:
    """A thread that resumes the paused train-eval-export run whose ``output_uri`` parameter is
    *output_uri* (one test's own: other tests may pause runs on the same server) with *answer*,
    what the UI's Resume form posts."""
    from prefect.flow_runs import resume_flow_run

    def resume() -> None:
        paused = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED"]))
        )
        while not done.is_set():
            with get_client(sync_client=True) as client:
                runs = [r for r in client.read_flow_runs(flow_run_filter=paused)
                        if (r.parameters or {}).get("output_uri") == output_uri]  # fmt: skip
            if runs:
                resume_flow_run(runs[0].id, run_input=answer)
                return
            time.sleep(0.5)

    # the test's Prefect settings (its API URL) live in context variables: a new thread starts
    # without them and would talk to a temporary server of its own
    thread = threading.Thread(target=contextvars.copy_context().run, args=(resume,), daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP endpoint that records the JSON of every POST: ``(url, received)``."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
