"""Retrieval Recall@K: the batched torch ranks equal a brute-force NumPy ranking; the stage
scores studies (mean of their films) against distinct report texts."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import torch

from chexdino import LABELS, h5store
from chexdino.config import EvaluateConfig
from chexdino.retrieval import recall_table, retrieval_ranks, score_retrieval
from chexdino.tokens import _write_tokens, tokenize
from chexdino.transforms import eval_transform
from conftest import CONTEXT_LENGTH, NORMALIZE, SEED


def brute_force_ranks(query, gallery, query_group, gallery_group):
    """Sort every query's gallery by score (correct items first among equals); count the
    wrong items before the first correct one."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    ranks = []
    for i in range(len(q)):
        scores = g @ q[i]
        correct = gallery_group == query_group[i]
        order = sorted(range(len(g)), key=lambda j: (-scores[j], not correct[j]))
        ranks.append(next(pos for pos, j in enumerate(order) if correct[j]))
    return np.array(ranks)


def test_batched_ranks_equal_brute_force():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(40, 8))
    gallery_group = rng.integers(0, 25, size=40)  # some groups have several correct items
    query_group = rng.choice(np.unique(gallery_group), size=30)
    query = gallery[[np.flatnonzero(gallery_group == g)[0] for g in query_group]]
    query = query + rng.normal(scale=2.0, size=query.shape)  # far from perfect
    expected = brute_force_ranks(query, gallery, query_group, gallery_group)
    got = retrieval_ranks(torch.tensor(query), torch.tensor(gallery), torch.tensor(query_group),
                          torch.tensor(gallery_group), block=7).numpy()
    np.testing.assert_array_equal(got, expected)
    assert 0 < (expected == 0).mean() < 1 and expected.max() >= 10  # a spread of ranks

    table = recall_table({"image_to_report": got}, {"image_to_report": 40}, n_bootstrap=200,
                         seed=SEED)
    for k in (1, 5, 10):
        row = table[table["k"] == k].iloc[0]
        assert row["recall"] == (expected < k).mean()
        assert row["ci_low"] <= row["recall"] <= row["ci_high"] and row["ci_low"] < row["ci_high"]


def test_stage_scores_studies_against_distinct_reports(tmp_path, tiny_model_cfg):
    from chexdino.model import build_model

    rng = np.random.default_rng(0)
    # 12 test studies with 1-3 films each, 2 validation studies; texts repeat across studies.
    texts = ["edema", "no acute cardiopulmonary process", "small left effusion", "cardiomegaly"]
    rows = []
    for s in range(14):
        for f in range(1 + s % 3):
            rows.append({"dicom_id": f"d{s}_{f}", "study_id": f"s{s}", "subject_id": f"p{s}",
                         "split": "test" if s < 12 else "validate", "view": "PA",
                         "source_rows": 64, "source_cols": 64, "text": texts[s % 4] if s != 5
                         else "a report only this study has"})
    meta = pd.DataFrame(rows)
    for lab in LABELS:
        meta[lab] = np.nan
    has_text = np.ones(len(meta), dtype=bool)
    has_text[meta["study_id"] == "s7"] = False  # a study whose report was rejected
    images = rng.integers(0, 255, (len(meta), 64, 64), dtype=np.uint8)
    h5store.write_store(tmp_path / "cxr.h5", images, meta.drop(columns="text"), 64)
    tokens = tokenize(list(meta["text"]), context_length=CONTEXT_LENGTH).numpy().astype(np.int32)
    _write_tokens(tmp_path / "tokens.h5", tokens, has_text, meta["dicom_id"],
                  pd.Series(["impression"] * len(meta)))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(tiny_model_cfg).eval()
    ckpt = tmp_path / "best.pt"
    torch.save({"step": 1, "model": model.state_dict(), "model_config": model.cfg.to_dict(),
                "input_size": 32, "precision": "fp32", "device": "cpu"}, ckpt)
    table = score_retrieval(ckpt, tmp_path / "cxr.h5", tmp_path / "tokens.h5", tmp_path / "out",
                            EvaluateConfig.from_section({"bootstrap": 50}))

    # The same numbers from first principles: per-study mean embedding, distinct texts.
    keep = meta[(meta["split"] == "test") & has_text].copy()
    with torch.no_grad():
        emb = model.encode_image(eval_transform(torch.from_numpy(images[keep.index]), 32,
                                                normalize=NORMALIZE))
    keep["e"] = list(emb.numpy())
    studies = keep.groupby("study_id", sort=False)
    study_emb = np.stack([np.mean(np.stack(g["e"]), axis=0) for _, g in studies])
    study_text = [g["text"].iloc[0] for _, g in studies]
    distinct = sorted(set(study_text))
    with torch.no_grad():
        text_emb = model.encode_text(tokenize(distinct, context_length=CONTEXT_LENGTH)).numpy()
    group = np.array([distinct.index(t) for t in study_text])
    i2r = brute_force_ranks(study_emb, text_emb, group, np.arange(len(distinct)))
    r2i = brute_force_ranks(text_emb, study_emb, np.arange(len(distinct)), group)
    for direction, expected, n_cand in (("image_to_report", i2r, len(distinct)),
                                        ("report_to_image", r2i, 11)):
        part = table[table["direction"] == direction].set_index("k")
        assert (part["n_queries"] == len(expected)).all() and (part["n_candidates"] == n_cand).all()
        for k in (1, 5, 10):
            assert part.loc[k, "recall"] == (expected < k).mean()
    summary = json.loads((tmp_path / "out" / "retrieval.json").read_text())
    assert (summary["n_studies"], summary["n_distinct_reports"]) == (11, 5)
    assert summary["n_studies_without_report"] == 1
    assert list(pd.read_csv(tmp_path / "out" / "retrieval.csv")["k"]) == [1, 5, 10, 1, 5, 10]
