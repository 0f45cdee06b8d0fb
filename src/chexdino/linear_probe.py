"""The linear probe: one logistic regression per label on frozen image embeddings.

Trained on MIMIC-CXR's train split at several label fractions taken by patient (a patient's
films are all in or all out), several seeds for the fractions below 1, the regulariser ``C``
chosen per label by validation AUROC; scored on the test sets with
:func:`chexdino.metrics.auroc_table` (same bootstrap resamples as the zero-shot scorecard).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from chexdino import COMPETITION_LABELS, metrics
from chexdino.config import LinearProbeConfig
from chexdino.embeddings import read_embeddings

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("eval_set", "fraction", "seed", "C", "n_train_images", "n_train_patients",
                  *metrics.TABLE_COLUMNS)


def patient_fraction(subject_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Row mask of the films of a random ``fraction`` of the patients (at least one)."""
    patients = np.unique(subject_ids)
    if fraction >= 1.0:
        return np.ones(len(subject_ids), dtype=bool)
    n = max(1, round(fraction * len(patients)))
    chosen = np.random.default_rng(seed).choice(patients, size=n, replace=False)
    return np.isin(subject_ids, chosen)


def runs(cfg: LinearProbeConfig) -> list[tuple[float, int]]:
    """(fraction, seed) pairs: every seed below a fraction of 1, the first seed at 1."""
    return [(f, s) for f in cfg.fractions for s in (cfg.seeds if f < 1.0 else cfg.seeds[:1])]


