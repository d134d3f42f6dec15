"""Shared fixtures: a temporary working directory, MindSpore's compile cache, tiny image sets,
a real S3 server (SeaweedFS) on localhost, a moto S3 mock for fault injection, the session's
PostgreSQL cluster, and the session's one real Prefect server on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.images import CLASS_COLOURS, make_image, write_image_tree
from support.seaweedfs import OTHER_S3_CREDENTIALS, S3_CREDENTIALS

__all__ = ["CLASS_COLOURS", "make_image", "write_image_tree"]  # the tests import them from here

# Before MindSpore is imported anywhere in the session. MindSpore names cached graphs by their
# order in a process, so this process, which compiles many graphs in test order, must never use
# the cache: a test building a train cell directly once got another test's optimizer graph. The
# `irv2` command processes the tests start take the cache, each in a folder scoped to its graphs
# (irv2_core/runtime/compile_cache.py), from IRV2_COMPILER_CACHE_ENABLE.
os.environ.setdefault(
    "MS_COMPILER_CACHE_PATH",
    str(Path(os.environ.get("TMPDIR", "/tmp")) / "irv2-test-compile-cache"),
)
# Under pytest-xdist each worker (gw0, gw1, ...) keeps a cache of its own: MindSpore writes cache
# files in place, and two workers compiling one graph at once must not read each other's half
# written files. A worker's tests run one at a time, as the whole suite did before.
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    _cache = os.environ["MS_COMPILER_CACHE_PATH"]
    os.environ["MS_COMPILER_CACHE_PATH"] = os.path.join(_cache, worker)
os.environ.setdefault("IRV2_COMPILER_CACHE_ENABLE", os.environ.get("MS_COMPILER_CACHE_ENABLE", "1"))
os.environ["MS_COMPILER_CACHE_ENABLE"] = "0"
os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only on stderr


# scripts/test.sh hands whole files to two pytest-xdist workers, to whichever is free, in
# collection order: the slow tiers go first, so that the run ends on short files, not on one
# worker still busy with a long one. (Stable: the order inside a tier stays as collected.)
TIER_ORDER = ("ui", "flow", "integration", "unit")


def pytest_collection_modifyitems(items):
    def tier(item) -> int:
        parts = Path(item.path).relative_to(Path(__file__).parent).parts
        return TIER_ORDER.index(parts[0]) if parts[0] in TIER_ORDER else len(TIER_ORDER)

    items.sort(key=tier)


@pytest.fixture(autouse=True)
def _tmp_cwd(tmp_path, monkeypatch):
    """Run every test in its own cwd: MindSpore's decoder may drop ./abnormal_image.jpg."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """3 classes x 8 JPEGs as plain class folders (no train/val split)."""
    return write_image_tree(tmp_path / "images")


@pytest.fixture(scope="session")
def smoke_mindrecord(tmp_path_factory) -> Path:
    """The one real MindRecord set (train 3 x 8, val 3 x 3, classes.json) that the training,
    store, fine-tune, evaluate, distributed and nodes tests read: made once per session (per
    xdist worker). Read only: a test that writes beside it copies it first."""
    from support.images import make_mindrecord

    return make_mindrecord(tmp_path_factory.mktemp("smoke-mindrecord"))


@pytest.fixture(scope="session")
def smoke_train_only(smoke_mindrecord, tmp_path_factory) -> Path:
    """The train split of ``smoke_mindrecord`` alone (links), for tests about training that
    must not evaluate."""
    data = tmp_path_factory.mktemp("smoke-train-only")
    for f in [*smoke_mindrecord.glob("train.mindrecord*"), smoke_mindrecord / "classes.json"]:
        (data / f.name).symlink_to(f)
    return data


def _fake_aws_environment() -> None:
    """Fake credentials for the whole session, so boto3 never looks for real ones."""
    os.environ.update(S3_CREDENTIALS, AWS_DEFAULT_REGION="us-east-1")


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server on localhost (SeaweedFS ``weed mini``), started once per run; yields its
    URL. It checks signatures: only S3_CREDENTIALS and OTHER_S3_CREDENTIALS are accepted.

    Without ``weed`` the S3 tests skip on a developer's machine and fail in CI."""
    from support import prerequisites, seaweedfs

    weed = seaweedfs.find_weed()
    if weed is None:
        prerequisites.missing("SeaweedFS (`weed`) for the S3 tests", seaweedfs.INSTALL)
    _fake_aws_environment()
    identities = {
        c["AWS_ACCESS_KEY_ID"]: c["AWS_SECRET_ACCESS_KEY"]
        for c in (S3_CREDENTIALS, OTHER_S3_CREDENTIALS)
    }
    server = seaweedfs.start(identities, weed)
    print(f"\nSeaweedFS S3 at {server.endpoint}, ready in {server.startup_s:.2f} s")
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_s3_server():
    """moto's S3 mock in server mode on localhost; yields its URL. Only for what a real server
    cannot show (moto's switch to start checking signatures mid-session, its IAM API): use
    ``s3_server`` for everything else."""
    from moto.server import ThreadedMotoServer
    from support.ports import free_ports

    _fake_aws_environment()
    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_client(s3_server):
    """A boto3 S3 client talking HTTP to the real S3 server."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory, prefect_database):
    """The session's one real Prefect server on PostgreSQL (support/prefect_server.py), shared by
    every test that needs one; ``{"env", "api", "api_url", "ui", "log", "db"}``."""
    from support.prefect_server import running_server

    home = tmp_path_factory.mktemp("prefect-server")
    with running_server(home, prefect_database("prefect")) as server:
        yield server


@pytest.fixture(scope="session")
def prefect_harness(prefect_server, tmp_path_factory):
    """This process's flows and tasks as clients of the session's server, with task results
    stored in a temp folder instead of ~/.prefect/storage. Logs and events still queued are
    sent before the server stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    storage = tmp_path_factory.mktemp("prefect-results")
    api = prefect_server["api_url"]
    with temporary_settings({PREFECT_API_URL: api, PREFECT_LOCAL_STORAGE_PATH: str(storage)}):
        yield storage
        APILogWorker.drain_all(timeout=30)
        EventsWorker.drain_all(timeout=30)


@pytest.fixture(scope="session")
def prefect_database():
    """A factory of fresh databases, ``prefect_database(name)`` -> ``support.postgres.Database``
    (``.url`` for PREFECT_API_DATABASE_CONNECTION_URL, ``.scalar(sql)`` for checks), on one real
    PostgreSQL cluster started on first use and stopped at the end of the session. Servers that
    production runs on PostgreSQL are tested on it too. Without PostgreSQL: fails under CI,
    skips elsewhere, naming the install command."""
    from support.postgres import postgres_cluster, require_bindir

    with postgres_cluster(require_bindir()) as cluster:
        yield cluster.create_database


@pytest.fixture(scope="module")
def pynative_mode():
    """PyNative for a module's one-shot forwards (cheapest uncompiled); earlier tests may have
    left GRAPH mode on. Use with ``pytestmark = pytest.mark.usefixtures("pynative_mode")``."""
    import mindspore as ms

    before = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=before)
