"""Figures for the Snakemake report: plain functions that write PNGs.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas directly (no pyplot),
so plotting works headless on cluster nodes, leaves no global figure state behind and never
depends on the user's configured backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

DPI = 110
"""Resolution of report PNGs: sharp in the HTML report, small on disk."""


def new_figure(width: float, height: float) -> Figure:
    """A figure attached to the Agg canvas (headless, independent of pyplot)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_png: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG, creating the parent directory."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi, format="png")
    return out_png


def _undefined_text(n_pos: int, n_neg: int) -> str:
    if n_pos == 0 and n_neg == 0:
        return "undefined:\nno rows with a target"
    if n_pos == 0:
        return f"undefined:\nonly negatives (n={n_neg})"
    return f"undefined:\nonly positives (n={n_pos})"


def roc_figure(
    probs: np.ndarray,
    targets: np.ndarray,
    label_names: Sequence[str],
    table: pd.DataFrame | None = None,
    ncols: int = 4,
) -> Figure:
    """One ROC panel per label in a grid (exactly ``len(label_names)`` axes).

    Rows whose target is NaN are excluded per label, as in the AUROC table. Titles show the
    AUROC, with the CI when ``table`` (from ``auroc_table``) is given. A label with one class
    gets an annotated empty panel rather than a misleading curve.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    names = list(label_names)
    if probs.ndim != 2 or probs.shape != targets.shape or probs.shape[1] != len(names):
        raise ValueError(
            f"probs {probs.shape} and targets {targets.shape} must be (N, L) with "
            f"L = {len(names)} label names"
        )
    if not names:
        raise ValueError("no labels to plot")
    rows_by_label = {}
    if table is not None:
        rows_by_label = {str(r["label"]): r for r in table.to_dict(orient="records")}

    ncols = max(1, min(ncols, len(names)))
    nrows = math.ceil(len(names) / ncols)
    fig = new_figure(2.9 * ncols, 3.0 * nrows)
    grid = fig.subplots(nrows, ncols, squeeze=False)
    for k in range(len(names), nrows * ncols):
        fig.delaxes(grid.flat[k])

    for j, name in enumerate(names):
        ax = grid.flat[j]
        keep = ~np.isnan(targets[:, j])
        y, s = targets[keep, j], probs[keep, j]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        if j + ncols >= len(names):  # nothing below this panel
            ax.set_xlabel("1 - specificity")
        if j % ncols == 0:
            ax.set_ylabel("sensitivity")
        if n_pos == 0 or n_neg == 0:
            ax.set_title(f"{name}\nAUROC n/a", fontsize=9)
            ax.text(
                0.5,
                0.5,
                _undefined_text(n_pos, n_neg),
                ha="center",
                va="center",
                fontsize=8,
                color="0.3",
                transform=ax.transAxes,
                bbox={"facecolor": "white", "edgecolor": "none"},
            )
            continue
        fpr, tpr, _ = roc_curve(y, s)
        rec = rows_by_label.get(name)
        if rec is not None and not pd.isna(rec["auroc"]):
            auc = float(rec["auroc"])
            ci = (
                f" [{rec['ci_low']:.3f}, {rec['ci_high']:.3f}]"
                if not (pd.isna(rec["ci_low"]) or pd.isna(rec["ci_high"]))
                else ""
            )
        else:
            auc, ci = float(roc_auc_score(y, s)), ""
        ax.plot(fpr, tpr, color="tab:blue", linewidth=1.4)
        ax.set_title(f"{name}\nAUROC {auc:.3f}{ci}", fontsize=9)
        ax.text(
            0.97,
            0.04,
            f"pos {n_pos}, neg {n_neg}",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.3",
            transform=ax.transAxes,
        )
    for ax in fig.axes:
        ax.tick_params(labelsize=7)
    return fig


def plot_roc_curves(
    probs: np.ndarray,
    targets: np.ndarray,
    label_names: Sequence[str],
    out_png: Path,
    table: pd.DataFrame | None = None,
) -> Path:
    """Write the per-label ROC grid (see :func:`roc_figure`) to ``out_png``."""
    fig = roc_figure(probs, targets, label_names, table=table)
    return save_figure(fig, out_png)


def plot_training_curves(metrics_csv: Path, validation_csv: Path, out_png: Path) -> Path:
    """Loss, validation metrics, temperature / learning rate and throughput over steps."""
    metrics = pd.read_csv(metrics_csv)
    val = pd.read_csv(validation_csv)
    fig = new_figure(13, 3.4)
    axes = fig.subplots(1, 4)
    axes[0].plot(metrics["step"], metrics["loss"], label="train")
    if len(val):
        axes[0].plot(val["step"], val["val_loss"], "o-", label="validation")
    axes[0].set(title="contrastive loss", xlabel="step")
    axes[0].legend(fontsize=8)
    axes[1].plot(val["step"], val["val_auroc"], "o-", color="tab:green")
    axes[1].set(title="val zero-shot mean AUROC (5 labels)", xlabel="step")
    axes[2].plot(metrics["step"], metrics["temperature"], color="tab:purple")
    axes[2].set(title="temperature (1 / logit scale)", xlabel="step")
    lr_axis = axes[2].twinx()
    lr_axis.plot(metrics["step"], metrics["lr"], color="tab:gray", alpha=0.6)
    lr_axis.set_ylabel("learning rate", color="tab:gray")
    axes[3].plot(metrics["step"], metrics["img_per_s"], color="tab:orange")
    axes[3].set(title="throughput (images / s)", xlabel="step")
    return save_figure(fig, out_png)
