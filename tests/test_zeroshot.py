"""Tests for the zero-shot evaluation (SPEC section 4) and the ROC plot."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread
from sklearn.metrics import roc_auc_score

from chexdino import COMPETITION_LABELS, LABELS, plots, zeroshot
from chexdino.zeroshot import (
    auroc_table,
    bootstrap_indices,
    class_embeddings,
    ensemble_probabilities,
    eval_targets,
    format_table,
    headline,
    mann_whitney_auroc,
    prompt_pairs,
    write_scorecard,
    zero_shot_probabilities,
)


def _synthetic(n: int = 300, n_labels: int = 6, seed: int = 1, ties: bool = True):
    """Probabilities correlated with targets; some NaN (excluded) targets; rounded for ties."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, n_labels)) < 0.3).astype(float)
    targets[rng.random((n, n_labels)) < 0.1] = np.nan
    probs = 1 / (1 + np.exp(-(np.nan_to_num(targets) * 1.2 + rng.normal(size=(n, n_labels)))))
    if ties:
        probs = np.round(probs, 2)
    return probs, targets


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
    probs, targets = _synthetic()
    names = [f"L{j}" for j in range(probs.shape[1])]
    table = auroc_table(probs, targets, names, n_bootstrap=50)
    assert list(table.columns) == ["label", "auroc", "ci_low", "ci_high", "n_pos", "n_neg", "note"]
    for j, name in enumerate(names):
        keep = ~np.isnan(targets[:, j])
        row = table.set_index("label").loc[name]
        assert row["auroc"] == pytest.approx(roc_auc_score(targets[keep, j], probs[keep, j]))
        assert row["n_pos"] == int((targets[keep, j] == 1).sum())
        assert row["n_neg"] == int((targets[keep, j] == 0).sum())
        assert row["n_pos"] + row["n_neg"] < len(probs)  # NaN rows really were excluded


def test_bootstrap_samples_are_sklearn_on_shared_resamples() -> None:
    """Two different models get identical resample indices; each resample AUROC is exact."""
    probs_a, targets = _synthetic(n=120, n_labels=3, seed=3)
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
    probs, targets = _synthetic(n=200, n_labels=4)
    names = list("wxyz")
    ref_idx = bootstrap_indices(200, 60, seed=5)
    ref = auroc_table(probs, targets, names, n_bootstrap=60, seed=5)
    monkeypatch.setattr(zeroshot, "_CHUNK_ELEMENTS", 200 * 7)  # blocks of 7 resamples
    assert np.array_equal(bootstrap_indices(200, 60, seed=5), ref_idx)
    small = auroc_table(probs, targets, names, n_bootstrap=60, seed=5)
    pd.testing.assert_frame_equal(small, ref)
    assert small.attrs["bootstrap"] == ref.attrs["bootstrap"]


def test_ci_brackets_point_and_is_seeded() -> None:
    probs, targets = _synthetic(n=400)
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
    probs, targets = _synthetic(n=250, n_labels=5)
    names = ["Edema", "Atelectasis", "Fracture", "Cardiomegaly", "No Finding"]
    perm = np.array([3, 0, 4, 1, 2])
    a = auroc_table(probs, targets, names, n_bootstrap=100, seed=2)
    b = auroc_table(probs[:, perm], targets[:, perm], [names[i] for i in perm], 100, seed=2)
    pd.testing.assert_frame_equal(
        a.set_index("label").sort_index(), b.set_index("label").sort_index()
    )


def test_one_class_label_gives_nan_and_note_not_crash() -> None:
    probs, targets = _synthetic(n=100, n_labels=4)
    targets[:, 1] = 0.0  # only negatives
    targets[:, 2] = np.where(np.isnan(targets[:, 2]), np.nan, 1.0)  # only positives
    targets[:, 3] = np.nan  # everything excluded
    table = auroc_table(probs, targets, ["ok", "neg", "pos", "none"], n_bootstrap=30)
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
    probs, targets = _synthetic(n=80, n_labels=2)
    t = auroc_table(probs, targets, ["a", "b"], n_bootstrap=20)
    both = pd.concat([t, t.copy()], ignore_index=True)
    assert len(both) == 4


