"""More zero-shot evaluation sets, each read from its official layout into the standard manifest.

* RSNA Pneumonia Detection Challenge: ``stage_2_train_labels.csv`` (``patientId, x, y, width,
  height, Target``; one row per box, so several rows per patient) and
  ``stage_2_train_images/<patientId>.dcm``. One manifest row per image; Pneumonia = 1 when any
  of its rows has Target 1.
* SIIM-ACR Pneumothorax: ``train-rle.csv`` (``ImageId, EncodedPixels``; ``-1`` = no
  pneumothorax; one row per mask, so several rows per image) and DICOMs named
  ``<ImageId>.dcm`` anywhere under a root folder (the official tree nests them
  ``dicom-images-train/<study>/<series>/``), found by one recursive search.
  Pneumothorax = 1 when any of its rows has a mask.
* CheXpert 5x200 (GLoRIA, MGCA): from CheXpert's ``train.csv``, frontal images only, per class
  ``per_class`` studies whose class label is positive (1.0) and whose other classes are blank
  or 0.0 (GLoRIA fills blanks with 0 and keeps rows whose other competition labels are exactly
  0, so an uncertain -1 excludes a row), drawn by a fixed seed. Scored as a
  ``len(labels)``-way zero-shot accuracy (:func:`class_accuracy`).

Each reader returns ``(manifest, rejects)`` like :mod:`chexdino.selection`: the manifest has
:data:`~chexdino.tables.MANIFEST_COLUMNS`, the set's labels filled and every other label NaN;
a record whose image file is missing is in the rejects with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chexdino import LABELS
from chexdino.config import EvaluateConfig
from chexdino.errors import ConfigError
from chexdino.tables import MANIFEST_COLUMNS, SELECT_REJECT_COLUMNS

SELECTION_COLUMNS = ("Path", "class")
"""The reusable 5x200 selection: CheXpert ``train.csv`` paths and the class each stands for."""


def _read_csv(path: Path, key: str, required: Sequence[str]) -> pd.DataFrame:
    if not Path(path).is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [str(c).strip() for c in table.columns]  # SIIM's " EncodedPixels"
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ConfigError(f"{key}: {path} lacks columns {missing} (has {list(table.columns)})")
    return table.apply(lambda col: col.str.strip())


def _manifest(ids: Sequence[str], paths: Sequence[str], labels: dict[str, Sequence[float]],
              view: str = "frontal", study_ids: Sequence[str] | None = None,
              subject_ids: Sequence[str] | None = None) -> pd.DataFrame:
    ids = list(ids)
    frame = pd.DataFrame({
        "dicom_id": ids,
        "study_id": list(study_ids) if study_ids is not None else ids,
        "subject_id": list(subject_ids) if subject_ids is not None else ids,
        "split": "test",
        "view": view,
        "image_path": [str(p) for p in paths],
        "report_path": "",
    })
    for lab in LABELS:
        frame[lab] = np.asarray(labels[lab], dtype=float) if lab in labels else np.nan
    return frame[list(MANIFEST_COLUMNS)]


def _split_missing(manifest: pd.DataFrame, found: Sequence[bool],
                   reasons: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows whose image exists stay in the manifest; the others go to the rejects."""
    found = np.asarray(found, dtype=bool)
    rejects = manifest.loc[~found, list(SELECT_REJECT_COLUMNS[:-1])].copy()
    rejects["reason"] = [r for r, ok in zip(reasons, found, strict=True) if not ok]
    return (manifest.loc[found].reset_index(drop=True),
            rejects[list(SELECT_REJECT_COLUMNS)].reset_index(drop=True))


def _binary(values: pd.Series, key: str, path: Path, allowed: Sequence[str]) -> None:
    bad = sorted(set(values) - set(allowed))
    if bad:
        raise ConfigError(f"{key}: {path} has values {bad[:5]} (expected {list(allowed)})")


def select_rsna_pneumonia(labels_csv: Path, image_root: Path,
                          label: str = "Pneumonia") -> tuple[pd.DataFrame, pd.DataFrame]:
    """RSNA Pneumonia: one row per ``patientId`` (one film each), ``label`` = max(Target)."""
    key = "rsna_pneumonia.labels_csv"
    table = _read_csv(labels_csv, key, ["patientId", "Target"])
    _binary(table["Target"], key, labels_csv, ["0", "1"])
    target = table.assign(Target=table["Target"].astype(int)).groupby(
        "patientId", sort=False)["Target"].max()
    paths = [Path(image_root) / f"{pid}.dcm" for pid in target.index]
    manifest = _manifest(list(target.index), paths, {label: target.to_numpy(float)})
    found = [p.is_file() for p in paths]
    return _split_missing(manifest, found, [f"image file not found: {p}" for p in paths])


