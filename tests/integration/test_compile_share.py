"""MindSpore's compile cache shared through the real S3 server (training/compile_share.py): a
worker that compiled publishes its scoped cache after its first step, a fresh worker (empty
cache folder, empty run folder) fetches it before compiling, and a cache of other graphs or one
that does not verify is never used."""

from __future__ import annotations

import json
import os
import time

import pytest
from support.training import run_cli, smoke_args

from irv2_core.storage import open_store
from irv2_core.training.compile_share import SharedCompileCache

MINDIR = "graph_cache/compile_cache_0.mindir"


@pytest.fixture
def store_uri(s3_client) -> str:
    bucket = f"cache-{os.getpid()}-{time.monotonic_ns()}"
    s3_client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/irv2"


def _first_step(run) -> dict:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (row,) = [r for r in rows if r.get("kind") == "first_step"]
    return row


@pytest.mark.slow
def test_a_fresh_worker_takes_the_compile_cache_from_the_store(
    smoke_mindrecord, tmp_path, store_uri, s3_server
):
    def train(machine: str):
        cache = {"MS_COMPILER_CACHE_ENABLE": "1", "IRV2_COMPILER_CACHE_ENABLE": "1",
                 "MS_COMPILER_CACHE_PATH": str(tmp_path / machine / "ms-cache")}  # fmt: skip
        out = tmp_path / machine / "run"
        done = run_cli("train", "--data", str(smoke_mindrecord), "--out", str(out),
                       *smoke_args(), "--stop-after-steps", "1", "--compile-cache-uri",
                       store_uri, "--endpoint-url", s3_server, env=cache)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout, _first_step(out)

    said, first = train("m1")
    assert "compile cache: none in the store; compiling the graph" in said
    assert first["compile_cache"] == "compiling" and "compile cache: published" in said
    store = open_store(store_uri, s3_server)
    keys = {o.key for o in store.list("compile-cache/")}
    (scope,) = {k.split("/")[1] for k in keys}
    assert f"compile-cache/{scope}/rank_0/{MINDIR}" in keys

    said, first = train("m2")  # another machine: nothing local but the data
    assert "compile cache: fetched" in said and "(verified)" in said, said
    assert first["compile_cache"] == "fetched"
    assert (tmp_path / "m2" / "ms-cache" / scope / "rank_0" / MINDIR).is_file()
    assert "compile cache: published" not in said  # the store had it all


def _cache_folder(root, scope: str, graph: bytes):
    folder = root / scope
    (folder / "rank_0" / "graph_cache").mkdir(parents=True)
    (folder / "rank_0" / MINDIR).write_bytes(graph)
    (folder / "rank_0" / "graph_cache" / "compile_dependency.hash").write_text("deps")
    return folder


def test_a_cache_of_other_graphs_or_one_that_does_not_verify_is_never_used(
    tmp_path, store_uri, s3_server
):
    store, said = open_store(store_uri, s3_server), []
    SharedCompileCache(store, str(_cache_folder(tmp_path / "w1", "irv2-aaaa", b"g1")), 0,
                       said.append).publish()  # fmt: skip
    assert said == ["compile cache: published 2 files to compile-cache/irv2-aaaa/rank_0"]

    def fresh(worker: str, scope: str, rank: int = 0) -> tuple[str, SharedCompileCache]:
        cache = SharedCompileCache(store, str(tmp_path / worker / scope), rank, said.append)
        return cache.fetch(), cache

    # other graphs (another scope), or another rank of these: nothing fetched
    assert fresh("w2", "irv2-bbbb")[0] == "compiling" and "none in the store" in said[-1]
    assert fresh("w2", "irv2-aaaa", rank=1)[0] == "compiling"
    state, cache = fresh("w3", "irv2-aaaa")
    assert state == "fetched" and (cache.local / MINDIR).read_bytes() == b"g1"
    # the store's copy changed after it was committed: refused, and nothing left behind
    store.put_bytes(b"g2-other-graph", f"compile-cache/irv2-aaaa/rank_0/{MINDIR}")
    state, cache = fresh("w4", "irv2-aaaa")
    assert state == "compiling" and not cache.local.exists()
    assert "sha256" in said[-1] and said[-1].endswith("compiling the graph"), said[-1]
