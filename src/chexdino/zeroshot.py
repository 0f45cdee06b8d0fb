"""Zero-shot evaluation (SPEC section 4): prompts, probabilities, AUROC with bootstrap CIs.

Model-agnostic: callers pass an ``encode_text`` callable and image embeddings, so the same
functions score any CLIP-style model. The protocol follows CheXzero's ``run_softmax_eval``
(cosine similarity to a positive and a negative prompt, softmax over the pair, no
temperature) with its known bugs fixed: "No Finding" gets meaningful prompts, labels are
matched by name, blank labels are negatives and uncertain ones follow an explicit policy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from chexdino import COMPETITION_LABELS

__all__ = [
    "TABLE_COLUMNS",
    "UNCERTAIN_POLICIES",
    "BootstrapSamples",
    "auroc_table",
    "bootstrap_indices",
    "class_embeddings",
    "ensemble_probabilities",
    "eval_targets",
    "format_table",
    "headline",
    "mann_whitney_auroc",
    "prompt_pairs",
    "write_scorecard",
    "zero_shot_probabilities",
]

UNCERTAIN_POLICIES: tuple[str, ...] = ("exclude", "positive", "negative")
"""How a -1 (uncertain) CheXpert label is scored: dropped for that label, or counted as 1 / 0."""

TABLE_COLUMNS: tuple[str, ...] = ("label", "auroc", "ci_low", "ci_high", "n_pos", "n_neg", "note")
"""Columns of :func:`auroc_table`, also the columns of ``auroc.csv``."""

_CHUNK_ELEMENTS = 1 << 22
"""Bootstrap resamples are processed in blocks of about this many (resample, row) cells."""


# --------------------------------------------------------------------------------------
# prompts and embeddings
# --------------------------------------------------------------------------------------


def prompt_pairs(
    labels: Sequence[str],
    positive: Sequence[str] = ("{}",),
    negative: Sequence[str] = ("no {}",),
    overrides: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
) -> dict[str, tuple[list[str], list[str]]]:
    """Return ``{label: (positive prompts, negative prompts)}``, lowercased.

    Templates are filled with the lowercased label. ``overrides`` (``evaluate.prompt_overrides``;
    none gives plain CheXzero behaviour) gives literal prompt lists for specific labels, matched
    case-insensitively, so a config can fix a label whose templated pair is meaningless:
    CheXzero's "no finding" / "no no finding" scored AUROC 0.07, the double negation ranking
    studies backwards; config.yaml describes a normal study as MIMIC-CXR impressions do.
    """
    overrides = overrides or {}
    if isinstance(positive, str) or isinstance(negative, str):
        raise TypeError("positive/negative must be sequences of templates, not a single string")
    for kind, templates in (("positive", positive), ("negative", negative)):
        if len(templates) == 0:
            raise ValueError(f"{kind} prompt templates are empty")
        for t in templates:
            if "{}" not in t:
                raise ValueError(
                    f"{kind} template {t!r} has no '{{}}' placeholder: every label would get "
                    "the same prompt"
                )
    by_key: dict[str, tuple[Sequence[str], Sequence[str]]] = {}
    for name, pair in overrides.items():
        key = name.strip().lower()
        if key in by_key:
            raise ValueError(f"prompt overrides name {name!r} twice (case-insensitively)")
        if len(pair) != 2:
            raise ValueError(f"prompt override for {name!r} must be (positive, negative) lists")
        pos, neg = pair
        if isinstance(pos, str) or isinstance(neg, str) or not pos or not neg:
            raise ValueError(
                f"prompt override for {name!r} needs non-empty lists of positive and negative "
                "prompts"
            )
        by_key[key] = pair

    out: dict[str, tuple[list[str], list[str]]] = {}
    for label in labels:
        if label in out:
            raise ValueError(f"label {label!r} appears twice")
        name = label.strip().lower()
        if name in by_key:
            pos, neg = by_key[name]
            out[label] = ([p.strip().lower() for p in pos], [n.strip().lower() for n in neg])
        else:
            out[label] = (
                [t.format(name).strip().lower() for t in positive],
                [t.format(name).strip().lower() for t in negative],
            )
    return out


def class_embeddings(
    encode_text: Callable[[list[str]], torch.Tensor],
    pairs: Mapping[str, tuple[Sequence[str], Sequence[str]]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed each label's prompts and return unit-norm ``pos`` and ``neg`` matrices (L, D).

    Every distinct prompt goes through ``encode_text`` exactly once (one call). Several
    templates for a label are averaged and re-normalised, as CheXzero's ``zeroshot_classifier``
    does, so a label's direction does not depend on how many templates it has. Rows follow the
    order of ``pairs``.
    """
    if len(pairs) == 0:
        raise ValueError("no labels to embed")
    unique: list[str] = []
    seen: dict[str, int] = {}
    for pos, neg in pairs.values():
        for p in (*pos, *neg):
            if p not in seen:
                seen[p] = len(unique)
                unique.append(p)
    with torch.no_grad():
        emb = encode_text(unique)
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != len(unique):
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ValueError(f"encode_text returned {shape} for {len(unique)} prompts; want (n, D)")
    emb = torch.nn.functional.normalize(emb.detach().float(), dim=-1)

    def mean_direction(prompts: Sequence[str]) -> torch.Tensor:
        rows = emb[[seen[p] for p in prompts]].mean(dim=0)
        return torch.nn.functional.normalize(rows, dim=-1)

    pos_rows = [mean_direction(pos) for pos, _ in pairs.values()]
    neg_rows = [mean_direction(neg) for _, neg in pairs.values()]
    return torch.stack(pos_rows), torch.stack(neg_rows)