def find_dicoms(root: Path) -> tuple[dict[str, Path], set[str]]:
    """``{stem: path}`` of every ``*.dcm`` under ``root`` (one recursive search), and the stems
    found more than once (ambiguous: such images are rejected, not guessed)."""
    if not Path(root).is_dir():
        raise ConfigError(f"siim_pneumothorax.image_root: folder not found: {root}")
    found: dict[str, Path] = {}
    twice: set[str] = set()
    for path in sorted(Path(root).rglob("*.dcm")):
        stem = path.name[: -len(".dcm")]
        if stem in found:
            twice.add(stem)
        found.setdefault(stem, path)
    return found, twice


def select_siim_pneumothorax(rle_csv: Path, image_root: Path,
                             label: str = "Pneumothorax") -> tuple[pd.DataFrame, pd.DataFrame]:
    """SIIM-ACR: one row per ``ImageId``; ``label`` = 1 when any of its rows has a mask."""
    table = _read_csv(rle_csv, "siim_pneumothorax.rle_csv", ["ImageId", "EncodedPixels"])
    blank = table["EncodedPixels"] == ""
    if blank.any():
        raise ConfigError(f"siim_pneumothorax.rle_csv: {rle_csv} has {int(blank.sum())} rows "
                          "with empty EncodedPixels (expected -1 or a run-length mask)")
    positive = (table["EncodedPixels"] != "-1").groupby(table["ImageId"], sort=False).any()
    files, twice = find_dicoms(Path(image_root))
    paths = [str(files.get(i, "")) for i in positive.index]
    manifest = _manifest(list(positive.index), paths, {label: positive.to_numpy(float)})
    found = [bool(p) and i not in twice for i, p in zip(positive.index, paths, strict=True)]
    reasons = [f"{i}.dcm found more than once under {image_root}" if i in twice
               else f"no {i}.dcm under {image_root}" for i in positive.index]
    return _split_missing(manifest, found, reasons)


def chexpert_5x200_selection(train_csv: Path, classes: Sequence[str], per_class: int,
                             seed: int) -> pd.DataFrame:
    """``Path, class``: ``per_class`` frontal studies per class, drawn by ``seed``.

    A candidate for class c is a frontal image whose c is 1.0 and whose other classes are
    blank or 0.0; one image per study (its first frontal path). Candidates are sorted by path
    before drawing, so the draw depends on the table's content and ``seed`` only, not on the
    row order. Fewer candidates than ``per_class`` for a class is an error naming it.
    """
    key = "chexpert_5x200.train_csv"
    table = _read_csv(train_csv, key, ["Path", "Frontal/Lateral", *classes])
    frontal = table[table["Frontal/Lateral"] == "Frontal"].copy()
    values = frontal[list(classes)].replace("", "0.0")
    numeric = values.apply(pd.to_numeric, errors="coerce")
    if numeric.isna().to_numpy().any():
        raise ConfigError(f"{key}: {train_csv} has label values that are not numbers")
    frontal["study"] = frontal["Path"].str.rsplit("/", n=1).str[0]
    frontal = frontal.sort_values("Path").drop_duplicates("study")
    numeric = numeric.loc[frontal.index]
    parts = []
    for k, name in enumerate(classes):
        others = [c for c in classes if c != name]
        ok = (numeric[name] == 1.0) & (numeric[others] == 0.0).all(axis=1)
        candidates = frontal.loc[ok, "Path"].sort_values().to_numpy()
        if len(candidates) < per_class:
            raise ConfigError(f"chexpert_5x200: {len(candidates)} frontal studies with only "
                              f"{name} positive in {train_csv}; per_class is {per_class}")
        rng = np.random.default_rng([seed, k])
        chosen = np.sort(rng.choice(len(candidates), size=per_class, replace=False))
        parts.append(pd.DataFrame({"Path": candidates[chosen], "class": name}))
    return pd.concat(parts, ignore_index=True)[list(SELECTION_COLUMNS)]


