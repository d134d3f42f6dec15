"""Top-1 / top-5 / loss of a checkpoint over a split, counting every image.

The last partial batch is zero-padded to the fixed batch size and its padding masked out of the
metrics, so one compiled graph serves the whole split and no image is dropped (the zoo's
``drop_remainder=True`` evaluated 49,920 of 50,000). The loss is plain (unsmoothed) softmax
cross-entropy, as the zoo's eval reports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np

from irv2_core.config import Config, resolve_config
from irv2_core.data.datasets import create_dataset, dataset_size, read_classes
from irv2_core.errors import Irv2Error
from irv2_core.models.ckpt_io import read_checkpoint
from irv2_core.models.factory import create_model
from irv2_core.models.weights import load_into
from irv2_core.records import EvalMetrics, EvalRecord
from irv2_core.runtime.context import setup_context
from irv2_core.runtime.io import atomic_write_json

__all__ = ["evaluate", "evaluate_network", "topk_metrics"]


def topk_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Batch sums ``{correct1, correct5, loss_sum, count}``; top-5 is clipped to K classes."""
    logits = logits.astype(np.float64)
    order = np.argsort(-logits, axis=1)
    hit = order == labels[:, None]
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {
        "correct1": float(hit[:, :1].any(axis=1).sum()),
        "correct5": float(hit[:, :5].any(axis=1).sum()),
        "loss_sum": float(-logp[np.arange(len(labels)), labels].sum()),
        "count": float(len(labels)),
    }


def evaluate_network(net, batches, batch_size: int) -> EvalMetrics:
    """Run *net* in eval mode over ``(images, labels)`` numpy *batches*; return
    top1, top5, loss and count. Short batches are zero-padded to *batch_size* and masked."""
    was_training = net.training
    net.set_train(False)
    totals = {"correct1": 0.0, "correct5": 0.0, "loss_sum": 0.0, "count": 0.0}
    try:
        for images, labels in batches:
            n = len(labels)
            if n < batch_size:
                pad = np.zeros((batch_size - n, *images.shape[1:]), dtype=images.dtype)
                images = np.concatenate([images, pad])
            logits = net(ms.Tensor(images)).asnumpy()[:n]
            for key, value in topk_metrics(logits, labels.astype(np.int64)).items():
                totals[key] += value
    finally:
        net.set_train(was_training)
    count = int(totals["count"])
    if count == 0:
        raise Irv2Error("the evaluation split holds no images")
    return EvalMetrics(
        top1=totals["correct1"] / count,
        top5=totals["correct5"] / count,
        loss=totals["loss_sum"] / count,
        count=count,
    )


def eval_batches(data_dir: str | Path, split: str, cfg: Config) -> tuple[Any, int]:
    """(numpy batch iterator, fixed batch size) for *split*: ``min(eval_batch_size, images)``."""
    batch_size = max(1, min(cfg.eval_batch_size, dataset_size(data_dir, split)))
    data = create_dataset(data_dir, split, cfg, training=False, batch_size=batch_size)
    return data.create_tuple_iterator(num_epochs=1, output_numpy=True), batch_size


def evaluate(
    ckpt: str | Path,
    data_dir: str | Path,
    cfg: Config | None = None,
    split: str = "val",
    out: str | Path | None = None,
    image_size: int | None = None,
) -> EvalRecord:
    """Evaluate checkpoint *ckpt* on *split* of *data_dir*; return and (if *out*) write the
    :class:`~irv2_core.records.EvalRecord` (top1, top5, loss, count, protocol, checkpoint,
    image_size).

    *cfg* None reads ``config.yaml`` beside the checkpoint (a run folder), else cpu-smoke
    defaults with *image_size*. The class count comes from the data's ``classes.json``.
    """

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise Irv2Error(f"checkpoint not found: {ckpt}")
    if cfg is None:
        saved = ckpt.parent / "config.yaml"
        size = {"image_size": image_size} if image_size and not saved.is_file() else None
        cfg = resolve_config(run_config=saved, fallback_preset="cpu-smoke", overrides=size)
    num_classes = len(read_classes(data_dir, split))
    images = dataset_size(data_dir, split)
    setup_context(cfg, cache_scope=f"evaluate|{num_classes}|{images}|{cfg.residual_bias}")
    net = create_model(
        cfg.model,
        num_classes=num_classes,
        residual_bias=cfg.residual_bias,
        drop_rate=0.0,
        input_protocol=cfg.eval_protocol,  # the pipeline ships uint8; the network normalises
    )
    params = read_checkpoint(ckpt)  # the whole file: a resumable checkpoint works too
    fits = f"a {num_classes}-class {cfg.model} (residual_bias={cfg.residual_bias})"
    missing = load_into(net, params, ckpt, f"evaluate needs {fits} for this data")
    if missing:
        raise Irv2Error(
            f"checkpoint {ckpt} does not fit a {num_classes}-class {cfg.model} "
            f"(residual_bias={cfg.residual_bias}): {len(missing)} parameters missing, "
            f"e.g. {missing[:3]}"
        )
    batches, batch_size = eval_batches(data_dir, split, cfg)
    metrics = evaluate_network(net, batches, batch_size)
    result = EvalRecord(
        **metrics.model_dump(),
        protocol=cfg.eval_protocol,
        checkpoint=str(ckpt),
        image_size=cfg.image_size,
    )
    if out is not None:
        atomic_write_json(out, result.file_content())
    return result
