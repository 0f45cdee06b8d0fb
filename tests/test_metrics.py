"""Tests for the zero-shot metrics: AUROC (ties, one class), bootstrap CIs, the headline."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from chexdino import COMPETITION_LABELS, LABELS, metrics
from chexdino.metrics import (
    auroc_table,
    bootstrap_indices,
    eval_targets,
    headline,
    mann_whitney_auroc,
)
from conftest import BOOTSTRAP, SEED, UNCERTAIN, synthetic_scores

# ---------------------------------------------------------------- AUROC and bootstrap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mann_whitney_equals_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 7, size=400).astype(float)  # heavy ties
    y = rng.random(400) < 0.35
    assert mann_whitney_auroc(scores, y)[0] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    # weights = resample multiplicities: equals sklearn on the materialised resample
    idx = bootstrap_indices(400, 5, seed=seed)
    weights = np.stack([np.bincount(i, minlength=400) for i in idx])
    got = mann_whitney_auroc(scores, y, weights)
    want = [roc_auc_score(y[i], scores[i]) for i in idx]
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(mann_whitney_auroc(scores, y, weights.astype(float)), want)
    # real-valued weights = sample weights
    w = rng.random(400)
    assert mann_whitney_auroc(scores, y, w[None])[0] == pytest.approx(
        roc_auc_score(y, scores, sample_weight=w), abs=1e-12
    )


def test_mann_whitney_one_class_weighting_is_nan() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    y = np.array([0, 0, 1, 1])
    weights = np.array([[1, 1, 0, 0], [1, 0, 1, 0]])
    out = mann_whitney_auroc(scores, y, weights)
    assert math.isnan(out[0]) and out[1] == 1.0


def test_auroc_table_point_matches_sklearn_excluding_nan() -> None:
    probs, targets = synthetic_scores()
    names = [f"L{j}" for j in range(probs.shape[1])]
    table = auroc_table(probs, targets, names, n_bootstrap=50, seed=SEED)
    assert list(table.columns) == ["label", "auroc", "ci_low", "ci_high", "n_pos", "n_neg", "note",
                                   "flag"]
    for j, name in enumerate(names):
        keep = ~np.isnan(targets[:, j])
        row = table.set_index("label").loc[name]
        assert row["auroc"] == pytest.approx(roc_auc_score(targets[keep, j], probs[keep, j]))
        assert row["n_pos"] == int((targets[keep, j] == 1).sum())
        assert row["n_neg"] == int((targets[keep, j] == 0).sum())
        assert row["n_pos"] + row["n_neg"] < len(probs)  # NaN rows really were excluded


def test_bootstrap_samples_are_sklearn_on_shared_resamples() -> None:
    """Two different models get identical resample indices; each resample AUROC is exact."""
    probs_a, targets = synthetic_scores(n=120, n_labels=3, seed=3)
    probs_b = np.random.default_rng(9).random(probs_a.shape)
    names = ["a", "b", "c"]
    idx = bootstrap_indices(len(probs_a), 40, seed=7)
    assert np.array_equal(idx, bootstrap_indices(len(probs_a), 40, seed=7))
    for probs in (probs_a, probs_b):
        boot = auroc_table(probs, targets, names, n_bootstrap=40, seed=7).attrs["bootstrap"].auroc
        for b in (0, 17, 39):
            for j in range(3):
                rows = idx[b][~np.isnan(targets[idx[b], j])]
                want = roc_auc_score(targets[rows, j], probs[rows, j])
                assert boot[b, j] == pytest.approx(want, abs=1e-12)


def test_bootstrap_indices_do_not_depend_on_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    probs, targets = synthetic_scores(n=200, n_labels=4)
    names = list("wxyz")
    ref_idx = bootstrap_indices(200, 60, seed=5)
    ref = auroc_table(probs, targets, names, n_bootstrap=60, seed=5)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 200 * 7)  # blocks of 7 resamples
    assert np.array_equal(bootstrap_indices(200, 60, seed=5), ref_idx)
    small = auroc_table(probs, targets, names, n_bootstrap=60, seed=5)
    pd.testing.assert_frame_equal(small, ref)
    assert small.attrs["bootstrap"] == ref.attrs["bootstrap"]


def test_ci_brackets_point_and_is_seeded() -> None:
    probs, targets = synthetic_scores(n=400)
    names = [f"L{j}" for j in range(probs.shape[1])]
    t1 = auroc_table(probs, targets, names, n_bootstrap=200, seed=0)
    t2 = auroc_table(probs, targets, names, n_bootstrap=200, seed=0)
    t3 = auroc_table(probs, targets, names, n_bootstrap=200, seed=1)
    assert (t1["ci_low"] < t1["auroc"]).all() and (t1["auroc"] < t1["ci_high"]).all()
    assert (t1["ci_high"] - t1["ci_low"] > 0.02).all()  # a real interval, not a point
    pd.testing.assert_frame_equal(t1, t2)
    assert not np.allclose(t1["ci_low"], t3["ci_low"])
    np.testing.assert_array_equal(t1["auroc"], t3["auroc"])  # the point does not resample
    wider = auroc_table(probs, targets, names, n_bootstrap=200, seed=0, ci=0.99)
    assert (wider["ci_low"] <= t1["ci_low"]).all() and (wider["ci_high"] >= t1["ci_high"]).all()


def test_shuffling_label_columns_gives_identical_per_label_results() -> None:
    probs, targets = synthetic_scores(n=250, n_labels=5)
    names = ["Edema", "Atelectasis", "Fracture", "Cardiomegaly", "No Finding"]
    perm = np.array([3, 0, 4, 1, 2])
    a = auroc_table(probs, targets, names, n_bootstrap=100, seed=2)
    b = auroc_table(probs[:, perm], targets[:, perm], [names[i] for i in perm], 100, seed=2)
    pd.testing.assert_frame_equal(
        a.set_index("label").sort_index(), b.set_index("label").sort_index()
    )


def test_one_class_label_gives_nan_and_note_not_crash() -> None:
    probs, targets = synthetic_scores(n=100, n_labels=4)
    targets[:, 1] = 0.0  # only negatives
    targets[:, 2] = np.where(np.isnan(targets[:, 2]), np.nan, 1.0)  # only positives
    targets[:, 3] = np.nan  # everything excluded
    table = auroc_table(probs, targets, ["ok", "neg", "pos", "none"], n_bootstrap=30, seed=SEED)
    t = table.set_index("label")
    assert not math.isnan(t.loc["ok", "auroc"]) and t.loc["ok", "note"] == ""
    for name in ("neg", "pos", "none"):
        assert math.isnan(t.loc[name, "auroc"]) and math.isnan(t.loc[name, "ci_low"])
    assert t.loc["neg", "note"] == "undefined: only negatives (n=100)"
    n_pos = int((targets[:, 2] == 1).sum())
    assert t.loc["pos", "note"] == f"undefined: only positives (n={n_pos})"
    assert t.loc["none", "note"].startswith("undefined: no rows")


def test_rare_label_counts_skipped_resamples() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((60, 1))
    targets = np.zeros((60, 1))
    targets[5, 0] = 1.0  # one positive: many resamples miss it
    table = auroc_table(probs, targets, ["rare"], n_bootstrap=200, seed=0)
    note = table.loc[0, "note"]
    m = re.fullmatch(r"CI from (\d+)/200 resamples \((\d+) had one class\)", note)
    assert m is not None, note
    used, skipped = int(m.group(1)), int(m.group(2))
    assert used + skipped == 200 and skipped > 0
    assert np.isnan(table.attrs["bootstrap"].auroc[:, 0]).sum() == skipped


def test_table_survives_concat_and_copy() -> None:
    probs, targets = synthetic_scores(n=80, n_labels=2)
    t = auroc_table(probs, targets, ["a", "b"], n_bootstrap=20, seed=SEED)
    both = pd.concat([t, t.copy()], ignore_index=True)
    assert len(both) == 4


def test_input_validation() -> None:
    probs, targets = synthetic_scores(n=20, n_labels=2)
    with pytest.raises(ValueError, match="label names"):
        auroc_table(probs, targets, ["only-one"], n_bootstrap=BOOTSTRAP, seed=SEED)
    bad = targets.copy()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="eval_targets"):
        auroc_table(probs, bad, ["a", "b"], n_bootstrap=BOOTSTRAP, seed=SEED)
    nan_probs = probs.copy()
    nan_probs[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        auroc_table(nan_probs, targets, ["a", "b"], n_bootstrap=BOOTSTRAP, seed=SEED)


# ---------------------------------------------------------------- headline


def test_headline_mean_and_ci_from_per_resample_means() -> None:
    probs, targets = synthetic_scores(n=300, n_labels=len(LABELS), seed=4)
    table = auroc_table(probs, targets, LABELS, n_bootstrap=150, seed=3)
    s = headline(table)
    comp = table.set_index("label").loc[list(COMPETITION_LABELS)]
    assert s["mean_auroc_competition"] == pytest.approx(comp["auroc"].mean())
    assert s["mean_auroc_all"] == pytest.approx(table["auroc"].mean())
    assert s["n_labels_defined"] == len(LABELS) and s["n_labels"] == len(LABELS)
    boot = table.attrs["bootstrap"]
    cols = [list(LABELS).index(c) for c in COMPETITION_LABELS]
    per = boot.auroc[:, cols].mean(axis=1)
    lo, hi = np.quantile(per, [0.025, 0.975])
    assert s["mean_auroc_competition_ci"] == pytest.approx([lo, hi])
    assert s["n_bootstrap"] == s["n_bootstrap_used"] == 150
    # averaging per-label CI bounds would give a wider interval: guard the method
    assert hi - lo < (comp["ci_high"] - comp["ci_low"]).mean()
    assert lo < s["mean_auroc_competition"] < hi
    json.dumps(s, allow_nan=False)  # JSON-ready


def test_headline_with_undefined_competition_label_and_missing_label() -> None:
    probs, targets = synthetic_scores(n=120, n_labels=len(LABELS), seed=6)
    targets[:, list(LABELS).index("Edema")] = 0.0
    table = auroc_table(probs, targets, LABELS, n_bootstrap=20, seed=SEED)
    s = headline(table)
    assert s["mean_auroc_competition"] is None
    assert s["competition_undefined"] == ["Edema"]
    assert s["n_labels_defined"] == len(LABELS) - 1
    with pytest.raises(ValueError, match="Atelectasis"):
        headline(table[table["label"] != "Atelectasis"].reset_index(drop=True))
    # a table read back from CSV has no bootstrap: point estimate still reported, CI None
    plain = auroc_table(*synthetic_scores(n=120, n_labels=len(LABELS), seed=6), LABELS, 20, SEED)
    plain.attrs.clear()
    s2 = headline(plain)
    assert s2["mean_auroc_competition"] is not None
    assert s2["mean_auroc_competition_ci"] == [None, None]


# ---------------------------------------------------------------- targets


def test_eval_targets_policies() -> None:
    raw = np.array([[1.0, 0.0, -1.0, np.nan]])
    np.testing.assert_array_equal(eval_targets(raw, uncertain=UNCERTAIN), [[1.0, 0.0, np.nan, 0.0]])
    np.testing.assert_array_equal(eval_targets(raw, "positive"), [[1.0, 0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(eval_targets(raw, "negative"), [[1.0, 0.0, 0.0, 0.0]])
    assert np.isnan(raw[0, 3])  # input untouched
    with pytest.raises(ValueError, match="'ignore'"):
        eval_targets(raw, "ignore")
    with pytest.raises(ValueError, match=r"2\.0"):
        eval_targets(np.array([[2.0, 1.0]]), uncertain=UNCERTAIN)
