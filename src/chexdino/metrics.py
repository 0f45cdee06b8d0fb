"""Zero-shot metrics: targets from labels, AUROC per label with bootstrap CIs, the headline.

Model-agnostic: every function takes probabilities and labels as arrays, so the same
numbers come from evaluation, validation during training and the benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from chexdino import COMPETITION_LABELS

UNCERTAIN_POLICIES: tuple[str, ...] = ("exclude", "positive", "negative")
"""How a -1 (uncertain) CheXpert label is scored: dropped for that label, or counted as 1 / 0."""

TABLE_COLUMNS: tuple[str, ...] = ("label", "auroc", "ci_low", "ci_high", "n_pos", "n_neg", "note",
                                   "flag")
"""Columns of :func:`auroc_table`, also the columns of ``auroc.csv``."""

BELOW_CHANCE = "below chance"
"""``flag`` of a label whose whole AUROC CI lies below 0.5: the scores rank the wrong way."""

UNDER_HALF = "AUROC < 0.5"
"""``flag`` of a label whose AUROC is below 0.5 but whose CI reaches 0.5 (a weaker sign)."""

CHANCE_ADVICE = "worse than chance: check the prompts or the label polarity"
"""What a flagged label's log line and report text say."""

_CHUNK_ELEMENTS = 1 << 22
"""Bootstrap resamples are processed in blocks of about this many (resample, row) cells."""


