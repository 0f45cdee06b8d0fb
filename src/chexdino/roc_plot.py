"""The evaluate stage's ROC grid: one panel per label, with its AUROC and CI."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from chexdino.figures import new_figure, save_figure


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