def fit_label(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    """A standardised logistic regression for one label (rows with a target only)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter)).fit(x, y)


def choose_c(x_tr, y_tr, x_va, y_va, grid: Sequence[float], max_iter: int) -> float:
    """The ``C`` of the grid with the highest validation AUROC (the first when tied or when
    the validation rows have one class)."""
    if len(np.unique(y_va)) < 2 or len(grid) == 1:
        return float(grid[0])
    scores = [roc_auc_score(y_va, fit_label(x_tr, y_tr, c, max_iter).predict_proba(x_va)[:, 1])
              for c in grid]
    return float(grid[int(np.argmax(scores))])


def probe_run(train: Mapping[str, np.ndarray], validate: Mapping[str, np.ndarray],
              tests: Mapping[str, Mapping[str, np.ndarray]], labels: Sequence[str],
              cfg: LinearProbeConfig, uncertain: str, fraction: float, seed: int,
              bootstrap_seed: int) -> pd.DataFrame:
    """One (fraction, seed): fit every label, score every test set; rows of RESULT_COLUMNS."""
    names = list(train["label_names"])
    cols = [names.index(lab) for lab in labels]
    keep = patient_fraction(train["subject_id"], fraction, seed)
    y_tr_all = metrics.eval_targets(train["labels"][keep][:, cols], uncertain)
    y_va_all = metrics.eval_targets(validate["labels"][:, cols], uncertain)
    x_tr, x_va = train["embeddings"][keep], validate["embeddings"]
    models, chosen = {}, {}
    for j, lab in enumerate(labels):
        ok, ok_va = ~np.isnan(y_tr_all[:, j]), ~np.isnan(y_va_all[:, j])
        if len(np.unique(y_tr_all[ok, j])) < 2:
            continue
        c = choose_c(x_tr[ok], y_tr_all[ok, j], x_va[ok_va], y_va_all[ok_va, j], cfg.c_grid,
                     cfg.max_iter)
        models[lab], chosen[lab] = fit_label(x_tr[ok], y_tr_all[ok, j], c, cfg.max_iter), c
    tables = []
    for name, test in tests.items():
        targets = metrics.eval_targets(test["labels"][:, [list(test["label_names"]).index(lab)
                                                           for lab in labels]], uncertain)
        probs = np.full(targets.shape, 0.5)
        for j, lab in enumerate(labels):
            if lab in models:
                probs[:, j] = models[lab].predict_proba(test["embeddings"])[:, 1]
        table = metrics.auroc_table(probs, targets, labels, cfg.bootstrap, bootstrap_seed)
        untrained = ~table["label"].isin(list(models))
        table.loc[untrained, ["auroc", "ci_low", "ci_high"]] = np.nan
        table.loc[untrained, "note"] = "not trained: one class in this fraction's training rows"
        table.loc[untrained, "flag"] = ""
        table.insert(0, "C", [chosen.get(lab, np.nan) for lab in labels])
        table.insert(0, "n_train_patients", len(np.unique(train["subject_id"][keep])))
        table.insert(0, "n_train_images", int(keep.sum()))
        table.insert(0, "seed", seed)
        table.insert(0, "fraction", fraction)
        table.insert(0, "eval_set", name)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def run_linear_probe(train_npz: Path, validate_npz: Path, test_npz: Mapping[str, Path],
                     cfg: LinearProbeConfig, labels: Sequence[str], uncertain: str,
                     bootstrap_seed: int, out_csv: Path, out_json: Path, figure: Path,
                     zero_shot: Mapping[str, Path] | None = None) -> pd.DataFrame:
    """Every (fraction, seed) run; writes the table, a summary and the figure."""
    train, validate = read_embeddings(train_npz), read_embeddings(validate_npz)
    tests = {name: read_embeddings(p) for name, p in test_npz.items()}
    tables = []
    for fraction, seed in runs(cfg):
        # One BLAS thread: these fits are small, and a busy node's threads contending for
        # cores made one 1,600 x 512 fit take 14 s instead of 0.2 s (2 cores, 2026-12-05).
        with threadpool_limits(1):
            tables.append(probe_run(train, validate, tests, labels, cfg, uncertain, fraction,
                                    seed, bootstrap_seed))
        log.info("fraction %g seed %d: %d training images", fraction, seed,
                 int(tables[-1]["n_train_images"].iloc[0]))
    table = pd.concat(tables, ignore_index=True).loc[:, list(RESULT_COLUMNS)]
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    comp = [c for c in COMPETITION_LABELS if c in labels]
    means = mean_auroc(table, comp)
    zs = {name: json.loads(Path(p).read_text())["headline"]["mean_auroc_competition"]
          for name, p in (zero_shot or {}).items()}
    doc = {"competition_labels": comp, "runs": [list(r) for r in runs(cfg)],
           "mean_auroc_competition": means.to_dict(orient="records"), "zero_shot": zs,
           "flags": {name: {kind: sorted(set(t.loc[t["flag"] == flag, "label"]))
                            for kind, flag in (("below_chance", metrics.BELOW_CHANCE),
                                               ("auroc_below_half", metrics.UNDER_HALF))}
                     for name, t in table.groupby("eval_set")}}
    Path(out_json).write_text(json.dumps(doc, indent=2, default=float) + "\n")
    plot_probe(means, zs, figure)
    return table


def mean_auroc(table: pd.DataFrame, competition: Sequence[str]) -> pd.DataFrame:
    """Mean AUROC over the competition labels per (eval set, fraction, seed), then over seeds:
    columns eval_set, fraction, mean, low, high (min and max over seeds), n_seeds."""
    per_run = (table[table["label"].isin(competition)]
               .groupby(["eval_set", "fraction", "seed"])["auroc"].mean().reset_index())
    out = per_run.groupby(["eval_set", "fraction"])["auroc"].agg(
        mean="mean", low="min", high="max", n_seeds="count").reset_index()
    return out


def plot_probe(means: pd.DataFrame, zero_shot: Mapping[str, Any], out_png: Path) -> Path:
    """Mean competition AUROC against the label fraction (log axis), seed range as bars,
    each eval set's zero-shot mean as a dashed horizontal line of the same colour."""
    from chexdino.figures import new_figure, save_figure

    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, rows) in enumerate(means.groupby("eval_set")):
        colour = f"C{i}"
        ax.errorbar(rows["fraction"], rows["mean"],
                    yerr=[rows["mean"] - rows["low"], rows["high"] - rows["mean"]],
                    marker="o", capsize=3, color=colour, label=f"linear probe, {name}")
        if zero_shot.get(name) is not None:
            ax.axhline(zero_shot[name], color=colour, linestyle="--",
                       label=f"zero-shot, {name}")
    ax.set_xscale("log")
    ax.set_xlabel("fraction of MIMIC-CXR training patients labelled")
    ax.set_ylabel("mean AUROC (competition labels)")
    ax.legend(fontsize=7)
    return save_figure(fig, Path(out_png))