def eval_targets(raw: np.ndarray, uncertain: str) -> np.ndarray:
    """Map MIMIC-CXR/CheXpert labels (1, 0, -1, blank) to float targets; NaN = excluded.

    Blank means the labeller found no mention, i.e. negative (CheXzero dropped these rows).
    ``uncertain`` decides -1: ``"exclude"`` (NaN, the default), ``"positive"`` or
    ``"negative"``. Any other value in ``raw`` is an error, so a wrongly selected column
    cannot pass silently.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(
            f"uncertain-label policy {uncertain!r} is not one of {', '.join(UNCERTAIN_POLICIES)}"
        )
    arr = np.array(raw, dtype=np.float64, copy=True)
    bad = ~(np.isnan(arr) | np.isin(arr, (1.0, 0.0, -1.0)))
    if bad.any():
        values = sorted({float(v) for v in arr[bad]})[:5]
        raise ValueError(
            f"labels must be 1, 0, -1 or blank; found {values} "
            f"(uncertain-label policy {uncertain!r})"
        )
    arr[np.isnan(arr)] = 0.0
    arr[arr == -1.0] = {"exclude": np.nan, "positive": 1.0, "negative": 0.0}[uncertain]
    return arr


@dataclass(frozen=True, eq=False)
class BootstrapSamples:
    """Per-resample AUROCs (B, L), NaN where a resample had one class for that label.

    Attached to the :func:`auroc_table` result as ``table.attrs["bootstrap"]`` so that
    :func:`headline` can form the CI of a mean over labels per resample. Equality is defined
    (pandas compares ``attrs`` when concatenating frames).
    """

    auroc: np.ndarray
    labels: tuple[str, ...]
    seed: int
    ci: float

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BootstrapSamples)
            and self.labels == other.labels
            and self.seed == other.seed
            and self.ci == other.ci
            and np.array_equal(self.auroc, other.auroc, equal_nan=True)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_bootstrap(self) -> int:
        """Number of resamples drawn (including ones skipped for a label)."""
        return int(self.auroc.shape[0])


def _chunk_size(n_rows: int) -> int:
    """Resamples per block; a function of the row count only."""
    return max(1, _CHUNK_ELEMENTS // max(n_rows, 1))


def _index_chunks(n_rows: int, n_bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """Yield blocks of resample indices (b, n_rows) drawn from one seeded stream."""
    rng = np.random.default_rng(seed)
    step = _chunk_size(n_rows)
    for start in range(0, n_bootstrap, step):
        yield rng.integers(0, n_rows, size=(min(step, n_bootstrap - start), n_rows))


def bootstrap_indices(n_rows: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """Row indices of every bootstrap resample, shape (n_bootstrap, n_rows).

    They depend only on ``(seed, n_rows)`` (never on scores or labels), so two models scored
    on the same eval set see the same resamples and their CIs are comparable. This is exactly
    what :func:`auroc_table` uses.
    """
    if n_rows <= 0 or n_bootstrap <= 0:
        return np.zeros((max(n_bootstrap, 0), max(n_rows, 0)), dtype=np.int64)
    return np.concatenate(list(_index_chunks(n_rows, n_bootstrap, seed)), axis=0)


def _weighted_auroc(
    weights: np.ndarray,
    scores: np.ndarray,
    pos_cols: np.ndarray,
    neg_cols: np.ndarray,
    cum_dtype: type,
) -> np.ndarray:
    """Mann-Whitney AUROC per weighting row, in O(B * n) with one sort of the negatives.

    With negatives sorted by score and ``C`` the running sum of their weights, a positive of
    score ``x`` beats ``C[left(x)]`` negatives and ties ``C[right(x)] - C[left(x)]``, so
    ``2U = sum_pos w * (C[left] + C[right])``. Integer weights stay integer (exact).
    """
    order = np.argsort(scores[neg_cols], kind="stable")
    neg_cols = neg_cols[order]
    neg_sorted = scores[neg_cols]
    lo = np.searchsorted(neg_sorted, scores[pos_cols], side="left")
    hi = np.searchsorted(neg_sorted, scores[pos_cols], side="right")
    cum = np.zeros((weights.shape[0], neg_cols.size + 1), dtype=cum_dtype)
    np.cumsum(weights[:, neg_cols], axis=1, dtype=cum_dtype, out=cum[:, 1:])
    w_pos = weights[:, pos_cols]
    acc = np.int64 if np.issubdtype(cum_dtype, np.integer) else np.float64
    two_u = np.einsum("bi,bi->b", w_pos, cum[:, lo] + cum[:, hi], dtype=acc)
    denom = 2.0 * w_pos.sum(axis=1, dtype=acc) * cum[:, -1].astype(acc)
    out = np.full(weights.shape[0], np.nan)
    ok = denom > 0
    out[ok] = two_u[ok] / denom[ok]
    return out


def mann_whitney_auroc(
    scores: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """AUROC as the Mann-Whitney U statistic (ties count 1/2), for many weightings at once.

    ``weights`` (B, n) are row multiplicities, e.g. how often each row was drawn in a bootstrap
    resample; the result (B,) equals ``roc_auc_score`` on the data with rows repeated that
    often, without materialising or sorting each resample. ``None`` means one unit weighting.
    NaN where a weighting leaves only one class.
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    if weights is None:
        weights = np.ones((1, scores.shape[0]), dtype=np.int64)
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != scores.shape[0] or y.shape != scores.shape:
        raise ValueError("scores, y must be (n,) and weights (B, n)")
    if not np.issubdtype(weights.dtype, np.integer):
        weights = weights.astype(np.float64)
    cum_dtype = np.int64 if np.issubdtype(weights.dtype, np.integer) else np.float64
    return _weighted_auroc(weights, scores, np.flatnonzero(y), np.flatnonzero(~y), cum_dtype)


def chance_flag(auroc: float, ci_high: float) -> str:
    """:data:`BELOW_CHANCE` when the CI's upper end is below 0.5, :data:`UNDER_HALF` when the
    AUROC alone is, else ``""`` (also for an undefined AUROC)."""
    if not math.isnan(ci_high) and ci_high < 0.5:
        return BELOW_CHANCE
    if not math.isnan(auroc) and auroc < 0.5:
        return UNDER_HALF
    return ""