def test_input_validation() -> None:
    probs, targets = _synthetic(n=20, n_labels=2)
    with pytest.raises(ValueError, match="label names"):
        auroc_table(probs, targets, ["only-one"])
    bad = targets.copy()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="eval_targets"):
        auroc_table(probs, bad, ["a", "b"])
    nan_probs = probs.copy()
    nan_probs[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        auroc_table(nan_probs, targets, ["a", "b"])


# ---------------------------------------------------------------- headline


def test_headline_mean_and_ci_from_per_resample_means() -> None:
    probs, targets = _synthetic(n=300, n_labels=len(LABELS), seed=4)
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
    probs, targets = _synthetic(n=120, n_labels=len(LABELS), seed=6)
    targets[:, list(LABELS).index("Edema")] = 0.0
    table = auroc_table(probs, targets, LABELS, n_bootstrap=20)
    s = headline(table)
    assert s["mean_auroc_competition"] is None
    assert s["competition_undefined"] == ["Edema"]
    assert s["n_labels_defined"] == len(LABELS) - 1
    with pytest.raises(ValueError, match="Atelectasis"):
        headline(table[table["label"] != "Atelectasis"].reset_index(drop=True))
    # a table read back from CSV has no bootstrap: point estimate still reported, CI None
    plain = auroc_table(*_synthetic(n=120, n_labels=len(LABELS), seed=6), LABELS, 20)
    plain.attrs.clear()
    s2 = headline(plain)
    assert s2["mean_auroc_competition"] is not None
    assert s2["mean_auroc_competition_ci"] == [None, None]


# ---------------------------------------------------------------- probabilities


def test_zero_shot_probabilities_match_chexzero_formula_by_hand() -> None:
    img = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])  # not unit: cosine normalises
    pos = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    neg = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    got = zero_shot_probabilities(img, pos, neg)
    assert got.dtype == np.float64 and got.shape == (2, 2)
    unit = np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    s_pos = unit @ pos.numpy().T
    s_neg = unit @ neg.numpy().T
    want = np.exp(s_pos) / (np.exp(s_pos) + np.exp(s_neg))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0, 0] == pytest.approx(math.exp(0.6) / (math.exp(0.6) + math.exp(0.8)), rel=1e-6)
    assert got[1, 1] < 0.5 < got[0, 1]


def test_zero_shot_probabilities_half_precision_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(50, 16, generator=g), dim=-1)
    pos = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
    neg = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
    ref = zero_shot_probabilities(img, pos, neg)
    for dtype in (torch.float16, torch.bfloat16):
        got = zero_shot_probabilities(img.to(dtype), pos.to(dtype), neg.to(dtype))
        assert got.dtype == np.float64 and np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, atol=5e-3)
    with pytest.raises(ValueError, match="shape"):
        zero_shot_probabilities(img, pos, neg[:3])


# ---------------------------------------------------------------- prompts


def test_prompt_pairs_lowercase_and_chexzero_default() -> None:
    pairs = prompt_pairs(LABELS)
    assert list(pairs) == list(LABELS)
    assert pairs["Pleural Effusion"] == (["pleural effusion"], ["no pleural effusion"])
    for pos, neg in pairs.values():
        assert all(p == p.lower() for p in (*pos, *neg))
        assert set(pos).isdisjoint(neg)
    multi = prompt_pairs(["Edema"], ("{}", "Findings of {}"), ("No {}", "no evidence of {}"))
    assert multi["Edema"] == (["edema", "findings of edema"], ["no edema", "no evidence of edema"])


def shipped_pairs(labels):
    """``prompt_pairs`` with config.yaml's templates and overrides (stated only there)."""
    from chexdino.config import EvaluateConfig
    from chexdino.evaluate import prompt_settings

    return prompt_pairs(labels, **prompt_settings(EvaluateConfig.from_section().prompts))


def test_no_finding_override_fixes_chexzero_bug() -> None:
    pos, neg = shipped_pairs(LABELS)["No Finding"]
    assert "no no finding" not in neg and "no finding" not in pos
    assert not any(n.startswith("no ") for n in neg)  # negative describes an abnormal study
    assert pos == ["no acute cardiopulmonary process"]
    assert neg == ["acute cardiopulmonary process"]
    assert shipped_pairs(["Edema"]) == prompt_pairs(["Edema"])  # the templates are CheXzero's
    # without overrides: CheXzero's behaviour; the config may replace the fix
    assert prompt_pairs(["No Finding"], overrides={})["No Finding"] == (
        ["no finding"],
        ["no no finding"],
    )
    custom = prompt_pairs(["No Finding"], overrides={"no finding": (["Normal Chest"], ["X"])})
    assert custom["No Finding"] == (["normal chest"], ["x"])


def test_prompt_pairs_rejects_bad_templates() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        prompt_pairs(["Edema"], positive=("edema",))
    with pytest.raises(ValueError, match="twice"):
        prompt_pairs(["Edema", "Edema"])


