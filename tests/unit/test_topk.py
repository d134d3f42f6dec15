"""Top-1 / top-5 through the evaluation's real code path on 12 classes, where top-5 can miss.

The integration tests evaluate 3 classes, on which top-5 is 1.0 whatever the network does; here
the logits are known, so each image's true class sits at a chosen rank of the ranking and the
expected top-1 < top-5 < 1 follow by construction.
"""

from __future__ import annotations

import numpy as np
import pytest
from mindspore import nn

import irv2_core  # noqa: F401  (CPU speed settings before any MindSpore op)
from irv2_core.evaluation import predict_split, topk_metrics

pytestmark = pytest.mark.usefixtures("pynative_mode")

K = 12
# rank of the true class among the logits, per image: 0 is a top-1 hit, 0-4 a top-5 hit
RANKS = [0, 0, 0, 1, 2, 3, 4, 5, 7, 11]


def known_logits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) with image i's true class at rank ``RANKS[i]``, distinct logits."""
    rng = np.random.default_rng(seed)
    logits = np.empty((len(RANKS), K), np.float32)
    labels = np.empty(len(RANKS), np.int64)
    for i, rank in enumerate(RANKS):
        order = rng.permutation(K)  # order[r] is the class ranked r-th
        logits[i, order] = np.linspace(3.0, -2.5, K)
        labels[i] = order[rank]
    return logits, labels


class PassThrough(nn.Cell):
    """A "network" whose outputs are its inputs: the batch is the logits."""

    def construct(self, x):
        return x * 1.0


def test_topk_metrics_on_twelve_classes():
    logits, labels = known_logits()
    got = topk_metrics(logits, labels)
    assert (got["correct1"], got["correct5"], got["count"]) == (3.0, 7.0, 10.0)


def test_predict_split_counts_top5_misses_across_padded_batches():
    logits, labels = known_logits(seed=1)
    batches = [(logits[i : i + 4], labels[i : i + 4]) for i in range(0, len(labels), 4)]
    result = predict_split(PassThrough(), batches, batch_size=4)  # 4 + 4 + 2 padded to 4
    m = result.metrics
    assert m.count == 10
    assert (m.top1, m.top5) == (pytest.approx(0.3), pytest.approx(0.7))
    assert m.top1 < m.top5 < 1.0
    assert result.preds.tolist() == logits.argmax(axis=1).tolist()
    confusion = result.confusion(K)
    assert confusion.sum() == 10 and np.trace(confusion) == 3