def chance_flags(table: pd.DataFrame) -> dict[str, list[str]]:
    """Labels flagged by :func:`chance_flag`, for ``summary.json``: ``below_chance`` (CI
    entirely below 0.5) and ``auroc_below_half`` (AUROC < 0.5, CI reaching 0.5 or absent)."""
    flags = [chance_flag(float(a), float(h))
             for a, h in zip(table["auroc"], table["ci_high"], strict=True)]
    labels = [str(x) for x in table["label"]]
    return {"below_chance": [lab for lab, f in zip(labels, flags, strict=True)
                             if f == BELOW_CHANCE],
            "auroc_below_half": [lab for lab, f in zip(labels, flags, strict=True)
                                 if f == UNDER_HALF]}


def _one_class_note(n_pos: int, n_neg: int) -> str:
    if n_pos == 0 and n_neg == 0:
        return "undefined: no rows with a target (all excluded)"
    if n_pos == 0:
        return f"undefined: only negatives (n={n_neg})"
    return f"undefined: only positives (n={n_pos})"


def check_inputs(
    probs: np.ndarray, targets: np.ndarray, label_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, L) float64 probabilities and 0/1/NaN targets for distinct labels, or an error."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    names = list(label_names)
    if probs.ndim != 2 or probs.shape != targets.shape or probs.shape[1] != len(names):
        raise ValueError(
            f"probs {probs.shape} and targets {targets.shape} must both be (N, L) with "
            f"L = {len(names)} label names"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate label names in {names}")
    if not np.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or inf")
    ok = np.isnan(targets) | (targets == 0.0) | (targets == 1.0)
    if not ok.all():
        raise ValueError("targets must be 0, 1 or NaN (excluded); map raw labels with eval_targets")
    return probs, targets, names


def auroc_table(
    probs: np.ndarray,
    targets: np.ndarray,
    label_names: Sequence[str],
    n_bootstrap: int,
    seed: int,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Per-label AUROC with a percentile bootstrap CI; never raises on a one-class label.

    Each label is scored over rows whose target is not NaN. The point estimate is sklearn's
    ``roc_auc_score``. The CI resamples study rows with replacement using
    :func:`bootstrap_indices` (shared by all labels and all models), scores every resample
    with :func:`mann_whitney_auroc`, and skips (and counts in ``note``) resamples where a label
    has one class. Per-resample AUROCs are attached as ``table.attrs["bootstrap"]``.
    """
    probs, targets, names = check_inputs(probs, targets, label_names)
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    n_rows, n_labels = probs.shape
    count_dtype = np.int32 if n_rows < 2**30 else np.int64  # a resample's counts sum to n_rows
    valid = ~np.isnan(targets)
    n_pos = ((targets == 1.0) & valid).sum(axis=0)
    n_neg = ((targets == 0.0) & valid).sum(axis=0)
    defined = (n_pos > 0) & (n_neg > 0)

    boot = np.full((n_bootstrap, n_labels), np.nan)
    if n_rows > 0 and n_bootstrap > 0 and defined.any():
        start = 0
        for idx in _index_chunks(n_rows, n_bootstrap, seed):
            b = idx.shape[0]
            offsets = (np.arange(b)[:, None] * n_rows + idx).ravel()
            counts = np.bincount(offsets, minlength=b * n_rows).reshape(b, n_rows)
            counts = counts.astype(count_dtype)  # int32: half the memory traffic of int64
            for j in np.flatnonzero(defined):
                boot[start : start + b, j] = _weighted_auroc(
                    counts,
                    probs[:, j],
                    np.flatnonzero(targets[:, j] == 1.0),
                    np.flatnonzero(targets[:, j] == 0.0),
                    count_dtype,
                )
            start += b

    lo_q, hi_q = (1.0 - ci) / 2.0, 1.0 - (1.0 - ci) / 2.0
    records = []
    for j, name in enumerate(names):
        rec: dict[str, object] = {
            "label": name,
            "auroc": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "n_pos": int(n_pos[j]),
            "n_neg": int(n_neg[j]),
            "note": "",
            "flag": "",
        }
        if not defined[j]:
            rec["note"] = _one_class_note(int(n_pos[j]), int(n_neg[j]))
            records.append(rec)
            continue
        rows = valid[:, j]
        rec["auroc"] = float(roc_auc_score(targets[rows, j], probs[rows, j]))
        samples = boot[:, j][~np.isnan(boot[:, j])]
        skipped = n_bootstrap - samples.size
        notes = []
        if n_bootstrap and samples.size:
            rec["ci_low"], rec["ci_high"] = (float(q) for q in np.quantile(samples, [lo_q, hi_q]))
        elif n_bootstrap:
            notes.append("CI undefined: every resample had one class")
        if skipped and samples.size:
            notes.append(
                f"CI from {samples.size}/{n_bootstrap} resamples ({skipped} had one class)"
            )
        rec["note"] = "; ".join(notes)
        rec["flag"] = chance_flag(float(rec["auroc"]), float(rec["ci_high"]))
        records.append(rec)

    table = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
    table["n_pos"] = table["n_pos"].astype(np.int64)
    table["n_neg"] = table["n_neg"].astype(np.int64)
    table.attrs["bootstrap"] = BootstrapSamples(
        auroc=boot, labels=tuple(names), seed=int(seed), ci=float(ci)
    )
    return table


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def headline(
    table: pd.DataFrame,
    competition: Sequence[str] = COMPETITION_LABELS,
    bootstrap: BootstrapSamples | None = None,
) -> dict:
    """Headline numbers: mean AUROC over the competition labels with its bootstrap CI.

    The CI is the percentile interval of the per-resample mean over the competition labels
    (resamples where any of them is undefined are skipped and counted); averaging the
    per-label CI bounds instead would overstate the uncertainty of the mean. ``bootstrap``
    defaults to ``table.attrs["bootstrap"]``; without it (e.g. a table read back from CSV)
    the CI is None.
    Also reports the mean over all labels with a defined AUROC. NaN values become None so
    the dict is JSON-ready.
    """
    names = list(table["label"])
    missing = [c for c in competition if c not in names]
    if missing:
        raise ValueError(f"competition labels {missing} are not in the table (have {names})")
    if bootstrap is None:
        bootstrap = table.attrs.get("bootstrap")
    auroc = dict(zip(names, table["auroc"].astype(float), strict=True))
    comp = [auroc[c] for c in competition]
    undefined = [c for c, a in zip(competition, comp, strict=True) if math.isnan(a)]
    mean_comp = float(np.mean(comp)) if comp and not undefined else float("nan")

    ci_level = bootstrap.ci if bootstrap is not None else None
    ci_low = ci_high = float("nan")
    n_used = 0
    n_boot = 0
    if bootstrap is not None and comp and not undefined:
        cols = [bootstrap.labels.index(c) for c in competition]
        per_resample = bootstrap.auroc[:, cols].mean(axis=1)
        per_resample = per_resample[~np.isnan(per_resample)]
        n_boot = bootstrap.n_bootstrap
        n_used = int(per_resample.size)
        if n_used:
            q = (1.0 - bootstrap.ci) / 2.0
            ci_low, ci_high = (float(v) for v in np.quantile(per_resample, [q, 1.0 - q]))

    all_defined = table["auroc"].astype(float).dropna()
    return {
        "competition_labels": list(competition),
        "mean_auroc_competition": _nan_to_none(mean_comp),
        "mean_auroc_competition_ci": [_nan_to_none(ci_low), _nan_to_none(ci_high)],
        "competition_undefined": undefined,
        "ci": ci_level,
        "n_bootstrap": n_boot,
        "n_bootstrap_used": n_used,
        "seed": bootstrap.seed if bootstrap is not None else None,
        "mean_auroc_all": _nan_to_none(float(all_defined.mean()) if len(all_defined) else np.nan),
        "n_labels_defined": int(all_defined.size),
        "n_labels": len(table),
    }
