"""Stage 1: choose the images to use from MIMIC-CXR's official tables (or a CheXpert test set).

The output is a manifest, one row per image, with the columns every later stage reads:
``dicom_id, study_id, subject_id, split, view, image_path, report_path`` and the 14 CheXpert
label columns (1 / 0 / -1 / blank). Every metadata row not in the manifest is in the reject
table with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chexdino import LABELS
from chexdino.config import SelectConfig
from chexdino.errors import ConfigError
from chexdino.tables import MANIFEST_COLUMNS, SELECT_REJECT_COLUMNS


def mimic_study_dir(root: Path, subject_id: str, study_id: str) -> Path:
    """``files/pXX/pXXXXXXXX/sXXXXXXXX`` under ``root``, MIMIC-CXR's layout."""
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def _read_table(path: Path, key: str, required: Sequence[str]) -> pd.DataFrame:
    if not Path(path).is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ConfigError(f"{key}: {path} lacks columns {missing}")
    return table


def read_mimic_labels(path: Path) -> pd.DataFrame:
    """``-chexpert.csv.gz`` keyed by study_id, label columns chosen by name, blanks as NaN."""
    table = _read_table(path, "mimic.chexpert_csv", ["subject_id", "study_id", *LABELS])
    labels = table[["study_id", *LABELS]].copy()
    labels[list(LABELS)] = labels[list(LABELS)].replace("", np.nan).astype(float)
    return labels.drop_duplicates("study_id")


def select_mimic(
    split_csv: Path,
    metadata_csv: Path,
    chexpert_csv: Path,
    image_root: Path,
    report_root: Path,
    image_suffix: str,
    cfg: SelectConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest, rejects) for MIMIC-CXR; every metadata row lands in exactly one of them."""
    views, missing_view, splits, max_images = (cfg.views, cfg.missing_view, cfg.splits,
                                               cfg.max_images)
    if missing_view not in ("exclude", "keep"):
        raise ConfigError(f"select.missing_view: '{missing_view}' is not 'exclude' or 'keep'")
    split = _read_table(split_csv, "mimic.split_csv", ["dicom_id", "study_id", "subject_id",
                                                         "split"])
    meta = _read_table(metadata_csv, "mimic.metadata_csv", ["dicom_id", "ViewPosition"])
    rows = meta[["dicom_id", "ViewPosition"]].merge(split, on="dicom_id", how="left")
    rows = rows.rename(columns={"ViewPosition": "view"}).fillna({"split": ""})
    rows = rows.fillna("")
    reason = pd.Series("", index=rows.index)
    reason[rows["split"] == ""] = "not in the official split table"
    blank = (rows["view"] == "") & (reason == "")
    if missing_view == "exclude":
        reason[blank] = "blank ViewPosition (select.missing_view: exclude)"
    wrong_view = (rows["view"] != "") & ~rows["view"].isin(list(views)) & (reason == "")
    reason[wrong_view] = "view " + rows.loc[wrong_view, "view"] + " not in select.views"
    wrong_split = ~rows["split"].isin(list(splits)) & (reason == "")
    reason[wrong_split] = "split " + rows.loc[wrong_split, "split"] + " not in select.splits"
    if max_images is not None:
        kept_pos = np.flatnonzero((reason == "").to_numpy())
        reason.iloc[kept_pos[max_images:]] = f"beyond select.max_images ({max_images})"
    rows["reason"] = reason
    rejects = rows.loc[reason != "", list(SELECT_REJECT_COLUMNS)].reset_index(drop=True)
    kept = rows.loc[reason == ""].drop(columns="reason").reset_index(drop=True)
    kept = kept.merge(read_mimic_labels(chexpert_csv), on="study_id", how="left")
    kept["image_path"] = [
        str(mimic_study_dir(image_root, s, t) / f"{d}{image_suffix}")
        for d, s, t in zip(kept["dicom_id"], kept["subject_id"], kept["study_id"], strict=True)
    ]
    kept["report_path"] = [
        str(mimic_study_dir(report_root, s, t)) + ".txt"
        for s, t in zip(kept["subject_id"], kept["study_id"], strict=True)
    ]
    return kept[list(MANIFEST_COLUMNS)], rejects


def mimic_studies(split_csv: Path, report_root: Path) -> pd.DataFrame:
    """``study_id, subject_id, report_path`` of every study in the official split table.

    Report parsing reads this instead of the manifest: it does not depend on the view,
    split or ``max_images`` selection, so changing those reruns the image stages but not
    the reports (all 227,835 MIMIC-CXR reports parse in well under a minute).
    """
    split = _read_table(split_csv, "mimic.split_csv", ["study_id", "subject_id"])
    studies = split[["study_id", "subject_id"]].drop_duplicates("study_id")
    studies = studies.reset_index(drop=True)
    studies["report_path"] = [
        str(mimic_study_dir(Path(report_root), s, t)) + ".txt"
        for s, t in zip(studies["subject_id"], studies["study_id"], strict=True)
    ]
    return studies


def select_chexpert_test(groundtruth_csv: Path, image_root: Path) -> tuple[pd.DataFrame,
                                                                            pd.DataFrame]:
    """CheXpert test layout: ``Study`` + 14 label columns (by name); image ``view1_frontal.jpg``."""
    table = _read_table(groundtruth_csv, "chexpert_test.groundtruth_csv", ["Study"])
    present = [lab for lab in LABELS if lab in table.columns]
    if not present:
        raise ConfigError(f"chexpert_test.groundtruth_csv: {groundtruth_csv} has no label columns")
    study = table["Study"].str.strip("/")
    manifest = pd.DataFrame({
        "dicom_id": study.str.replace("/", "_") + "_view1_frontal",
        "study_id": study,
        "subject_id": study.str.extract(r"(patient\d+)", expand=False).fillna(""),
        "split": "test",
        "view": "frontal",
        "image_path": [str(Path(image_root) / s / "view1_frontal.jpg") for s in study],
        "report_path": "",
    })
    for lab in LABELS:
        values = table[lab].replace("", np.nan) if lab in table.columns else np.nan
        manifest[lab] = pd.to_numeric(values, errors="coerce") if lab in present else np.nan
    return manifest[list(MANIFEST_COLUMNS)], pd.DataFrame(columns=list(SELECT_REJECT_COLUMNS))


def write_manifest(manifest: pd.DataFrame, rejects: pd.DataFrame, manifest_csv: Path,
                   rejects_csv: Path) -> None:
    """Write both tables; all ids are strings, labels keep blanks as empty cells."""
    manifest_csv.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(manifest_csv, index=False)
    rejects.to_csv(rejects_csv, index=False)


def read_manifest(path: Path) -> pd.DataFrame:
    """Manifest with string ids and float labels (NaN = blank)."""
    dtypes = {c: str for c in MANIFEST_COLUMNS[:7]}
    manifest = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={
        lab: [""] for lab in LABELS})
    manifest[list(LABELS)] = manifest[list(LABELS)].astype(float)
    return manifest
