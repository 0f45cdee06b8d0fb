"""Tests for the zero-shot scorecard: its files parse back, the ROC figure, the text table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from chexdino import LABELS
from chexdino import roc_plot as plots
from chexdino.metrics import auroc_table, headline
from chexdino.scorecard import format_table, write_scorecard
from conftest import SEED, synthetic_scores


def test_write_scorecard_outputs_parse_back(tmp_path: Path) -> None:
    n = 90
    probs, targets = synthetic_scores(n=n, n_labels=len(LABELS), seed=8)
    targets[:, list(LABELS).index("Fracture")] = 0.0  # one undefined panel
    ids = pd.DataFrame({"study_id": np.arange(50_000_000, 50_000_000 + n), "split": "test"})
    ids.index = np.arange(1000, 1000 + n)  # a non-default index must not misalign rows
    table = auroc_table(probs, targets, LABELS, n_bootstrap=50, seed=SEED)
    summary = headline(table)
    paths = write_scorecard(tmp_path / "out", ids, probs, targets, LABELS, table, summary)
    assert set(paths) == {"probabilities", "auroc", "summary", "roc"}

    pr = pd.read_csv(paths["probabilities"])
    assert pr.shape == (n, 2 + len(LABELS))
    assert list(pr.columns[:2]) == ["study_id", "split"]
    np.testing.assert_array_equal(pr["study_id"], ids["study_id"])
    np.testing.assert_allclose(pr[[f"prob_{lab}" for lab in LABELS]].to_numpy(), probs)

    au = pd.read_csv(paths["auroc"])
    assert au.shape == (len(LABELS), 8)
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
    probs, targets = synthetic_scores(n=60, n_labels=len(LABELS), seed=2)
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
    probs, targets = synthetic_scores(n=200, n_labels=len(LABELS), seed=5)
    targets[:, list(LABELS).index("Fracture")] = 0.0
    table = auroc_table(probs, targets, LABELS, n_bootstrap=50, seed=SEED)
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
