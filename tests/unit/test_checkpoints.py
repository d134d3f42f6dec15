"""A run's checkpoint rotation: recovery checkpoints apart from epoch ones, verified resume, and
the store mirror; on a small real MindSpore cell (the rotation does not depend on the network)."""

from __future__ import annotations

import threading

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from irv2_core.config import load_config
from irv2_core.errors import Irv2Error
from irv2_core.storage import open_store
from irv2_core.storage.mirror import Mirror
from irv2_core.training.checkpoints import RECOVERY, CheckpointStore
from irv2_core.training.distributed import DistInfo


class _Cell(nn.Cell):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.dense = nn.Dense(4, 2)
        self.global_step = ms.Parameter(ms.Tensor(np.array([step], np.int32)), name="global_step")

    def construct(self, x):
        return self.dense(x)


def _store(tmp_path, mirror=None, rank=0, size=None, **overrides):
    cfg = load_config("cpu-smoke", overrides={"keep_checkpoint_max": 2, **overrides})
    world = DistInfo(rank=rank, size=size or (max(2, rank + 1) if rank else 1))
    return CheckpointStore(tmp_path / "run", cfg, world, mirror)


def test_recovery_checkpoints_keep_only_the_newest_apart_from_epoch_ones(tmp_path):
    store = _store(tmp_path, recovery_every_steps=2)
    assert not store.recovery_due(1) and store.recovery_due(2)
    for step in (2, 4, 6):
        store.save(_Cell(step), 1, step, recovery=True)
    store.save(_Cell(7), 1, 7)
    store.save(_Cell(8), 2, 8)
    store.save(_Cell(9), 3, 9)
    recovery = sorted(p.name for p in (store.dir / RECOVERY).glob("*.ckpt"))
    epochs = sorted(p.name for p in store.dir.glob("*.ckpt"))
    assert recovery == ["irv2-e1-s6.ckpt"]
    assert epochs == ["irv2-e2-s8.ckpt", "irv2-e3-s9.ckpt"]
    assert not store.recovery_due(7)  # counted from the last recovery checkpoint (6)


def test_resume_takes_a_newer_recovery_checkpoint(tmp_path):
    store = _store(tmp_path, recovery_every_minutes=0.001)
    store.save(_Cell(4), 1, 4)
    store.save(_Cell(6), 2, 6, recovery=True)  # the node died after this, mid-epoch
    assert store.restore(_Cell(0)) == 6
    assert store.restored_from.parent.name == RECOVERY


def test_every_rank_resumes_from_rank0s_checkpoint_whatever_its_own_folder_holds(tmp_path):
    """Ranks save on their own: a node that died mid-save, or recovery checkpoints timed per
    rank, leave rank 1's newest at another step than rank 0's. Resuming at different steps, the
    ranks would never meet in the same all-reduce; so every rank resumes from rank 0's."""
    rank0, rank1 = _store(tmp_path), _store(tmp_path, rank=1)
    assert rank1.dir == rank0.dir / "rank1"  # is_save_on_master False: rank 1 keeps its own
    rank0.save(_Cell(2), 1, 2)
    rank1.save(_Cell(2), 1, 2)
    rank0.save(_Cell(4), 2, 4)  # rank 1 died before writing its step 4
    assert _store(tmp_path, rank=1).restore(_Cell(0)) == 4
    rank1.save(_Cell(6), 2, 6, recovery=True)  # rank 1's own recovery checkpoint, later still
    resumed = _store(tmp_path, rank=1)
    assert resumed.restore(_Cell(0)) == 4 and resumed.restored_from == rank0.dir / "irv2-e2-s4.ckpt"


def test_the_mirror_holds_what_the_run_holds(tmp_path):
    remote = open_store(str(tmp_path / "bucket"))
    errors: list[str] = []
    store = _store(tmp_path, Mirror(remote, "runs/r1", errors.append))
    for step in (1, 2, 3):
        store.save(_Cell(step), step, step)
    store.close()
    keys = {o.key for o in remote.list("runs/r1/")}
    assert keys == {
        "runs/r1/checkpoints/irv2-e2-s2.ckpt",
        "runs/r1/checkpoints/irv2-e2-s2.ckpt.sha256",
        "runs/r1/checkpoints/irv2-e3-s3.ckpt",
        "runs/r1/checkpoints/irv2-e3-s3.ckpt.sha256",
    }
    assert errors == []
    # a second worker pulls the newest complete one, verified
    fresh = _store(tmp_path / "m2")
    pulled = fresh.pull(remote, "runs/r1")
    assert pulled.name == "irv2-e3-s3.ckpt" and fresh.restore(_Cell(0)) == 3


