"""Stage 1 on the synthetic MIMIC-CXR tables: every record lands once, labels join by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chexdino import LABELS
from chexdino.config import SelectConfig
from chexdino.errors import ConfigError
from chexdino.selection import (
    mimic_studies,
    read_manifest,
    select_chexpert_test,
    select_mimic,
    write_manifest,
)


def run_select(root, **kw):
    m = root / "mimic"
    return select_mimic(m / "mimic-cxr-2.0.0-split.csv.gz", m / "mimic-cxr-2.0.0-metadata.csv.gz",
                        m / "mimic-cxr-2.0.0-chexpert.csv.gz", m, m, ".dcm",
                        SelectConfig.from_section(kw))


def test_frontal_selection_accounts_for_every_record(small_demo):
    root, _ = small_demo
    meta = pd.read_csv(root / "mimic" / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str,
                       keep_default_na=False)
    manifest, rejects = run_select(root)
    assert len(manifest) + len(rejects) == len(meta)
    assert set(manifest["dicom_id"]).isdisjoint(rejects["dicom_id"])
    assert set(manifest["view"]) <= {"PA", "AP"}
    assert (rejects["reason"].str.contains("LATERAL not in select.views")).any()
    blank = meta.loc[meta["ViewPosition"] == "", "dicom_id"]
    assert set(blank) <= set(rejects["dicom_id"])
    assert (manifest["image_path"].str.endswith(".dcm")).all()
    first = manifest.iloc[0]
    assert f"/files/p{first.subject_id[:2]}/p{first.subject_id}/s{first.study_id}/" in \
        first.image_path


def test_blank_views_kept_when_configured(small_demo):
    root, _ = small_demo
    manifest, _ = run_select(root, missing_view="keep")
    assert (manifest["view"] == "").any()
    with pytest.raises(ConfigError, match="select.missing_view"):
        run_select(root, missing_view="maybe")


def test_labels_join_by_study_and_column_name(small_demo, tmp_path):
    root, _ = small_demo
    labels = pd.read_csv(root / "mimic" / "mimic-cxr-2.0.0-chexpert.csv.gz", dtype=str)
    # Shuffle the label columns: selection by name must give the same manifest.
    shuffled = labels[["study_id", "subject_id", *reversed(LABELS)]]
    m = root / "mimic"
    path = tmp_path / "shuffled.csv.gz"
    shuffled.to_csv(path, index=False)
    a, _ = run_select(root)
    b, _ = select_mimic(m / "mimic-cxr-2.0.0-split.csv.gz", m / "mimic-cxr-2.0.0-metadata.csv.gz",
                        path, m, m, ".dcm", SelectConfig.from_section())
    pd.testing.assert_frame_equal(a, b)
    row = a.iloc[0]
    truth = labels.set_index("study_id").loc[row.study_id, "Cardiomegaly"]
    expected = float(truth) if isinstance(truth, str) and truth else np.nan
    assert (np.isnan(expected) and np.isnan(row.Cardiomegaly)) or row.Cardiomegaly == expected


def test_max_images_rejects_the_rest_with_reason(small_demo, tmp_path):
    root, _ = small_demo
    manifest, rejects = run_select(root, max_images=5)
    assert len(manifest) == 5
    assert rejects["reason"].str.contains(r"beyond select.max_images \(5\)").sum() > 0
    write_manifest(manifest, rejects, tmp_path / "m.csv", tmp_path / "r.csv")
    back = read_manifest(tmp_path / "m.csv")
    assert list(back["dicom_id"]) == list(manifest["dicom_id"])
    assert pd.api.types.is_string_dtype(back["study_id"]) and back["Cardiomegaly"].dtype == float


def test_missing_table_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="mimic.split_csv: file not found"):
        select_mimic(tmp_path / "nope.csv.gz", tmp_path / "m", tmp_path / "c", tmp_path,
                     tmp_path, ".jpg", SelectConfig.from_section())


def test_chexpert_test_layout(small_demo):
    root, _ = small_demo
    c = root / "chexpert"
    manifest, rejects = select_chexpert_test(c / "groundtruth.csv", c / "CheXpert-v1.0")
    truth = pd.read_csv(c / "groundtruth.csv")
    assert len(manifest) == len(truth) and rejects.empty
    assert manifest["image_path"].iloc[0].endswith(
        f"CheXpert-v1.0/{truth['Study'].iloc[0]}/view1_frontal.jpg")
    for lab in LABELS:
        assert list(manifest[lab]) == list(truth[lab].astype(float))


def test_study_table_lists_every_study_of_the_split_table_whatever_the_views(small_demo):
    root, _ = small_demo
    m = root / "mimic"
    split = pd.read_csv(m / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    studies = mimic_studies(m / "mimic-cxr-2.0.0-split.csv.gz", m)
    assert sorted(studies["study_id"]) == sorted(split["study_id"].unique())
    manifest, _ = select_mimic(m / "mimic-cxr-2.0.0-split.csv.gz",
                               m / "mimic-cxr-2.0.0-metadata.csv.gz",
                               m / "mimic-cxr-2.0.0-chexpert.csv.gz", m, m, ".jpg",
                               SelectConfig.from_section({"views": ["PA"]}))
    by_study = studies.set_index("study_id")["report_path"]
    assert (manifest["report_path"] == manifest["study_id"].map(by_study)).all()