def zero_shot_probabilities(
    image_emb: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> np.ndarray:
    """Per-label probability ``exp(s_pos) / (exp(s_pos) + exp(s_neg))``, float64 (N, L).

    ``s`` are cosine similarities (rows are normalised here, so non-unit inputs are still
    scored as cosines). This is CheXzero's ``run_softmax_eval``: softmax over the pair with no
    temperature, computed in float32 via ``torch.softmax`` so it never overflows. Runs on the
    device of ``image_emb``.
    """
    if image_emb.ndim != 2 or pos.ndim != 2 or neg.ndim != 2:
        raise ValueError("image_emb, pos and neg must be 2-D (rows, D)")
    if pos.shape != neg.shape or pos.shape[1] != image_emb.shape[1]:
        raise ValueError(
            f"shape mismatch: image_emb {tuple(image_emb.shape)}, pos {tuple(pos.shape)}, "
            f"neg {tuple(neg.shape)}"
        )
    device = image_emb.device
    with torch.no_grad():
        img = torch.nn.functional.normalize(image_emb.detach().float(), dim=-1)
        p = torch.nn.functional.normalize(pos.detach().to(device).float(), dim=-1)
        n = torch.nn.functional.normalize(neg.detach().to(device).float(), dim=-1)
        logits = torch.stack((img @ p.T, img @ n.T), dim=-1)  # (N, L, 2)
        prob = torch.softmax(logits, dim=-1)[..., 0]
    return prob.double().cpu().numpy()


# --------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------


def eval_targets(raw: np.ndarray, uncertain: str = "exclude") -> np.ndarray:
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


# --------------------------------------------------------------------------------------
# AUROC and bootstrap
# --------------------------------------------------------------------------------------


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


def bootstrap_indices(n_rows: int, n_bootstrap: int = 1000, seed: int = 0) -> np.ndarray:
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


def _one_class_note(n_pos: int, n_neg: int) -> str:
    if n_pos == 0 and n_neg == 0:
        return "undefined: no rows with a target (all excluded)"
    if n_pos == 0:
        return f"undefined: only negatives (n={n_neg})"
    return f"undefined: only positives (n={n_pos})"


def _check_inputs(
    probs: np.ndarray, targets: np.ndarray, label_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
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
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Per-label AUROC with a percentile bootstrap CI; never raises on a one-class label.

    Each label is scored over rows whose target is not NaN. The point estimate is sklearn's
    ``roc_auc_score``. The CI resamples study rows with replacement using
    :func:`bootstrap_indices` (shared by all labels and all models), scores every resample
    with :func:`mann_whitney_auroc`, and skips (and counts in ``note``) resamples where a label
    has one class. Per-resample AUROCs are attached as ``table.attrs["bootstrap"]``.
    """
    probs, targets, names = _check_inputs(probs, targets, label_names)
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


def ensemble_probabilities(prob_list: Sequence[np.ndarray]) -> np.ndarray:
    """Average probabilities over checkpoints (CheXzero's top-k ensemble), float64."""
    if len(prob_list) == 0:
        raise ValueError("no probability arrays to ensemble")
    arrays = [np.asarray(p, dtype=np.float64) for p in prob_list]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"probability arrays differ in shape: {sorted(shapes)}")
    return np.mean(np.stack(arrays), axis=0)


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------


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
    from chexdino.plots import plot_roc_curves

    probs, targets, names = _check_inputs(probs, targets, label_names)
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
    lines += [
        "",
        head,
        (
            f"mean AUROC (all {summary.get('n_labels_defined', 0)} defined labels): "
            f"{_fmt(summary.get('mean_auroc_all'))}"
        ),
    ]
    return "\n".join(lines)
