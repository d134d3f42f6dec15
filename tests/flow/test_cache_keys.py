"""Cache keys that notice changed outputs: stamped local outputs, and the key shared through an
object store (Prefect's result store decides whether a held result lost its publication)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from irv2_core.storage.stamps import local_key as cache_key
from irv2_core.storage.stamps import stamp_path, write_stamp


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

    from irv2_core.records import ConversionRecord
    from irv2_core.runtime.io import sha256_json
    from irv2_core.storage import open_store
    from irv2_core.storage.outputs import publish
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
