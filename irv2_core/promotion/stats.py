"""The statistics of the promotion gate: a paired, per-image comparison of two models evaluated
on the same images.

- :func:`mcnemar_exact`: the exact (binomial) McNemar test on the discordant pairs — images one
  model gets right and the other wrong. Only they carry information about which is better.
- :func:`paired_bootstrap`: a percentile confidence interval for Δtop-1 (candidate − baseline)
  from resampling images, both models' outcomes on an image kept together.
- :func:`class_recalls`: top-1 recall per class, for the "no class broken" check.

Pure numpy and the standard library: the gate's numbers are reproducible from ``eval.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Paired", "class_recalls", "mcnemar_exact", "paired_bootstrap"]


@dataclass(frozen=True)
class Paired:
    """Two models' top-1 outcomes on the same images, in the same order."""

    candidate: np.ndarray  # bool per image: the candidate's top-1 is right
    baseline: np.ndarray  # bool per image: the baseline's top-1 is right
    labels: np.ndarray  # true class per image

    def __post_init__(self) -> None:
        n = len(self.labels)
        if len(self.candidate) != n or len(self.baseline) != n:
            raise ValueError("paired outcomes need the same images: lengths differ")

    @property
    def discordant(self) -> tuple[int, int]:
        """``(b, c)``: images only the candidate gets right, and only the baseline gets right."""
        b = int(np.sum(self.candidate & ~self.baseline))
        c = int(np.sum(~self.candidate & self.baseline))
        return b, c

    @property
    def delta_top1(self) -> float:
        """Candidate top-1 minus baseline top-1 (a fraction)."""
        b, c = self.discordant
        return (b - c) / len(self.labels)


def _log_binom_pmf(k: int, n: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for *b* and *c* discordant pairs: twice the smaller tail
    of Binomial(b + c, 1/2), at most 1. With no discordant pair there is no evidence: 1.0."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    logs = [_log_binom_pmf(i, n) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2.0 * tail)


def paired_bootstrap(
    paired: Paired, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of Δtop-1 over *resamples* resamplings of the images (with
    replacement, pairs kept together); a fixed *seed*, so the same inputs give the same
    interval. Works on the per-image difference only, in chunks (bounded memory for 50k images)."""
    diff = paired.candidate.astype(np.int8) - paired.baseline.astype(np.int8)
    n = len(diff)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def class_recalls(correct: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Top-1 recall per class (NaN for a class with no image), and support via ``np.bincount``."""
    support = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels, weights=correct.astype(np.float64), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, hits / np.maximum(support, 1), np.nan)
