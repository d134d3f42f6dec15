"""Top-1 / top-5 / loss of a checkpoint over a split, counting every image.

The last partial batch is zero-padded to the fixed batch size and its padding masked out of the
metrics, so one compiled graph serves the whole split and no image is dropped (the zoo's
``drop_remainder=True`` evaluated 49,920 of 50,000). The loss is plain (unsmoothed) softmax
cross-entropy, as the zoo's eval reports it.

``evaluate`` also keeps each image's top-1 prediction, so its record holds the K x K confusion
matrix (class names from ``classes.json``) and a few misclassified images (their MindRecord
``file_name`` and a small thumbnail of the stored JPEG) for the report.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mindspore as ms
import mindspore.dataset as ds
import numpy as np

from irv2_core.config import Config, resolve_config
from irv2_core.data.datasets import create_dataset, dataset_size, mindrecord_files, read_classes
from irv2_core.data.local_copy import conversion_fingerprint
from irv2_core.errors import Irv2Error
from irv2_core.models.ckpt_io import read_checkpoint
from irv2_core.models.factory import create_model
from irv2_core.models.protocol import resolve_protocol
from irv2_core.models.weights import load_into
from irv2_core.records import EvalMetrics, EvalRecord, Misclassified, PerImage
from irv2_core.runtime.arrays import pack_bools, pack_ints
from irv2_core.runtime.context import setup_context
from irv2_core.runtime.io import atomic_write_json

__all__ = [
    "MAX_MISCLASSIFIED",
    "Predictions",
    "evaluate",
    "evaluate_network",
    "misclassified_samples",
    "predict_split",
    "topk_metrics",
]

MAX_MISCLASSIFIED = 8  # kept in eval.json for the report's strip
THUMBNAIL_PX = 96  # their longer side


def _ranking(logits: np.ndarray) -> np.ndarray:
    """Class indices by falling logit; ties keep the lower index first (as argmax)."""
    return np.argsort(-logits.astype(np.float64), axis=1, kind="stable")


def _top1(logits: np.ndarray) -> np.ndarray:
    return _ranking(logits)[:, 0]


def topk_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Batch sums ``{correct1, correct5, loss_sum, count}``; top-5 is clipped to K classes."""
    logits = logits.astype(np.float64)
    order = _ranking(logits)
    hit = order == labels[:, None]
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {
        "correct1": float(hit[:, :1].any(axis=1).sum()),
        "correct5": float(hit[:, :5].any(axis=1).sum()),
        "loss_sum": float(-logp[np.arange(len(labels)), labels].sum()),
        "count": float(len(labels)),
    }


@dataclass
class Predictions:
    """Per-image outcome of a pass over a split, in the split's (file) order."""

    metrics: EvalMetrics
    labels: np.ndarray  # true class index per image
    preds: np.ndarray  # top-1 class index per image
    confidence: np.ndarray  # softmax probability of the top-1 class per image
    hit5: np.ndarray  # the true class is among the top 5 (all K when K < 5), per image

    def confusion(self, num_classes: int) -> np.ndarray:
        """K x K counts: row = true class, column = predicted class."""
        flat = self.labels.astype(np.int64) * num_classes + self.preds.astype(np.int64)
        return np.bincount(flat, minlength=num_classes * num_classes).reshape(
            num_classes, num_classes
        )

    def misclassified(self, limit: int) -> list[int]:
        """Indices of up to *limit* wrong images, the most confident first (ties: file order)."""
        wrong = np.flatnonzero(self.preds != self.labels)
        order = np.argsort(-self.confidence[wrong], kind="stable")
        return [int(i) for i in wrong[order][:limit]]


def predict_split(net, batches, batch_size: int) -> Predictions:
    """Run *net* in eval mode over ``(images, labels)`` numpy *batches*: metrics plus each
    image's label, top-1 prediction and its probability. Short batches are zero-padded to
    *batch_size* and masked."""
    was_training = net.training
    net.set_train(False)
    totals = {"correct1": 0.0, "correct5": 0.0, "loss_sum": 0.0, "count": 0.0}
    labels_all: list[np.ndarray] = []
    preds_all: list[np.ndarray] = []
    conf_all: list[np.ndarray] = []
    hit5_all: list[np.ndarray] = []
    try:
        for images, labels in batches:
            n = len(labels)
            if n < batch_size:
                pad = np.zeros((batch_size - n, *images.shape[1:]), dtype=images.dtype)
                images = np.concatenate([images, pad])
            logits = net(ms.Tensor(images)).asnumpy()[:n]
            labels = labels.astype(np.int64)
            for key, value in topk_metrics(logits, labels).items():
                totals[key] += value
            pred = _top1(logits)  # the same ranking topk_metrics counts as correct1
            shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
            probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
            labels_all.append(labels)
            preds_all.append(pred)
            conf_all.append(probs[np.arange(n), pred])
            hit5_all.append((_ranking(logits)[:, :5] == labels[:, None]).any(axis=1))
    finally:
        net.set_train(was_training)
    count = int(totals["count"])
    if count == 0:
        raise Irv2Error("the evaluation split holds no images")
    metrics = EvalMetrics(
        top1=totals["correct1"] / count,
        top5=totals["correct5"] / count,
        loss=totals["loss_sum"] / count,
        count=count,
    )
    return Predictions(
        metrics,
        np.concatenate(labels_all),
        np.concatenate(preds_all),
        np.concatenate(conf_all),
        np.concatenate(hit5_all),
    )


