"""What a training run tells the outside world: log lines, ``metrics.jsonl``, ``progress.json``.

Only the writer (rank 0) writes; other ranks get a disabled log. Lines go to stdout with flush so
a parent process (the Prefect task) can stream them; ``progress.json`` is replaced atomically.
Each rank, rank 0 included, also appends its own ``first_batches/rank{r}.jsonl``: what it trained
on first in every epoch, so a sharding mistake (two ranks reading the same data) can be seen.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from irv2_core.records import EvalMetrics
from irv2_core.runtime.io import atomic_write_json, atomic_write_text

__all__ = ["FIRST_BATCHES", "RunLog", "record_first_batch"]

PREFIX = "[irv2 train]"
FIRST_BATCHES = "first_batches"  # in the run folder: rank{r}.jsonl per rank


class RunLog:
    """Writer of one run folder's log line, metrics rows and progress snapshot."""

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.metrics = self.run_dir / "metrics.jsonl"
        self.progress = self.run_dir / "progress.json"

    def line(self, message: str) -> None:
        """Print one flushed log line (rank 0 only)."""
        if self.enabled:
            print(f"{PREFIX} {message}", flush=True)

    def preempted(self, step: int, saved_s: float) -> None:
        """Record that training stopped on SIGTERM after *step*, saved in *saved_s* seconds."""
        if self.enabled:
            self._append({"kind": "preempt", "step": step, "saved_s": round(saved_s, 3),
                          "time": time.time()})  # fmt: skip

    def row(self, row: dict[str, Any]) -> None:
        """Append one row of another kind (``util`` samples) to ``metrics.jsonl``."""
        if self.enabled:
            self._append(row)

    def _append(self, row: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.metrics.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")

    def train_step(
        self,
        step: int,
        total: int,
        epoch: int,
        loss: float,
        lr: float,
        step_time: float,
        img_per_s: float,
        every: int = 1,
        force: bool = False,
    ) -> None:
        """Record step *step* if it is a multiple of *every* (or *force*): line, row, progress."""
        if not self.enabled or not (force or step % every == 0):
            return
        self.line(
            f"step {step}/{total} epoch {epoch} loss {loss:.4f} lr {lr:.4g} img/s {img_per_s:.2f}"
        )
        self._append(
            {
                "kind": "train",
                "step": step,
                "epoch": epoch,
                "loss": loss,
                "lr": lr,
                "step_time": round(step_time, 4),
                "img_per_s": round(img_per_s, 3),
            }
        )
        snapshot = {
            "step": step,
            "total_steps": total,
            "epoch": epoch,
            "loss": loss,
            "lr": lr,
            "img_per_s": round(img_per_s, 3),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(self.progress, snapshot)

    def eval(self, step: int, epoch: int, result: EvalMetrics) -> None:
        """Record an evaluation result (top1, top5, loss, count) after *step*."""
        if not self.enabled:
            return
        self.line(
            f"eval after step {step} epoch {epoch}: top1 {result.top1:.4f} "
            f"top5 {result.top5:.4f} loss {result.loss:.4f} on {result.count} images"
        )
        self._append({"kind": "eval", "step": step, "epoch": epoch, **result.model_dump()})

    def trim_after(self, step: int) -> None:
        """Drop rows logged after *step* by an interrupted attempt, so a resumed run's log has no
        duplicate steps."""
        if not self.enabled or not self.metrics.is_file():
            return
        kept = []
        for raw in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if row.get("step", 0) <= step:
                kept.append(json.dumps(row, sort_keys=True))
        atomic_write_text(self.metrics, "".join(k + "\n" for k in kept))


def record_first_batch(
    run_dir: str | Path, rank: int, rank_size: int, epoch: int, step: int, images, labels
) -> None:
    """Append rank *rank*'s first batch of *epoch* (trained at global *step*) to
    ``first_batches/rank{rank}.jsonl``: its labels and the sha256 of its image bytes. Ranks
    that read their own shards show different hashes; equal hashes mean equal data."""
    pixels = images.asnumpy() if hasattr(images, "asnumpy") else images
    classes = labels.asnumpy() if hasattr(labels, "asnumpy") else labels
    row = {
        "epoch": epoch,
        "step": step,
        "rank": rank,
        "rank_size": rank_size,
        "labels": [int(v) for v in classes],
        "images_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
    }
    path = Path(run_dir) / FIRST_BATCHES / f"rank{rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
