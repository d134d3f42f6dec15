"""The report's PNG plots (matplotlib, headless): accuracy per evaluation, confusion matrix,
misclassified thumbnails, loss and learning rate, utilisation beside img/s."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irv2_core.report.compare import ZOO_REFERENCE
from irv2_core.report.tables import MAX_CLASS_ROWS, _as_percent, _name

PLOT_DPI = 72  # small PNGs: the UI artifact carries them inline


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: the flow runs on workers without a display
    import matplotlib.pyplot as plt

    return plt


def plot_loss_lr(train: pd.DataFrame, out_dir: Path) -> Path | None:
    if not len(train) or not {"loss", "lr"} <= set(train.columns):
        return None
    plt = _pyplot()
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax_loss.plot(train["step"], train["loss"], marker=".")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss and learning rate per step")
    ax_lr.plot(train["step"], train["lr"], color="tab:orange", marker=".")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("global step")
    return _save(fig, out_dir / "loss_lr.png")


def plot_utilisation(util: pd.DataFrame, train: pd.DataFrame, out_dir: Path) -> Path | None:
    """Device utilisation (%) and training throughput (img/s) against the global step."""
    if not len(util) or not {"util_pct", "step"} <= set(util.columns):
        return None
    plt = _pyplot()
    fig, ax_util = plt.subplots(figsize=(7, 4))
    device = str(util["device"].iloc[-1]) if "device" in util.columns else "device"
    ax_util.plot(util["step"], util["util_pct"], marker=".", color="tab:red", label=device)
    ax_util.set_ylabel(f"{device} utilisation (%)")
    ax_util.set_ylim(0, 105)
    ax_util.set_xlabel("global step")
    if len(train) and "img_per_s" in train.columns:
        ax_speed = ax_util.twinx()
        ax_speed.plot(train["step"], train["img_per_s"], marker=".", color="tab:blue")
        ax_speed.set_ylabel("img/s", color="tab:blue")
    ax_util.set_title("device utilisation and throughput during training")
    return _save(fig, out_dir / "utilisation.png")


def plot_accuracy(evals: pd.DataFrame, with_reference: bool, out_dir: Path) -> Path | None:
    """top-1/top-5 per evaluation against the epoch, each point labelled with its value."""
    if not len(evals) or not {"top1", "top5"} <= set(evals.columns):
        return None
    plt = _pyplot()
    by_epoch = "epoch" in evals.columns and evals["epoch"].notna().all()
    x = evals["epoch"] if by_epoch else evals["step"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, color in (("top1", "tab:blue"), ("top5", "tab:green")):
        values = [_as_percent(v) for v in evals[name]]
        ax.plot(x, values, marker="o", markersize=7, linewidth=2, color=color, label=name)
        for xi, v in zip(x, values, strict=True):
            if v is not None:
                ax.annotate(
                    f"{v:.1f}",
                    (xi, v),
                    textcoords="offset points",
                    xytext=(0, 8),
                    ha="center",
                    fontsize=9,
                    color=color,
                )
        if with_reference:
            ref = ZOO_REFERENCE[name]
            ax.axhline(ref, color=color, linestyle="--", linewidth=1, label=f"zoo {name} {ref}")
    lo, hi = float(min(x)), float(max(x))
    if hi - lo < 2:  # one or two evaluations: room around the points for their labels
        ax.set_xlim(lo - 0.5, hi + 0.5)
    if by_epoch:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, 108)
    ax.set_xlabel("epoch" if by_epoch else "global step")
    ax.set_ylabel("accuracy on val (%)")
    ax.set_title("top-1 / top-5 per evaluation")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out_dir / "accuracy.png")


def plot_confusion(confusion: Any, names: list[str], out_dir: Path) -> Path:
    """Rows (true classes) normalised to recall for the colour; counts written when K is small."""
    plt = _pyplot()
    matrix = np.asarray(confusion, dtype=np.int64)
    k = len(matrix)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    side = 3.0 + 0.45 * k if k <= MAX_CLASS_ROWS else 6.0  # many classes: a smaller picture
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    if k <= MAX_CLASS_ROWS:
        short = [n if len(n) <= 14 else n[:13] + "…" for n in names]
        ax.set_xticks(range(k), short, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), short, fontsize=8)
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    color = "white" if share[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8, color=color
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix ({int(matrix.sum())} images)")
    return _save(fig, out_dir / "confusion.png")


def plot_misclassified(ev: Any, names: list[str], out_dir: Path) -> Path | None:
    """The misclassified thumbnails side by side, each titled true → predicted."""
    from PIL import Image

    shown = []
    for item in getattr(ev, "misclassified", None) or []:
        if not item.thumbnail or "," not in item.thumbnail:
            continue
        try:
            data = base64.b64decode(item.thumbnail.split(",", 1)[1], validate=True)
            with Image.open(io.BytesIO(data)) as img:
                shown.append((item, np.asarray(img.convert("RGB"))))
        except (OSError, ValueError):
            continue
    if not shown:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(1.7 * len(shown) + 0.3, 2.5), squeeze=False)
    for ax, (item, pixels) in zip(axes[0], shown, strict=True):
        ax.imshow(pixels)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"true {_name(names, item.label)[:12]}\npred {_name(names, item.pred)[:12]} "
            f"({100 * item.confidence:.0f}%)",
            fontsize=7,
        )
        if item.file_name:
            ax.set_xlabel(Path(item.file_name).name[:18], fontsize=6)
    return _save(fig, out_dir / "misclassified.png")


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=PLOT_DPI)
    plt.close(fig)
    os.replace(tmp, path)
    return path
