"""Which S3 endpoint the store talks to: ``--endpoint-url`` / ``output_endpoint_url`` first, else
``AWS_ENDPOINT_URL``; on real boto3 clients (building one sends no request)."""

from __future__ import annotations

import botocore.utils
import pytest
from botocore.exceptions import EndpointConnectionError

from flows.params import validate_params
from irv2_core.storage import open_store
from irv2_core.storage.publish import open_ref
from irv2_core.storage.s3client import S3Client, parse_timestamp

MINIO = "http://minio.example:9000"
OBS = "https://obs.example.com"


def test_the_endpoint_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", OBS)
    store = open_store("s3://bucket/runs", MINIO)
    assert store.client.meta.endpoint_url == MINIO


def test_without_an_argument_the_environment_names_the_endpoint(monkeypatch):
    """``AWS_ENDPOINT_URL`` is used, and a connection failure names it (not "AWS default")."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", OBS)
    client = S3Client()
    assert client.client.meta.endpoint_url == OBS
    error = client.explain(EndpointConnectionError(endpoint_url=OBS), "listing", "s3://b", "b")
    assert f"endpoint {OBS}" in str(error)


def test_the_flows_output_endpoint_reaches_the_stores_client(monkeypatch):
    """``output_endpoint_url`` is the outputs' endpoint; without it the outputs go where the
    data came from (``endpoint_url``)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    both = validate_params(
        source="s3://in/data", endpoint_url=OBS, output_uri="s3://out/x", output_endpoint_url=MINIO
    )
    assert open_ref(both.store()).client.meta.endpoint_url == MINIO
    one = validate_params(source="s3://in/data", endpoint_url=OBS, output_uri="s3://out/x")
    assert open_ref(one.store()).client.meta.endpoint_url == OBS


def test_attempts_per_request_come_from_the_environment_or_the_default(monkeypatch):
    from irv2_core.errors import Irv2Error
    from irv2_core.storage.s3client import ATTEMPTS_ENV, MAX_ATTEMPTS, max_attempts

    monkeypatch.delenv(ATTEMPTS_ENV, raising=False)
    assert max_attempts() == MAX_ATTEMPTS == 6
    monkeypatch.setenv(ATTEMPTS_ENV, "1")
    retries = S3Client("http://127.0.0.1:9").client.meta.config.retries
    assert retries["total_max_attempts"] == 1
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv(ATTEMPTS_ENV, bad)
        try:
            max_attempts()
        except Irv2Error as exc:
            assert ATTEMPTS_ENV in str(exc) and "unset it" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Dec 2026 18:00:01 GMT",  # Last-Modified on a GET
        "2026-12-06T18:00:01.250Z",  # LastModified in a listing
        "2026-12-06T19:00:01+01:00",
        1796580001,
        "1796580001",
        "2026-12-06T18:00:01",  # no zone: botocore's rule decides
    ],
)
def test_timestamps_parse_to_what_botocores_parser_gives(value):
    """The client parses S3's timestamps without dateutil (issue 24: ~10 % of staging's CPU per
    small object); the instants must be botocore's."""
    assert parse_timestamp(value) == botocore.utils.parse_timestamp(value)