def test_class_embeddings_encode_once_average_and_renormalise() -> None:
    vocab = {
        "edema": [1.0, 0.0, 0.0],
        "findings of edema": [0.0, 1.0, 0.0],
        "no edema": [0.0, 0.0, 1.0],
        "no acute cardiopulmonary process": [0.6, 0.8, 0.0],
        "acute cardiopulmonary process": [0.0, 0.6, 0.8],
    }
    calls: list[list[str]] = []

    def encode_text(texts: list[str]) -> torch.Tensor:
        calls.append(list(texts))
        return torch.tensor([vocab[t] for t in texts])

    pairs = {
        "Edema": (["edema", "findings of edema"], ["no edema"]),
        "Edema again": (["edema"], ["no edema"]),
        "No Finding": shipped_pairs(["No Finding"])["No Finding"],
    }
    pos, neg = class_embeddings(encode_text, pairs)
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) == 5
    assert pos.shape == neg.shape == (3, 3)
    torch.testing.assert_close(pos.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(pos[0], torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2))
    torch.testing.assert_close(pos[1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(neg[2], torch.tensor([0.0, 0.6, 0.8]))


# ---------------------------------------------------------------- targets, ensemble


def test_eval_targets_policies() -> None:
    raw = np.array([[1.0, 0.0, -1.0, np.nan]])
    np.testing.assert_array_equal(eval_targets(raw), [[1.0, 0.0, np.nan, 0.0]])
    np.testing.assert_array_equal(eval_targets(raw, "positive"), [[1.0, 0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(eval_targets(raw, "negative"), [[1.0, 0.0, 0.0, 0.0]])
    assert np.isnan(raw[0, 3])  # input untouched
    with pytest.raises(ValueError, match="'ignore'"):
        eval_targets(raw, "ignore")
    with pytest.raises(ValueError, match=r"2\.0"):
        eval_targets(np.array([[2.0, 1.0]]))


def test_ensemble_probabilities() -> None:
    probs, _ = _synthetic(n=30)
    np.testing.assert_allclose(ensemble_probabilities([probs, probs, probs]), probs, rtol=1e-15)
    other = np.random.default_rng(0).random(probs.shape)
    np.testing.assert_allclose(ensemble_probabilities([probs, other]), (probs + other) / 2)
    with pytest.raises(ValueError, match="shape"):
        ensemble_probabilities([probs, other[:-1]])
    with pytest.raises(ValueError):
        ensemble_probabilities([])


# ---------------------------------------------------------------- outputs


def test_write_scorecard_outputs_parse_back(tmp_path: Path) -> None:
    n = 90
    probs, targets = _synthetic(n=n, n_labels=len(LABELS), seed=8)
    targets[:, list(LABELS).index("Fracture")] = 0.0  # one undefined panel
    ids = pd.DataFrame({"study_id": np.arange(50_000_000, 50_000_000 + n), "split": "test"})
    ids.index = np.arange(1000, 1000 + n)  # a non-default index must not misalign rows
    table = auroc_table(probs, targets, LABELS, n_bootstrap=50)
    summary = headline(table)
    paths = write_scorecard(tmp_path / "out", ids, probs, targets, LABELS, table, summary)
    assert set(paths) == {"probabilities", "auroc", "summary", "roc"}

    pr = pd.read_csv(paths["probabilities"])
    assert pr.shape == (n, 2 + len(LABELS))
    assert list(pr.columns[:2]) == ["study_id", "split"]
    np.testing.assert_array_equal(pr["study_id"], ids["study_id"])
    np.testing.assert_allclose(pr[[f"prob_{lab}" for lab in LABELS]].to_numpy(), probs)

    au = pd.read_csv(paths["auroc"])
    assert au.shape == (len(LABELS), 7)
    np.testing.assert_allclose(au["auroc"], table["auroc"])

    doc = json.loads(paths["summary"].read_text())
    assert doc["n_images"] == n
    assert set(doc["per_label"]) == set(LABELS)
    assert doc["per_label"]["Fracture"]["auroc"] is None
    assert doc["headline"]["mean_auroc_competition"] == pytest.approx(
        summary["mean_auroc_competition"]
    )

    png = paths["roc"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    img = imread(paths["roc"])
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300


def test_roc_figure_has_one_panel_per_label() -> None:
    probs, targets = _synthetic(n=60, n_labels=len(LABELS), seed=2)
    targets[:, 0] = 1.0
    fig = plots.roc_figure(probs, targets, LABELS)
    assert len(fig.axes) == len(LABELS)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == f"{LABELS[0]}\nAUROC n/a"
    assert any("only positives" in t.get_text() for t in fig.axes[0].texts)
    assert all(re.search(r"AUROC \d\.\d{3}", t) for t in titles[1:])
    assert len(fig.axes[1].lines) == 2  # chance diagonal + ROC curve
    fig3 = plots.roc_figure(probs[:, :3], targets[:, :3], LABELS[:3])
    assert len(fig3.axes) == 3


def test_format_table_headline_line() -> None:
    probs, targets = _synthetic(n=200, n_labels=len(LABELS), seed=5)
    targets[:, list(LABELS).index("Fracture")] = 0.0
    table = auroc_table(probs, targets, LABELS, n_bootstrap=50)
    text = format_table(table, headline(table))
    assert re.search(
        r"^mean AUROC \(5 competition labels\): 0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]$",
        text,
        re.MULTILINE,
    )
    assert "95% CI" in text.splitlines()[0]
    fracture = next(line for line in text.splitlines() if line.startswith("Fracture"))
    assert "n/a" in fracture and "only negatives" in fracture
    assert len(text.splitlines()) == 1 + len(LABELS) + 3
