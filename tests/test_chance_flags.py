"""Labels scored worse than chance are flagged: auroc.csv's ``flag``, summary.json, the log,
the printed table and the landing page (CheXzero's "No Finding" prompt pair scored 0.07)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import torch

from chexdino import metrics, scorecard, zeroshot
from chexdino.evaluate import log_chance_flags
from chexdino.run_summary import landing_summary
from conftest import SEED


def no_finding_probabilities(positive: list[str], negative: list[str]) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    """Zero-shot "No Finding" probabilities of 60 films through the real scoring functions,
    with a text encoder that places "no finding" near abnormal films (as CheXzero's did)."""
    rng = np.random.default_rng(0)
    normal, abnormal = torch.eye(4)[0], torch.eye(4)[1]
    words = {"no acute cardiopulmonary process": normal, "no no finding": normal,
             "acute cardiopulmonary process": abnormal, "no finding": abnormal}
    target = rng.random(60) < 0.4  # True: No Finding
    films = torch.where(torch.from_numpy(target)[:, None], normal, abnormal)
    films = films + 0.8 * torch.from_numpy(rng.normal(size=(60, 4))).float()
    pos, neg = zeroshot.class_embeddings(lambda texts: torch.stack([words[t] for t in texts]),
                                         {"No Finding": (positive, negative)})
    prob = zeroshot.zero_shot_probabilities(films, pos, neg)
    return prob, target.astype(float)[:, None]


def test_inverted_no_finding_prompts_are_flagged_everywhere(tmp_path, caplog):
    good, y = no_finding_probabilities(["no acute cardiopulmonary process"],
                                       ["acute cardiopulmonary process"])
    table = metrics.auroc_table(good, y, ["No Finding"], n_bootstrap=200, seed=SEED)
    assert table.loc[0, "auroc"] > 0.8 and table.loc[0, "flag"] == ""

    chexzero, _ = no_finding_probabilities(["no finding"], ["no no finding"])
    table = metrics.auroc_table(chexzero, y, ["No Finding"], n_bootstrap=200, seed=SEED)
    assert table.loc[0, "ci_high"] < 0.5 and table.loc[0, "flag"] == metrics.BELOW_CHANCE
    summary = metrics.headline(table, [])
    summary["flags"] = metrics.chance_flags(table)
    assert summary["flags"] == {"below_chance": ["No Finding"], "auroc_below_half": []}

    ids = pd.DataFrame({"dicom_id": [f"d{i}" for i in range(len(y))]})
    scorecard.write_scorecard(tmp_path, ids, chexzero, y, ["No Finding"], table, summary)
    written = pd.read_csv(tmp_path / "auroc.csv", keep_default_na=False)
    assert list(written["flag"]) == [metrics.BELOW_CHANCE]
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["headline"]["flags"]["below_chance"] == ["No Finding"]
    assert doc["per_label"]["No Finding"]["flag"] == metrics.BELOW_CHANCE
    assert metrics.CHANCE_ADVICE in scorecard.format_table(table, summary)

    with caplog.at_level(logging.WARNING, logger="chexdino.evaluate"):
        log_chance_flags(table)
    assert "No Finding" in caplog.text and metrics.CHANCE_ADVICE in caplog.text

    landing = landing_summary({"input_records": 1, "kept": 1, "rejected": 0}, {},
                              {"chexpert_test": doc["headline"]})
    assert "worse than chance" in landing and "No Finding (CI below 0.5)" in landing


def test_an_auroc_below_half_whose_ci_reaches_half_gets_the_weaker_flag():
    assert metrics.chance_flag(0.45, 0.55) == metrics.UNDER_HALF
    assert metrics.chance_flag(0.45, 0.49) == metrics.BELOW_CHANCE
    assert metrics.chance_flag(0.45, float("nan")) == metrics.UNDER_HALF  # no bootstrap
    assert metrics.chance_flag(0.5, 0.6) == metrics.chance_flag(float("nan"), float("nan")) == ""
    table = pd.DataFrame({"label": ["a", "b", "c"], "auroc": [0.45, 0.3, 0.7],
                          "ci_high": [0.55, 0.4, 0.8]})
    assert metrics.chance_flags(table) == {"below_chance": ["b"], "auroc_below_half": ["a"]}
