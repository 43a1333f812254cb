"""PNG figures for training, evaluation, calibration and serving latency.

Matplotlib with the Agg backend (no display needed: servers and CI). Every function
writes one PNG, creates the parent directory, closes its figure and returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless rendering

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from rnnrec_jax.metrics import ReliabilityBins

__all__ = [
    "plot_latency_histogram",
    "plot_recall_at_k",
    "plot_reliability",
    "plot_training_curve",
]


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _series(history: Sequence[Mapping[str, Any]], *names: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the first of ``names`` present in each record."""
    epochs, values = [], []
    for i, record in enumerate(history):
        for name in names:
            if record.get(name) is not None:
                epochs.append(float(record.get("epoch", i + 1)))
                values.append(float(record[name]))
                break
    return epochs, values


def plot_training_curve(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Training loss and validation MRR@20 / Recall@20 per epoch.

    Args:
        history: one dict per epoch with ``"epoch"`` (optional), ``"loss"`` and any of
            ``"valid_mrr@20"``/``"mrr@20"`` and ``"valid_recall@20"``/``"recall@20"``.
        path: PNG path.

    Returns:
        The written path.
    """
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    epochs, loss = _series(history, "loss", "train_loss")
    ax_loss.plot(epochs, loss, marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
    for label, names in (
        ("Recall@20", ("valid_recall@20", "recall@20")),
        ("MRR@20", ("valid_mrr@20", "mrr@20")),
    ):
        x, y = _series(history, *names)
        if x:
            ax_metric.plot(x, y, marker="o", label=label)
    ax_metric.set(xlabel="epoch", ylabel="validation", title="Validation ranking")
    if ax_metric.lines:
        ax_metric.legend()
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_recall_at_k(
    results: Mapping[int, float], path: str | os.PathLike[str], label: str = "Recall@K"
) -> Path:
    """A metric against the cutoff K.

    Args:
        results: ``{K: value}``.
        path: PNG path.
        label: y-axis label.

    Returns:
        The written path.
    """
    ks = sorted(results)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ks, [results[k] for k in ks], marker="o")
    ax.set(xlabel="K", ylabel=label, title=f"{label} by cutoff", ylim=(0, None))
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reliability(bins: ReliabilityBins, path: str | os.PathLike[str]) -> Path:
    """Reliability diagram: observed positive rate against mean predicted probability.

    Args:
        bins: from :func:`rnnrec_jax.metrics.reliability_bins`.
        path: PNG path.

    Returns:
        The written path.
    """
    filled = np.asarray(bins.count) > 0
    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(bins.mean_prob[filled], bins.frac_pos[filled], marker="o", label="model")
    ax.set(ylabel="observed positive rate", title="Reliability", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    widths = np.asarray(bins.upper) - np.asarray(bins.lower)
    ax_count.bar(bins.lower, bins.count, width=widths, align="edge", edgecolor="black")
    ax_count.set(xlabel="predicted probability", ylabel="count")
    ax_count.set_yscale("log")
    return _save(fig, path)


def plot_latency_histogram(
    latencies_ms: Sequence[float] | np.ndarray, path: str | os.PathLike[str]
) -> Path:
    """Histogram of latencies with the median, p95 and p99 marked.

    Args:
        latencies_ms: latencies in milliseconds.
        path: PNG path.

    Returns:
        The written path.
    """
    values = np.asarray(latencies_ms, np.float64)
    fig, ax = plt.subplots(figsize=(6, 4))
    if values.size:
        ax.hist(values, bins=min(60, max(10, values.size // 20)), color="tab:blue", alpha=0.8)
        for q, style in ((50, "-"), (95, "--"), (99, ":")):
            v = float(np.percentile(values, q))
            ax.axvline(v, color="black", linestyle=style, label=f"p{q} = {v:.1f} ms")
        ax.legend()
    ax.set(xlabel="latency (ms)", ylabel="events", title=f"Latency (n = {values.size})")
    ax.grid(alpha=0.3)
    return _save(fig, path)