def per_image(predictions: Predictions, split_key: str | None) -> PerImage:
    """Each image's outcome as the record keeps it (compact: packed bits, int32 labels)."""
    return PerImage(
        split_key=split_key,
        count=len(predictions.labels),
        labels=pack_ints(predictions.labels),
        top1=pack_bools(predictions.preds == predictions.labels),
        top5=pack_bools(predictions.hit5),
    )


def split_key(data_dir: str | Path, split: str) -> str | None:
    """The identity of *split*'s images and their order: its MindRecord conversion's fingerprint
    with the split's name (None for a folder without ``conversion.json``)."""
    fingerprint = conversion_fingerprint(data_dir)
    return f"{fingerprint}:{split}" if fingerprint else None


def evaluate_network(net, batches, batch_size: int) -> EvalMetrics:
    """Run *net* in eval mode over ``(images, labels)`` numpy *batches*; return
    top1, top5, loss and count. Short batches are zero-padded to *batch_size* and masked."""
    return predict_split(net, batches, batch_size).metrics


def _text(value: Any) -> str:
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _thumbnail(data: bytes, size: int = THUMBNAIL_PX) -> str | None:
    """*data* (encoded image bytes) as a small JPEG ``data:`` URI; None if it does not decode."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def misclassified_samples(
    data_dir: str | Path, split: str, predictions: Predictions, limit: int = MAX_MISCLASSIFIED
) -> list[Misclassified]:
    """Up to *limit* misclassified images with their MindRecord ``file_name`` and a thumbnail
    made from the stored JPEG bytes. Only those rows are read (a subset sampler over the same
    file order the evaluation used); a row whose stored label is not the evaluated one (so the
    order did not line up) keeps no name or picture rather than a wrong one. An image-folder
    split has no ``file_name`` field: its samples carry the index and labels only."""
    indices = predictions.misclassified(limit)
    samples = [
        Misclassified(
            index=i,
            label=int(predictions.labels[i]),
            pred=int(predictions.preds[i]),
            confidence=round(float(predictions.confidence[i]), 6),
        )
        for i in indices
    ]
    files = mindrecord_files(data_dir, split)
    if not samples or not files:
        return samples
    try:
        rows = ds.MindDataset(
            str(files[0]),
            columns_list=["file_name", "label", "image"],
            sampler=ds.SubsetSampler(indices),
        )
        found = list(rows.create_dict_iterator(num_epochs=1, output_numpy=True))
    except RuntimeError:  # a MindRecord of another writer, without `file_name`: labels only
        return samples
    for sample, row in zip(samples, found, strict=False):
        if int(row["label"]) != sample.label:
            continue
        sample.file_name = _text(row["file_name"])
        sample.thumbnail = _thumbnail(bytes(row["image"]))
    return samples


def eval_batches(data_dir: str | Path, split: str, cfg: Config) -> tuple[Any, int]:
    """(numpy batch iterator, fixed batch size) for *split*: ``min(eval_batch_size, images)``."""
    batch_size = max(1, min(cfg.eval_batch_size, dataset_size(data_dir, split)))
    data = create_dataset(data_dir, split, cfg, training=False, batch_size=batch_size)
    return data.create_tuple_iterator(num_epochs=1, output_numpy=True), batch_size


def with_weights_protocol(cfg: Config, ckpt: str | Path) -> Config:
    """*cfg* with the ``eval_protocol`` *ckpt*'s weights expect (recorded in the checkpoint): it
    replaces a default one, and one set explicitly (preset, file, ``--set``) must equal it. A
    checkpoint without a record leaves *cfg* as it is."""
    asked = cfg.eval_protocol if "eval_protocol" in cfg.model_fields_set else None
    protocol = resolve_protocol(ckpt, asked, cfg.eval_protocol, "eval_protocol")
    if protocol == cfg.eval_protocol:
        return cfg
    return cfg.model_copy(update={"eval_protocol": protocol})


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
    image_size, classes, confusion, misclassified).

    *cfg* None reads ``config.yaml`` beside the checkpoint (a run folder), else cpu-smoke
    defaults with *image_size*; the protocol is the one the checkpoint records, if any
    (:func:`with_weights_protocol`). The class count comes from the data's ``classes.json``.
    """

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise Irv2Error(f"checkpoint not found: {ckpt}")
    if cfg is None:
        saved = ckpt.parent / "config.yaml"
        size = {"image_size": image_size} if image_size and not saved.is_file() else None
        cfg = resolve_config(run_config=saved, fallback_preset="cpu-smoke", overrides=size)
    cfg = with_weights_protocol(cfg, ckpt)
    classes = read_classes(data_dir, split)
    num_classes = len(classes)
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
    predictions = predict_split(net, batches, batch_size)
    names = sorted(classes, key=classes.__getitem__)
    result = EvalRecord(
        **predictions.metrics.model_dump(),
        protocol=cfg.eval_protocol,
        checkpoint=str(ckpt),
        image_size=cfg.image_size,
        classes=names,
        confusion=predictions.confusion(num_classes).tolist(),
        misclassified=misclassified_samples(data_dir, split, predictions),
        per_image=per_image(predictions, split_key(data_dir, split)),
    )
    if out is not None:
        atomic_write_json(out, result.file_content())
    return result
