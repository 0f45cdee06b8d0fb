"""Dataset accounting: every input record is kept or rejected with a reason; counts add up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from chexdino import COMPETITION_LABELS, h5store
from chexdino.tables import REJECT_COLUMNS
from chexdino.tokens import read_tokens


class AccountingError(RuntimeError):
    """Input count differs from kept + rejected: a record went missing somewhere."""


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def collect_rejects(select_rejects: Path, image_rejects: Path, report_rejects: Path,
                    cxr_h5: Path, tokens_h5: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """One reject table over all stages, and the has-text mask of the image store's rows.

    Report rejects are per study; they are expanded to the image rows of that study that
    reached the image store (images rejected earlier are already counted once).
    """
    parts = []
    for path, stage in ((select_rejects, "select"), (image_rejects, "images")):
        table = _read(path)
        table["stage"] = stage
        parts.append(table.reindex(columns=list(REJECT_COLUMNS), fill_value=""))
    meta = h5store.read_meta(cxr_h5)
    _, has_text = read_tokens(tokens_h5)
    reasons = _read(report_rejects).drop_duplicates("study_id").set_index("study_id")["reason"]
    no_text = meta.loc[~has_text, ["dicom_id", "study_id", "subject_id", "split"]].copy()
    no_text["stage"] = "reports"
    no_text["reason"] = no_text["study_id"].map(reasons).fillna("no impression for study")
    parts.append(no_text.reindex(columns=list(REJECT_COLUMNS)))
    return pd.concat(parts, ignore_index=True), has_text


def summarize_dataset(manifest_csv: Path, select_rejects: Path, cxr_h5: Path,
                      image_rejects: Path, impressions_csv: Path, report_rejects: Path,
                      tokens_h5: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Counts per stage, split, reason and impression source; checks input = kept + rejected."""
    rejects, has_text = collect_rejects(select_rejects, image_rejects, report_rejects, cxr_h5,
                                        tokens_h5)
    n_manifest = len(_read(manifest_csv))
    n_input = n_manifest + int((rejects["stage"] == "select").sum())
    meta = h5store.read_meta(cxr_h5)
    kept = meta.loc[has_text]
    if len(kept) + len(rejects) != n_input:
        raise AccountingError(f"{n_input} input records but {len(kept)} kept + "
                              f"{len(rejects)} rejected")
    impressions = _read(impressions_csv)  # every study of the split table: count kept ones
    impressions = impressions[impressions["study_id"].isin(kept["study_id"])]
    summary = {
        "input_records": n_input,
        "kept": len(kept),
        "rejected": len(rejects),
        "kept_by_split": kept["split"].value_counts().sort_index().to_dict(),
        "kept_by_view": kept["view"].value_counts().sort_index().to_dict(),
        "rejected_by_stage": rejects["stage"].value_counts().sort_index().to_dict(),
        "rejected_by_reason": rejects["reason"].value_counts().to_dict(),
        "impression_source": impressions["impression_source"].value_counts().to_dict(),
        "positives_by_label": {lab: int((kept[lab] == 1).sum()) for lab in COMPETITION_LABELS},
    }
    return summary, rejects


def plot_dataset(summary: dict[str, Any], out_png: Path, sample_images: bool,
                 cxr_h5: Path | None = None) -> Path:
    """Bars for kept-by-split, rejects-by-reason and impression sources; optional sample grid."""
    panels = [("kept images by split", summary["kept_by_split"]),
              ("rejected records by reason", summary["rejected_by_reason"]),
              ("impression source", summary["impression_source"]),
              ("positives (competition labels)", summary["positives_by_label"])]
    n_cols = len(panels) + (1 if sample_images and cxr_h5 else 0)
    fig, axes = plt.subplots(1, n_cols, figsize=(4.6 * n_cols, 4.2), dpi=100)
    for ax, (title, counts) in zip(axes, panels, strict=False):
        names = [str(k)[:40] for k in counts]
        bars = ax.barh(names, list(counts.values()), color="#4c72b0")
        ax.bar_label(bars, fontsize=8, padding=2)  # single rejects are invisible as bars
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.invert_yaxis()
    if sample_images and cxr_h5:
        grid = h5store.load_cxr_array(cxr_h5, np.arange(min(16, summary["kept"] or 1)))
        tiles = [grid[i] if i < len(grid) else np.zeros_like(grid[0]) for i in range(16)]
        mosaic = np.vstack([np.hstack(tiles[r * 4:(r + 1) * 4]) for r in range(4)])
        axes[-1].imshow(mosaic, cmap="gray", vmin=0, vmax=255)
        axes[-1].set_title("sample stored images", fontsize=10)
        axes[-1].axis("off")
    fig.suptitle(f"{summary['input_records']} input records: {summary['kept']} kept, "
                 f"{summary['rejected']} rejected")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def write_summary(summary: dict[str, Any], rejects: pd.DataFrame, out_json: Path,
                  rejects_csv: Path) -> None:
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(summary, indent=2))
    rejects.to_csv(rejects_csv, index=False)