def select_chexpert_5x200(selection: pd.DataFrame, image_root: Path,
                          classes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest of a 5x200 selection: one-hot labels over ``classes``, NaN elsewhere.

    ``Path`` is relative to ``image_root`` (the folder holding ``CheXpert-v1.0``).
    """
    paths = [Path(image_root) / p for p in selection["Path"]]
    study = selection["Path"].str.rsplit("/", n=1).str[0]
    ids = selection["Path"].str.replace(r"\.[A-Za-z]+$", "", regex=True).str.replace("/", "_")
    subject = selection["Path"].str.extract(r"(patient\d+)", expand=False).fillna("")
    labels = {c: (selection["class"] == c).to_numpy(float) for c in classes}
    manifest = _manifest(list(ids), paths, labels, study_ids=list(study),
                         subject_ids=list(subject))
    found = [p.is_file() for p in paths]
    return _split_missing(manifest, found, [f"image file not found: {p}" for p in paths])


def class_accuracy(probs: np.ndarray, truth: Sequence[str], classes: Sequence[str],
                   n_bootstrap: int, seed: int) -> pd.DataFrame:
    """N-way zero-shot accuracy: each image's predicted class is the argmax of its CheXzero
    pair probabilities over ``classes`` (columns of ``probs``, in that order).

    Rows ``label`` (each class: the share of its images predicted as it; ``overall``: all),
    ``accuracy``, ``ci_low``, ``ci_high`` (95% percentile bootstrap over images, ``seed``),
    ``n``, ``n_correct``. GLoRIA argmaxes raw class-prompt similarities instead; the pair
    probability is monotone in (similarity to "c" minus similarity to "no c"), so the two can
    differ when the negative prompts differ in similarity.
    """
    probs = np.asarray(probs, dtype=float)
    truth = np.asarray(list(truth), dtype=object)
    if probs.ndim != 2 or probs.shape != (len(truth), len(classes)):
        raise ValueError(f"probs {probs.shape} do not match {len(truth)} images x "
                         f"{len(classes)} classes")
    unknown = sorted(set(truth) - set(classes))
    if unknown:
        raise ValueError(f"true classes {unknown} are not among {list(classes)}")
    predicted = np.asarray(classes, dtype=object)[np.argmax(probs, axis=1)]
    correct = predicted == truth
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, len(truth), len(truth)) for _ in range(n_bootstrap)]
    rows = []
    for name in [*classes, "overall"]:
        mask = np.ones(len(truth), bool) if name == "overall" else truth == name
        n = int(mask.sum())
        acc = float(correct[mask].mean()) if n else float("nan")
        boot = []
        for idx in resamples:
            m = mask[idx]
            if m.any():
                boot.append(correct[idx][m].mean())
        low, high = (np.quantile(boot, [0.025, 0.975]) if boot else (np.nan, np.nan))
        rows.append({"label": name, "accuracy": acc, "ci_low": float(low),
                     "ci_high": float(high), "n": n, "n_correct": int(correct[mask].sum())})
    return pd.DataFrame(rows)


def write_tables(manifest: pd.DataFrame, rejects: pd.DataFrame, manifest_csv: Path,
                 rejects_csv: Path, selection: pd.DataFrame | None = None,
                 selection_csv: Path | None = None) -> None:
    """The manifest and rejects (as :func:`chexdino.selection.write_manifest`), and a 5x200
    selection when given."""
    from chexdino.selection import write_manifest

    write_manifest(manifest, rejects, Path(manifest_csv), Path(rejects_csv))
    if selection is not None and selection_csv is not None:
        selection.to_csv(selection_csv, index=False)


def write_accuracy(probabilities_csv: Path, manifest_csv: Path, settings: EvaluateConfig,
                   out_csv: Path) -> pd.DataFrame:
    """``accuracy.csv`` of a scored N-way set: the evaluate stage's ``probabilities.csv``
    joined by ``dicom_id`` to the manifest's one-hot labels over ``settings.labels``
    (bootstrap and seed from ``settings`` too, the set's evaluate section)."""
    from chexdino.selection import read_manifest

    classes = list(settings.labels)
    probs = pd.read_csv(probabilities_csv, dtype={"dicom_id": str})
    manifest = read_manifest(Path(manifest_csv)).set_index("dicom_id")
    onehot = manifest.loc[probs["dicom_id"], classes].to_numpy(float)
    if not (np.nan_to_num(onehot) == 1.0).sum(axis=1).tolist() == [1] * len(onehot):
        raise ValueError(f"{manifest_csv}: every image needs exactly one positive class")
    truth = np.asarray(classes)[np.argmax(np.nan_to_num(onehot), axis=1)]
    table = class_accuracy(probs[[f"prob_{c}" for c in classes]].to_numpy(float), truth,
                           classes, settings.bootstrap, settings.seed)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    return table
