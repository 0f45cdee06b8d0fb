"""Our scorecards beside other models': published AUROCs (CheXzero) and models scored here.

The published values live in one data file with their source
(``workflow/resources/published_auroc.csv``: model, eval_set, label, auroc, source). For each
label the comparison gives our AUROC and 95% CI, the published value, the difference (ours
minus published) and whether the published value lies inside our interval, plus the same
for the mean over the five competition labels (its CI is the bootstrap CI of the mean).
Models scored by this workflow with the same protocol (``compare_models``) are put side by
side in one table, a column per model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexdino import COMPETITION_LABELS
from chexdino.errors import ChexdinoError

PUBLISHED_COLUMNS: tuple[str, ...] = ("model", "eval_set", "label", "auroc", "source")
COMPARISON_COLUMNS: tuple[str, ...] = ("label", "chexdino", "ci_low", "ci_high", "published",
                                       "difference", "published_inside_ci", "published_model",
                                       "source")
MEAN_ROW = "Mean (5 competition labels)"


def read_published(path: Path, eval_set: str) -> pd.DataFrame:
    """The published rows for one evaluation set; a malformed file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise ChexdinoError(f"published AUROCs: file not found: {path}")
    table = pd.read_csv(path)
    missing = [c for c in PUBLISHED_COLUMNS if c not in table.columns]
    if missing:
        raise ChexdinoError(f"{path} lacks columns {missing} (needs {list(PUBLISHED_COLUMNS)})")
    rows = table[table["eval_set"] == eval_set]
    if rows.empty:
        raise ChexdinoError(f"{path} has no rows for eval_set {eval_set!r}")
    if rows["label"].duplicated().any() or rows["model"].nunique() != 1:
        raise ChexdinoError(f"{path}: give one model and each label once for {eval_set!r}")
    bad = rows[~rows["auroc"].between(0.0, 1.0)]
    if len(bad):
        raise ChexdinoError(f"{path}: AUROC outside [0, 1] for {list(bad['label'])}")
    return rows.reset_index(drop=True)


def compare(auroc: pd.DataFrame, headline: Mapping[str, Any],
            published: pd.DataFrame) -> pd.DataFrame:
    """One row per published label (ours, CI, published, difference, inside CI) and the mean.

    The mean row is added when the published file has all five competition labels; its
    published value is the mean of theirs.
    """
    ours = auroc.set_index("label")
    model = str(published["model"].iloc[0])
    source = "; ".join(published["source"].astype(str).unique())
    records = []
    for row in published.itertuples(index=False):
        if row.label in ours.index:
            value, lo, hi = (float(ours.loc[row.label, c]) for c in ("auroc", "ci_low", "ci_high"))
        else:
            value = lo = hi = np.nan
        records.append(_record(row.label, value, lo, hi, float(row.auroc), model, source))
    pub = published.set_index("label")["auroc"]
    if all(c in pub.index for c in COMPETITION_LABELS):
        mean = headline.get("mean_auroc_competition")
        lo, hi = headline.get("mean_auroc_competition_ci") or [None, None]
        records.append(_record(MEAN_ROW, _float(mean), _float(lo), _float(hi),
                               float(pub[list(COMPETITION_LABELS)].mean()), model, source))
    return pd.DataFrame.from_records(records, columns=list(COMPARISON_COLUMNS))


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _record(label: str, ours: float, lo: float, hi: float, published: float,
            model: str, source: str) -> dict[str, Any]:
    inside = "yes" if lo <= published <= hi else "no"
    if np.isnan(lo) or np.isnan(hi):
        inside = "n/a"
    return {"label": label, "chexdino": ours, "ci_low": lo, "ci_high": hi,
            "published": round(published, 4), "difference": ours - published,
            "published_inside_ci": inside, "published_model": model, "source": source}


def write_comparison(auroc_csv: Path, summary_json: Path, published_csv: Path, eval_set: str,
                     out_csv: Path) -> pd.DataFrame:
    """Read our scorecard and the published file, write the comparison table."""
    auroc = pd.read_csv(auroc_csv, keep_default_na=False, na_values=[""])
    doc = json.loads(Path(summary_json).read_text())
    table = compare(auroc, doc.get("headline", doc), read_published(published_csv, eval_set))
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False, float_format="%.4f")
    return table


# --------------------------------------------------------------------------------------
# several models scored with the same protocol, one column each
# --------------------------------------------------------------------------------------


def _cell(auroc: float, lo: float, hi: float) -> str:
    if np.isnan(auroc):
        return "n/a"
    ci = "" if np.isnan(lo) or np.isnan(hi) else f" [{lo:.3f}, {hi:.3f}]"
    return f"{auroc:.3f}{ci}"


def side_by_side(cards: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]]) -> pd.DataFrame:
    """One row per label (and the five-label mean), one column per model: AUROC [95% CI].

    All models are scored on the same images with the same bootstrap seed, so their
    intervals come from the same resamples.
    """
    labels: list[str] = []
    for table, _ in cards.values():
        labels += [x for x in table["label"] if x not in labels]
    out = pd.DataFrame({"label": [*labels, MEAN_ROW]})
    for name, (table, headline) in cards.items():
        by_label = table.set_index("label")
        cells = [_cell(*(float(by_label.loc[x, c]) for c in ("auroc", "ci_low", "ci_high")))
                 if x in by_label.index else "n/a" for x in labels]
        lo, hi = headline.get("mean_auroc_competition_ci") or [None, None]
        cells.append(_cell(_float(headline.get("mean_auroc_competition")), _float(lo),
                           _float(hi)))
        out[name] = cells
    return out


def write_side_by_side(scorecards: Mapping[str, Path], out_csv: Path) -> pd.DataFrame:
    """Read each model's evaluation folder (auroc.csv + summary.json); write the table."""
    cards = {}
    for name, folder in scorecards.items():
        folder = Path(folder)
        doc = json.loads((folder / "summary.json").read_text())
        cards[name] = (pd.read_csv(folder / "auroc.csv", keep_default_na=False, na_values=[""]),
                       doc.get("headline", doc))
    table = side_by_side(cards)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    return table
