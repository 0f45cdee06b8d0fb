"""Tests for zero-shot scoring (SPEC section 4): prompts, class embeddings, probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chexdino import LABELS
from chexdino.zeroshot import (
    class_embeddings,
    ensemble_probabilities,
    prompt_pairs,
    zero_shot_probabilities,
)
from conftest import synthetic_scores

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
    from chexdino.inference import prompt_settings

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


# ---------------------------------------------------------------- ensemble


def test_ensemble_probabilities() -> None:
    probs, _ = synthetic_scores(n=30)
    np.testing.assert_allclose(ensemble_probabilities([probs, probs, probs]), probs, rtol=1e-15)
    other = np.random.default_rng(0).random(probs.shape)
    np.testing.assert_allclose(ensemble_probabilities([probs, other]), (probs + other) / 2)
    with pytest.raises(ValueError, match="shape"):
        ensemble_probabilities([probs, other[:-1]])
    with pytest.raises(ValueError):
        ensemble_probabilities([])
