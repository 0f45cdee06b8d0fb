"""CheXzero's published AUROCs beside ours: difference, inside-CI flag, the mean row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexdino import COMPETITION_LABELS
from chexdino.errors import ChexdinoError
from chexdino.published import MEAN_ROW, compare, read_published

DATA = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "published_auroc.csv"


def test_the_data_file_holds_chexzero_ensemble_values_with_their_source():
    rows = read_published(DATA, "chexpert_test").set_index("label")
    assert list(rows.index) == list(COMPETITION_LABELS)
    assert rows["auroc"].round(3).tolist() == [0.812, 0.913, 0.890, 0.899, 0.932]
    assert round(rows["auroc"].mean(), 3) == 0.889
    assert rows["source"].str.contains("doi:10.1038/s41551-022-00936-9").all()


def test_comparison_gives_difference_and_whether_published_is_inside_our_ci():
    ours = pd.DataFrame({"label": [*COMPETITION_LABELS, "Fracture"],
                         "auroc": [0.80, 0.95, 0.70, 0.90, np.nan, 0.5],
                         "ci_low": [0.75, 0.93, 0.60, 0.85, np.nan, 0.4],
                         "ci_high": [0.85, 0.97, 0.80, 0.95, np.nan, 0.6]})
    headline = {"mean_auroc_competition": None, "mean_auroc_competition_ci": [None, None]}
    table = compare(ours, headline, read_published(DATA, "chexpert_test")).set_index("label")
    assert table.loc["Atelectasis", "difference"] == pytest.approx(0.80 - 0.812)
    assert table.loc["Atelectasis", "published_inside_ci"] == "yes"
    assert table.loc["Cardiomegaly", "published_inside_ci"] == "no"  # 0.913 < 0.93
    assert table.loc["Consolidation", "published_inside_ci"] == "no"  # 0.890 > 0.80
    assert table.loc["Pleural Effusion", "published_inside_ci"] == "n/a"  # ours undefined
    assert table.loc[MEAN_ROW, "published"] == pytest.approx(0.8892)
    assert "Fracture" not in table.index  # only labels with a published value

    headline = {"mean_auroc_competition": 0.86, "mean_auroc_competition_ci": [0.84, 0.88]}
    mean = compare(ours, headline, read_published(DATA, "chexpert_test")).iloc[-1]
    assert (mean["label"], mean["published_inside_ci"]) == (MEAN_ROW, "no")
    assert mean["difference"] == pytest.approx(0.86 - 0.8892)


def test_a_malformed_published_file_is_named(tmp_path):
    bad = tmp_path / "published.csv"
    bad.write_text("model,eval_set,label,auroc\nX,chexpert_test,Edema,0.9\n")
    with pytest.raises(ChexdinoError, match=r"published.csv lacks columns \['source'\]"):
        read_published(bad, "chexpert_test")
    bad.write_text("model,eval_set,label,auroc,source\nX,chexpert_test,Edema,89.9,paper\n")
    with pytest.raises(ChexdinoError, match="outside"):
        read_published(bad, "chexpert_test")
    with pytest.raises(ChexdinoError, match="no rows"):
        read_published(DATA, "mimic_test")


def test_models_side_by_side_one_column_each(tmp_path):
    from chexdino.cli import main
    from chexdino.config import semantic_problems

    ours = pd.DataFrame({"label": ["Edema", "Fracture"], "auroc": [0.9, np.nan],
                         "ci_low": [0.85, np.nan], "ci_high": [0.95, np.nan]})
    theirs = pd.DataFrame({"label": ["Edema", "Pneumonia"], "auroc": [0.7, 0.6],
                           "ci_low": [0.6, 0.5], "ci_high": [0.8, 0.7]})
    folders = []
    for name, table, mean in (("ours", ours, 0.81), ("theirs", theirs, None)):
        folder = tmp_path / name
        folder.mkdir()
        table.to_csv(folder / "auroc.csv", index=False)
        (folder / "summary.json").write_text(json.dumps({"headline": {
            "mean_auroc_competition": mean, "mean_auroc_competition_ci": [0.8, 0.82]
            if mean else [None, None]}}))
        folders.append(str(folder))
    out = tmp_path / "model_comparison.csv"
    assert main(["compare-models", "--names", "this-run", "other", "--scorecards", *folders,
                 "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False).set_index("label")
    assert list(table.columns) == ["this-run", "other"]
    assert table.loc["Edema"].tolist() == ["0.900 [0.850, 0.950]", "0.700 [0.600, 0.800]"]
    assert table.loc["Fracture"].tolist() == ["n/a", "n/a"]
    assert table.loc["Pneumonia"].tolist() == ["n/a", "0.600 [0.500, 0.700]"]
    assert table.loc[MEAN_ROW].tolist() == ["0.810 [0.800, 0.820]", "n/a"]
    assert main(["compare-models", "--names", "a", "--scorecards", *folders,
                 "--out", str(out)]) == 2  # one name per folder, said clearly

    problems = list(semantic_problems({"compare_models": {"x": str(tmp_path / "ours")}}))
    assert (f"compare_models.x: {tmp_path / 'ours'} is not a model folder "
            "(no open_clip_config.json)") in problems
