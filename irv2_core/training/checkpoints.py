"""Resumable training checkpoints of a run folder: rotation, ``latest.json`` and restore.

A checkpoint holds the whole train cell: network weights and BN statistics, the optimizer's
moments, its ``global_step`` (which indexes the per-step LR) and the loss-scale state. Files are
written under a temporary name, made writable (MindSpore writes 0400), renamed, and only then
``latest.json`` is replaced, so a crash never leaves a half checkpoint that looks complete. Each
checkpoint's sha256 is recorded beside it (``<name>.sha256``); resume takes the newest checkpoint
that verifies and loads, and reports the ones it skipped (a file truncated by a full disk or a
node that died mid-write no longer stops every retry).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from irv2_core.config import Config
from irv2_core.errors import Irv2Error
from irv2_core.models.ckpt_io import (
    read_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint_atomic,
)
from irv2_core.models.protocol import protocol_metadata
from irv2_core.models.weights import load_into
from irv2_core.runtime.io import atomic_write_json, atomic_write_text, read_json, sha256_file
from irv2_core.runtime.stack import stack_differences
from irv2_core.storage.mirror import (
    HELD_SUFFIX,
    Mirror,
    complete_checkpoints,
    fetch_checkpoint,
    pull_newest,
)
from irv2_core.storage.store import ObjectStore
from irv2_core.training.distributed import DistInfo

__all__ = ["LATEST", "CheckpointStore"]

LATEST = "checkpoints/latest.json"
RECOVERY = "recovery"  # folder of the recovery checkpoints, beside the epoch ones
_NAME = re.compile(r"^irv2-e(\d+)-s(\d+)\.ckpt$")


class CheckpointStore:
    """The checkpoints of one rank: rank 0 in ``checkpoints/``; other ranks in
    ``checkpoints/rank{r}/`` unless ``is_save_on_master`` (then they write nothing).

    Every rank resumes from rank 0's folder, the job's one checkpoint: ranks save on their own,
    so after a node died mid-save (or recovery checkpoints timed per rank) their own newest
    checkpoints can be at different steps, and ranks resuming at different steps never meet in
    the same all-reduce. The trainable weights and the optimizer's moments are equal on every
    rank (averaged gradients); only BN's running statistics are rank 0's.

    Epoch checkpoints keep the newest ``keep_checkpoint_max``; recovery checkpoints (by steps or
    minutes, for preemptible nodes) live in ``recovery/`` beside them and keep only the newest.
    With a *mirror*, every checkpoint rank 0 writes is also uploaded in the background (the
    other ranks' own are never resumed from, so they stay local). A single process with no local
    checkpoint pulls the newest complete one from the store before it resumes. The ranks of a
    distributed job all resume from the store's newest complete checkpoint, fetched where their
    copy is missing or differs: nodes need not share a folder, and rank 0's newer local one
    whose upload a crash cut short cannot put its node a few steps ahead of the others.
    """

    def __init__(
        self,
        run_dir: str | Path,
        cfg: Config,
        world: DistInfo,
        mirror: Mirror | None = None,
        stack: dict[str, str | None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.stack = stack  # recorded in every checkpoint; a resume checks it (accept_stack)
        self.accept_stack = False
        self.keep = cfg.keep_checkpoint_max
        self.world = world
        self.cfg = cfg
        base = self.run_dir / "checkpoints"
        self.writes = world.is_master or not cfg.is_save_on_master
        self.dir = base if world.is_master or cfg.is_save_on_master else base / f"rank{world.rank}"
        self.resume_dir = base  # rank 0's, for every rank (see the class docstring)
        self.mirror = mirror if world.is_master else None
        self.newest_step: int | None = None  # set by a distributed pull: resume at most here
        self.restored_from: Path | None = None
        self.skipped: list[tuple[Path, str]] = []
        self._last_recovery = (0, time.monotonic())
        if self.writes:  # files a crash left mid-save or mid-upload
            for folder in (self.dir, self.dir / RECOVERY):
                for stale in [*folder.glob(".*.tmp.ckpt"), *folder.glob(f".*{HELD_SUFFIX}")]:
                    stale.unlink(missing_ok=True)

    def latest_path(self) -> Path | None:
        """The checkpoint the job's ``latest.json`` points to, or None when there is none yet."""
        latest = self.resume_dir / "latest.json"
        if not latest.is_file():
            return None
        path = Path(read_json(latest)["path"])
        return path if path.is_absolute() else self.run_dir / path

    def checkpoints(self, folder: Path | None = None) -> list[tuple[int, Path]]:
        """``(global step, path)`` of the checkpoints every rank resumes from (epoch and
        recovery), or of those in *folder*; newest first."""
        folders = [folder] if folder else [self.resume_dir, self.resume_dir / RECOVERY]
        found = [
            (int(m.group(2)), p)
            for f in folders
            for p in f.glob("irv2-*.ckpt")
            if (m := _NAME.match(p.name))
        ]
        if folder is None and self.newest_step is not None:
            found = [(step, p) for step, p in found if step <= self.newest_step]
        return sorted(found, reverse=True)

    def save(self, cell, epoch: int, step: int, recovery: bool = False) -> Path | None:
        """Write ``irv2-e{epoch}-s{step}.ckpt`` and its sha256 (under ``recovery/`` for a
        recovery checkpoint), point latest.json at it, rotate, and mirror it."""
        if not self.writes:
            return None
        folder = self.dir / RECOVERY if recovery else self.dir
        target = save_checkpoint_atomic(
            cell, folder / f"irv2-e{epoch}-s{step}.ckpt", metadata=self._stack_metadata()
        )
        atomic_write_text(_digest_path(target), sha256_file(target) + "\n")
        rel = target.relative_to(self.run_dir).as_posix()
        atomic_write_json(self.dir / "latest.json", {"path": rel, "epoch": epoch, "step": step})
        if self.mirror is not None:
            self.mirror.upload(target, rel)
        for _, old in self.checkpoints(folder)[1 if recovery else self.keep :]:
            old.unlink(missing_ok=True)
            _digest_path(old).unlink(missing_ok=True)
            if self.mirror is not None:
                self.mirror.delete(old.relative_to(self.run_dir).as_posix())
        if recovery:
            self._last_recovery = (step, time.monotonic())
        return target

    def recovery_due(self, step: int) -> bool:
        """Whether a recovery checkpoint is due after *step* (``recovery_every_steps`` or
        ``recovery_every_minutes`` since the last one)."""
        last_step, last_time = self._last_recovery
        by_steps = self.cfg.recovery_every_steps
        by_minutes = self.cfg.recovery_every_minutes
        return bool(
            (by_steps and step - last_step >= by_steps)
            or (by_minutes and time.monotonic() - last_time >= by_minutes * 60)
        )

    def pull(self, store: ObjectStore, prefix: str) -> Path | None:
        """Bring the checkpoint to resume from out of *store* (under the run's *prefix*) into the
        folder every rank resumes from; return its path when it was downloaded (None: the local
        copy was used, or the store has none). A single process pulls only when it has no local
        checkpoint; every rank of a distributed job takes the store's newest complete one."""
        rel = self.resume_dir.relative_to(self.run_dir).as_posix()
        folders = [rel, f"{rel}/{RECOVERY}"]
        if self.world.size <= 1:
            return None if self.checkpoints() else pull_newest(store, prefix, folders, self.run_dir)
        self.newest_step = 0  # nothing complete in the store: every rank starts from step 0
        for step, key, name in complete_checkpoints(store, prefix, folders):
            how = fetch_checkpoint(store, key, self.run_dir / name)
            if how is not None:
                self.newest_step = step
                return self.run_dir / name if how == "fetched" else None
        return None

    def flush(self) -> None:
        """Wait until every checkpoint saved so far is in the store (its sidecar too)."""
        if self.mirror is not None:
            self.mirror.flush()

    def close(self) -> None:
        """Wait for the mirror to finish uploading what was saved."""
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = None  # closed once, however many ways the run ends

    def restore(self, cell) -> int:
        """Load the newest checkpoint that verifies into *cell* (weights + optimizer); return its
        global step, or 0 when the run folder has no checkpoint yet. ``restored_from`` and
        ``skipped`` (``[(path, reason)]``) say what happened."""
        self.restored_from: Path | None = None
        self.skipped: list[tuple[Path, str]] = []
        self.stack_changes: list[str] = []
        candidates = self.checkpoints()
        if not candidates and self.newest_step is None and self.latest_path() is not None:
            raise Irv2Error(
                f"{self.resume_dir / 'latest.json'} points to {self.latest_path()}, which is "
                "missing; restore it or start a new run folder without --resume"
            )
        for _, path in candidates:
            reason = _unverified(path)
            if reason is None:
                try:
                    params = read_checkpoint(path)
                except Irv2Error as exc:
                    reason = str(exc)
            if reason is not None:
                self.skipped.append((path, reason))
                continue
            self._check_stack(path)
            self._load(cell, params, path)
            self.restored_from = path
            return int(params["global_step"].asnumpy().reshape(-1)[0])
        if candidates:
            listed = "; ".join(f"{p.name}: {r}" for p, r in self.skipped)
            raise Irv2Error(
                f"no checkpoint in {self.resume_dir} verifies ({listed}); delete them to start "
                "the run again from step 0, or restore a good copy"
            )
        return 0

    def _stack_metadata(self) -> dict[str, str]:
        return {"stack": json.dumps(self.stack, sort_keys=True)} if self.stack else {}

    def _check_stack(self, path: Path) -> None:
        """Refuse to resume from *path* when it was written on another software stack, unless
        the run accepts that (``accept_stack``: then the change is only logged by the caller)."""
        saved = read_checkpoint_metadata(path).get("stack")
        if not saved or not self.stack:
            return  # written before checkpoints recorded it
        self.stack_changes = stack_differences(json.loads(saved), self.stack)
        if self.stack_changes and not self.accept_stack:
            raise Irv2Error(
                f"{path.name} was written on another software stack ("
                + "; ".join(self.stack_changes)
                + "): resume on the stack it was trained on, or accept the change "
                "(flow parameter accept_stack_change, irv2 train --accept-stack-change)"
            )

    def _load(self, cell, params: dict, path: Path) -> None:
        fix = "resume with the run's own config.yaml or start a new run folder"
        missing = load_into(cell, params, path, fix)
        if missing or "global_step" not in params:
            raise Irv2Error(
                f"checkpoint {path} does not match this run's network/optimizer "
                f"({len(missing)} parameters missing, e.g. {missing[:3]}); resume with the "
                "run's own config.yaml or start a new run folder"
            )

    def save_final(self, net) -> Path | None:
        """Write the network-only ``final.ckpt`` (rank 0), recording the run's input protocol in
        it (a copy outside the run folder keeps it); return its path."""
        if not self.world.is_master:
            return None
        meta = {**protocol_metadata(self.cfg.eval_protocol), **self._stack_metadata()}
        return save_checkpoint_atomic(net, self.run_dir / "final.ckpt", metadata=meta)


def _digest_path(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.name + ".sha256")


def _unverified(path: Path) -> str | None:
    """Why *path* fails its recorded sha256, or None (also when none was recorded: runs
    written before digests existed still resume)."""
    digest = _digest_path(path)
    if not digest.is_file():
        return None
    want = digest.read_text(encoding="utf-8").strip()
    if sha256_file(path) != want:
        return f"sha256 does not match the one recorded when it was written ({want[:12]}...)"
    return None