class _Gated:
    """A real store whose uploads wait until released: the mirror falls behind rotation."""

    def __init__(self, store) -> None:
        self.store, self.gate = store, threading.Event()

    def put_file(self, path, key, sha256=None):
        self.gate.wait(30)
        return self.store.put_file(path, key, sha256)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_checkpoint_rotated_out_before_its_upload_still_reaches_the_store(tmp_path):
    remote = _Gated(open_store(str(tmp_path / "bucket")))
    errors: list[str] = []
    store = _store(tmp_path, Mirror(remote, "r", errors.append), keep_checkpoint_max=1)
    for step in (1, 2, 3):
        store.save(_Cell(step), step, step)  # each save deletes the one before, locally
    remote.gate.set()
    store.close()
    assert errors == []
    keys = {o.key for o in remote.list("r/")}
    assert keys == {"r/checkpoints/irv2-e3-s3.ckpt", "r/checkpoints/irv2-e3-s3.ckpt.sha256"}
    left = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert left == ["irv2-e3-s3.ckpt", "irv2-e3-s3.ckpt.sha256", "latest.json"]  # no held links


def test_a_checkpoint_without_its_sidecar_in_the_store_is_not_pulled(tmp_path):
    remote = open_store(str(tmp_path / "bucket"))
    store = _store(tmp_path, Mirror(remote, "r", lambda _: None))
    store.save(_Cell(1), 1, 1)
    store.save(_Cell(2), 2, 2)
    store.close()
    remote.delete("r/checkpoints/irv2-e2-s2.ckpt.sha256")  # its upload was cut off
    fresh = _store(tmp_path / "m2")
    assert fresh.pull(remote, "r").name == "irv2-e1-s1.ckpt"


def test_ranks_on_separate_nodes_all_resume_from_the_stores_newest_checkpoint(tmp_path):
    """Node A (rank 0) saved steps 1-3, but its upload of step 3 was cut off by the crash; node B
    (rank 1) is a fresh machine. Both resume at step 2: rank 0 not from its newer local step 3,
    which would put the ranks a step apart in every all-reduce."""
    remote = open_store(str(tmp_path / "bucket"))
    node_a = _store(tmp_path / "a", Mirror(remote, "r", lambda _: None), size=2)
    for step in (1, 2, 3):
        node_a.save(_Cell(step), step, step)
    node_a.close()
    remote.delete("r/checkpoints/irv2-e3-s3.ckpt.sha256")  # never committed in the store
    rank1_mirror = Mirror(remote, "r", lambda _: None)
    _store(tmp_path / "b", rank1_mirror, rank=1).save(_Cell(9), 9, 9)
    rank1_mirror.close()
    assert not [o for o in remote.list("r/") if "rank1" in o.key]  # rank 1's own stay local

    rank0 = _store(tmp_path / "a", size=2)
    assert rank0.pull(remote, "r") is None  # its own copy of step 2 verifies: nothing fetched
    assert rank0.restore(_Cell(0)) == 2 and rank0.restored_from.name == "irv2-e2-s2.ckpt"
    rank1 = _store(tmp_path / "b", rank=1)
    assert rank1.pull(remote, "r").name == "irv2-e2-s2.ckpt"  # fetched onto the fresh node
    assert rank1.restore(_Cell(0)) == 2
    # a local copy that differs from the store's is replaced by the store's
    (tmp_path / "b" / "run" / "checkpoints" / "irv2-e2-s2.ckpt").write_bytes(b"other bytes")
    assert _store(tmp_path / "b", rank=1).pull(remote, "r").name == "irv2-e2-s2.ckpt"
    # nothing complete in the store: every rank starts over, whatever its folder holds
    empty = open_store(str(tmp_path / "empty"))
    rank0 = _store(tmp_path / "a", size=2)
    assert rank0.pull(empty, "r") is None and rank0.restore(_Cell(0)) == 0


@pytest.mark.parametrize("minutes,steps", [(None, None)])
def test_no_recovery_checkpoints_unless_asked(tmp_path, minutes, steps):
    store = _store(tmp_path, recovery_every_minutes=minutes, recovery_every_steps=steps)
    assert not any(store.recovery_due(s) for s in range(1, 100))


def _flip_middle_byte(path) -> None:
    """Corrupt *path* as a bad disk or a torn copy can: one bit, the size unchanged."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_resume_skips_a_same_size_bit_flip_and_says_so(tmp_path):
    """A flipped bit that MindSpore would load without complaint is caught by the recorded
    sha256: resume takes the previous good checkpoint and names the one it skipped."""
    store = _store(tmp_path)
    store.save(_Cell(1), 1, 1)
    bad = store.save(_Cell(2), 2, 2)
    size = bad.stat().st_size
    _flip_middle_byte(bad)
    assert bad.stat().st_size == size
    resumed = _store(tmp_path)
    assert resumed.restore(_Cell(0)) == 1
    assert resumed.restored_from.name == "irv2-e1-s1.ckpt"
    assert [(p.name, "sha256" in r) for p, r in resumed.skipped] == [("irv2-e2-s2.ckpt", True)]


def test_resume_refuses_when_every_checkpoint_is_corrupt(tmp_path):
    """No checkpoint verifies: resume stops naming each one and why, rather than loading one."""
    store = _store(tmp_path)
    _flip_middle_byte(store.save(_Cell(1), 1, 1))
    with pytest.raises(Irv2Error, match=r"no checkpoint .* verifies.*irv2-e1-s1\.ckpt: sha256"):
        _store(tmp_path).restore(_Cell(0))
