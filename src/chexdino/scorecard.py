"""The zero-shot scorecard: its files (probabilities, AUROC table, summary, ROC) and its text."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chexdino.metrics import CHANCE_ADVICE, TABLE_COLUMNS, check_inputs


def _jsonable(obj: object) -> object:
    """NaN/inf -> None and numpy scalars -> Python, so ``json`` writes strict JSON."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_scorecard(
    out_dir: Path,
    ids: pd.DataFrame,
    probs: np.ndarray,
    targets: np.ndarray,
    label_names: Sequence[str],
    table: pd.DataFrame,
    summary: dict,
) -> dict[str, Path]:
    """Write ``probabilities.csv``, ``auroc.csv``, ``summary.json`` and ``roc.png``.

    Probabilities are kept per image (with its ids) so any number can be recomputed or
    compared across models later without re-running the GPU step.
    """
    from chexdino.roc_plot import plot_roc_curves

    probs, targets, names = check_inputs(probs, targets, label_names)
    if len(ids) != probs.shape[0]:
        raise ValueError(f"ids has {len(ids)} rows but probs has {probs.shape[0]}")
    prob_cols = [f"prob_{n}" for n in names]
    clash = sorted(set(prob_cols) & {str(c) for c in ids.columns})
    if clash:
        raise ValueError(f"ids columns {clash} clash with probability columns")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "probabilities": out_dir / "probabilities.csv",
        "auroc": out_dir / "auroc.csv",
        "summary": out_dir / "summary.json",
        "roc": out_dir / "roc.png",
    }
    frame = pd.concat([ids.reset_index(drop=True), pd.DataFrame(probs, columns=prob_cols)], axis=1)
    frame.to_csv(paths["probabilities"], index=False)
    table.loc[:, list(TABLE_COLUMNS)].to_csv(paths["auroc"], index=False)
    per_label = {
        str(r["label"]): {c: r[c] for c in TABLE_COLUMNS if c != "label"}
        for r in table.to_dict(orient="records")
    }
    doc = {"headline": summary, "per_label": per_label, "n_images": int(probs.shape[0])}
    paths["summary"].write_text(json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n")
    plot_roc_curves(probs, targets, names, paths["roc"], table=table)
    return paths


def _fmt(x: object, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(float(x), spec)  # type: ignore[arg-type]


def format_table(table: pd.DataFrame, summary: dict) -> str:
    """Plain-text AUROC table plus the headline line, for the CLI and logs."""
    level = summary.get("ci") or 0.95
    ci_head = f"{round(level * 100):d}% CI"
    width = max([len("label"), *(len(str(x)) for x in table["label"])])
    lines = [f"{'label':<{width}}  {'AUROC':>6}  {ci_head:<16}  {'n_pos':>6}  {'n_neg':>6}  note"]
    for r in table.itertuples(index=False):
        ci_txt = (
            f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
            if not (pd.isna(r.ci_low) or pd.isna(r.ci_high))
            else "n/a"
        )
        note = "" if pd.isna(r.note) else str(r.note)
        flag = "" if pd.isna(getattr(r, "flag", "")) else str(getattr(r, "flag", ""))
        if flag:
            note = "; ".join(x for x in (f"FLAG {flag}", note) if x)
        lines.append(
            f"{r.label!s:<{width}}  {_fmt(r.auroc):>6}  {ci_txt:<16}  "
            f"{int(r.n_pos):>6}  {int(r.n_neg):>6}  {note}".rstrip()
        )
    comp = summary.get("competition_labels", [])
    lo, hi = summary.get("mean_auroc_competition_ci", [None, None])
    mean_comp = _fmt(summary.get("mean_auroc_competition"))
    head = f"mean AUROC ({len(comp)} competition labels): {mean_comp}"
    if lo is not None and hi is not None:
        head += f" [{_fmt(lo)}, {_fmt(hi)}]"
    if summary.get("competition_undefined"):
        head += f" (undefined: {', '.join(summary['competition_undefined'])})"
    flagged = [f"{lab} ({kind})" for kind, key in (("CI below 0.5", "below_chance"),
                                                     ("AUROC < 0.5", "auroc_below_half"))
               for lab in (summary.get("flags") or {}).get(key, [])]
    lines += [
        "",
        head,
        (
            f"mean AUROC (all {summary.get('n_labels_defined', 0)} defined labels): "
            f"{_fmt(summary.get('mean_auroc_all'))}"
        ),
    ]
    if flagged:
        lines.append(f"flagged, {CHANCE_ADVICE}: {', '.join(flagged)}")
    return "\n".join(lines)
