"""The linear probe: AUROCs recomputable from the cached embeddings, fractions by patient,
several seeds for the small fractions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from chexdino import LABELS
from chexdino.config import LinearProbeConfig, validate_config
from chexdino.embeddings import read_embeddings
from chexdino.errors import ConfigError
from chexdino.linear_probe import fit_label, patient_fraction, run_linear_probe, runs
from chexdino.metrics import eval_targets

LABELS_SCORED = ["Cardiomegaly", "Edema", "No Finding"]


def fake_split(path, n, seed, patients):
    """Embeddings where two labels are linearly visible; 1-3 films per patient."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([1.0, 0.0, -1.0, np.nan], size=(n, len(LABELS)), p=[.3, .4, .1, .2])
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    emb[:, 0] += 2 * (labels[:, LABELS.index("Cardiomegaly")] == 1)
    emb[:, 1] += 2 * (labels[:, LABELS.index("Edema")] == 1)
    np.savez(path, embeddings=emb, dicom_id=np.array([f"d{i}" for i in range(n)]),
             subject_id=np.array([f"p{seed}-{i % patients}" for i in range(n)]),
             labels=labels.astype(np.float32), label_names=np.array(LABELS))
    return path


def test_probe_aurocs_are_sklearns_from_the_saved_embeddings(tmp_path):
    train = fake_split(tmp_path / "train.npz", 300, 0, 120)
    validate = fake_split(tmp_path / "validate.npz", 80, 1, 40)
    test = fake_split(tmp_path / "test.npz", 100, 2, 50)
    cfg = LinearProbeConfig.from_section({"fractions": [0.1, 1.0], "c_grid": [0.1, 1.0],
                                          "bootstrap": 20})
    zero_shot = tmp_path / "zs" / "summary.json"
    zero_shot.parent.mkdir()
    zero_shot.write_text(json.dumps({"headline": {"mean_auroc_competition": 0.6}}))
    table = run_linear_probe(train, validate, {"mimic_test": test}, cfg, LABELS_SCORED,
                             "exclude", 0, tmp_path / "auroc.csv", tmp_path / "summary.json",
                             tmp_path / "fig.png", {"mimic_test": zero_shot})
    assert (tmp_path / "fig.png").stat().st_size > 0
    written = pd.read_csv(tmp_path / "auroc.csv", keep_default_na=False, na_values=[""])
    assert len(written) == len(table) == 4 * len(LABELS_SCORED)  # 3 seeds at 0.1, 1 at 1.0
    tr, te = read_embeddings(train), read_embeddings(test)
    cols = [list(LABELS).index(lab) for lab in LABELS_SCORED]
    for r in written[written["label"] != "No Finding"].itertuples():
        keep = patient_fraction(tr["subject_id"], r.fraction, r.seed)
        y = eval_targets(tr["labels"][keep][:, cols], "exclude")[:, LABELS_SCORED.index(r.label)]
        ok = ~np.isnan(y)
        model = fit_label(tr["embeddings"][keep][ok], y[ok], r.C, cfg.max_iter)
        yt = eval_targets(te["labels"][:, cols], "exclude")[:, LABELS_SCORED.index(r.label)]
        okt = ~np.isnan(yt)
        expected = roc_auc_score(yt[okt], model.predict_proba(te["embeddings"][okt])[:, 1])
        assert r.auroc == pytest.approx(expected, abs=1e-12)
    full = written[(written["fraction"] == 1.0) & written["label"].isin(["Cardiomegaly", "Edema"])]
    assert (full["auroc"] > 0.75).all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["zero_shot"] == {"mimic_test": 0.6}


def test_fractions_are_taken_by_patient_and_small_ones_have_three_seeds():
    subjects = np.repeat([f"p{i}" for i in range(200)], np.arange(200) % 4 + 1)
    for fraction in (0.01, 0.1, 0.5):
        for seed in range(3):
            keep = patient_fraction(subjects, fraction, seed)
            inside, outside = set(subjects[keep]), set(subjects[~keep])
            assert not inside & outside  # no patient split between in and out
            assert len(inside) == max(1, round(fraction * 200))
    a, b = patient_fraction(subjects, 0.1, 0), patient_fraction(subjects, 0.1, 1)
    assert not np.array_equal(a, b)
    shipped = LinearProbeConfig.from_section({})
    assert shipped.fractions == [0.01, 0.1, 1.0] and shipped.enabled
    for fraction in (0.01, 0.1):
        assert len([s for f, s in runs(shipped) if f == fraction]) >= 3
    from chexdino.config import shipped_config
    cfg = {**shipped_config(), "linear_probe": {**shipped.to_dict(), "seeds": [0, 1]}}
    with pytest.raises(ConfigError, match="linear_probe.seeds"):
        validate_config(cfg)
