"""The training stage's figure: loss, validation AUROC, temperature and throughput over steps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from chexdino.figures import new_figure, save_figure


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
