"""Which failures the stage tasks retry: transient network errors and crashes, never bad input."""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError

from irv2_core.cli import main as cli_main
from irv2_core.errors import EXIT_BAD_INPUT, EXIT_TRANSIENT, Irv2Error, TransientError
from irv2_core.runtime.supervise import TrainingProcessError
from tasks.common import is_transient_network_error, is_user_error


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
