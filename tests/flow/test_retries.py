"""The retry conditions as the Prefect engine applies them to the real stage task.

A small HTTP proxy stands between the task and the localhost S3 (SeaweedFS): it passes every request
through, except the GETs of one object, which it answers with a body cut off mid-way (a dropped
connection: transient) or with 403 AccessDenied (bad credentials: not transient). The number of
attempts is read back from the task run.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from support.images import write_image_tree

pytestmark = [pytest.mark.flow]

BUCKET, PREFIX = "irv2-retries", "images"
VICTIM = f"/{BUCKET}/{PREFIX}/class_0/img_000.jpg"
DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


class FlakyProxy(ThreadingHTTPServer):
    """Forwards to *upstream*; the GETs of VICTIM fail as *mode* says while ``failures`` > 0."""

    daemon_threads = True

    def __init__(self, upstream: str, mode: str, failures: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream, self.mode, self.failures = urlsplit(upstream).netloc, mode, failures
        self.victim_gets = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def should_fail(self, method: str, path: str) -> bool:
        if method != "GET" or urlsplit(path).path != VICTIM:
            return False
        with self.lock:
            self.victim_gets += 1
            if self.failures <= 0:
                return False
            self.failures -= 1
            return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: the test reads the task run, not this log
        pass

    def _any(self) -> None:
        server: FlakyProxy = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(server.upstream, timeout=30)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        resp = upstream.getresponse()
        data = resp.read()
        upstream.close()
        failing = server.should_fail(self.command, self.path)
        if failing and server.mode == "denied":
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(DENIED)))
            self.end_headers()
            self.wfile.write(DENIED)
            return
        self.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in ("transfer-encoding", "connection"):
                self.send_header(name, value)
        self.end_headers()
        if failing:  # the whole length announced, half of it sent, then the connection drops
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _any


@pytest.fixture(scope="module")
def source(s3_server, tmp_path_factory) -> str:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    root = write_image_tree(tmp_path_factory.mktemp("retry-images"), classes=2, per_class=2)
    for f in sorted(root.rglob("*.jpg")):
        client.upload_file(str(f), BUCKET, f"{PREFIX}/{f.relative_to(root).as_posix()}")
    return s3_server


def _stage_through(proxy: FlakyProxy, dest) -> tuple[object, object]:
    """Run the real stage task through *proxy* in a flow; return its final state and task run."""
    from prefect import flow

    from tasks.data import stage_task

    @flow(name="retry-test")
    def stage_only():
        return stage_task(
            source=f"s3://{BUCKET}/{PREFIX}",
            dest=str(dest),
            endpoint_url=proxy.url,
            return_state=True,
        )

    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        state = stage_only(return_state=True)
    finally:
        proxy.shutdown()
        proxy.server_close()
    with get_client(sync_client=True) as client:
        (run,) = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    return state, run


def test_a_dropped_download_is_retried_by_the_engine(prefect_harness, source, tmp_path):
    # every in-task re-read of the cut-off body fails too: only a task retry can fetch it
    proxy = FlakyProxy(source, "cut", failures=6)
    state, run = _stage_through(proxy, tmp_path / "staged")
    assert state.is_completed(), state.message
    assert run.run_count == 2, f"expected the failed attempt and one retry, got {run.run_count}"
    assert (tmp_path / "staged" / "class_0" / "img_000.jpg").is_file()
    assert proxy.victim_gets == 7


def test_access_denied_is_not_retried(prefect_harness, source, tmp_path):
    proxy = FlakyProxy(source, "denied", failures=100)
    state, run = _stage_through(proxy, tmp_path / "staged")
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "access denied" in message and "img_000.jpg" in message, message
    assert run.run_count == 1, f"bad credentials must fail at once, not after {run.run_count} runs"
