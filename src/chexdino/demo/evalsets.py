"""Small copies of the extra zero-shot sets' official layouts (:mod:`chexdino.evalsets`).

* ``rsna/``: ``stage_2_train_labels.csv`` (a row per box, ``Target`` 0/1) and
  ``stage_2_train_images/<patientId>.dcm``; pneumonia films carry a consolidation.
* ``siim/``: ``train-rle.csv`` (``ImageId, EncodedPixels``, ``-1`` = none, a row per mask) and
  ``dicom-images-train/<study uid>/<series uid>/<ImageId>.dcm``; pneumothorax films show one.
* ``chexpert/CheXpert-v1.0/train.csv`` and its JPGs: ``per_class`` single-positive frontal
  studies per competition label, plus rows a 5x200 draw must skip (two positives, an
  uncertain label, lateral views).

Each set lists one record whose film is missing, so its reject table is exercised. Films
come from the same phantom as the MIMIC-CXR demo, each with its own seeded rng.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from chexdino import COMPETITION_LABELS, LABELS
from chexdino.demo.dicom_files import draw_encodings, draw_image_size, encode_dicom, jpeg_bytes
from chexdino.demo.draws import draw_uid, pick
from chexdino.demo.findings import NAN, draw_findings, signs_for
from chexdino.demo.phantom import render_frontal

TRAIN_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding",
                 "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                 "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
                 "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices")


def write_film(task: tuple) -> str:
    """Render one frontal film; write it as DICOM (``enc`` given) or JPG."""
    seed, key, rows, cols, signs, path, meta, enc = task
    disp = render_frontal(np.random.default_rng([seed, *key]), rows, cols, signs, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_dicom(disp, meta, enc, {})[0] if enc else jpeg_bytes(disp))
    return str(path)


def _findings(rng: np.random.Generator, positive: dict[str, float]):
    f = draw_findings(rng, competition_only_binary=True)
    f.state = {name: (1.0 if f.state[name] == 1.0 else NAN) for name in LABELS}
    f.state.update(positive)
    return f


def _dicom_meta(rng: np.random.Generator, patient: str, instance: int) -> dict:
    return {"sop_uid": draw_uid(rng), "study_uid": draw_uid(rng), "series_uid": draw_uid(rng),
            "subject_id": patient, "study_id": "1", "date": "21000101",
            "time": "120000.000", "view": pick(rng, ["PA", "AP"]), "procedure": "CHEST",
            "instance": instance}


def plan_rsna(outdir: Path, n: int, seed: int, long_side: tuple[int, int]) -> list[tuple]:
    """``rsna/``: ``n`` films (~1/3 pneumonia, some with two boxes), one more listed, absent."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
    root = outdir / "rsna"
    encodings = draw_encodings(rng, n, {})
    rows_out, tasks = [], []
    for k in range(n + 1):
        pid = "-".join(rng.bytes(m).hex() for m in (4, 2, 2, 2, 6))
        positive = rng.random() < 0.35
        boxes = 1 + int(rng.random() < 0.5) if positive else 0
        for _ in range(boxes):
            x, y = rng.integers(100, 500, 2)
            rows_out.append([pid, float(x), float(y), float(rng.integers(100, 300)),
                             float(rng.integers(150, 400)), 1])
        if not boxes:
            rows_out.append([pid, "", "", "", "", 0])
        if k == n:
            break  # listed in the table, no film on disk
        state = {"Consolidation": 1.0, "Pneumonia": 1.0} if positive else {
            "Consolidation": NAN, "Pneumonia": NAN}
        signs = signs_for(_findings(rng, state), rng)
        rows, cols = draw_image_size(rng, long_side, "square")
        path = root / "stage_2_train_images" / f"{pid}.dcm"
        tasks.append((seed, (4, k), rows, cols, signs, path, _dicom_meta(rng, pid, 1),
                      encodings[k]))
    root.mkdir(parents=True, exist_ok=True)
    with (root / "stage_2_train_labels.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["patientId", "x", "y", "width", "height", "Target"])
        w.writerows(rows_out)
    return tasks


def plan_siim(outdir: Path, n: int, seed: int, long_side: tuple[int, int]) -> list[tuple]:
    """``siim/``: ``n`` nested DICOMs (~1/3 pneumothorax, some with two masks), one more
    listed in ``train-rle.csv`` with no file."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    root = outdir / "siim"
    encodings = draw_encodings(rng, n, {})
    rows_out, tasks = [], []
    for k in range(n + 1):
        image_id = draw_uid(rng)
        positive = rng.random() < 0.35
        masks = 1 + int(rng.random() < 0.4) if positive else 0
        for _ in range(masks):
            start = int(rng.integers(100_000, 600_000))
            runs = " ".join(f"{int(rng.integers(900, 1010))} {int(rng.integers(5, 40))}"
                            for _ in range(4))
            rows_out.append([image_id, f" {start} {int(rng.integers(5, 40))} {runs}"])
        if not masks:
            rows_out.append([image_id, " -1"])
        if k == n:
            break
        state = {"Pneumothorax": 1.0 if positive else NAN}
        signs = signs_for(_findings(rng, state), rng)
        rows, cols = draw_image_size(rng, long_side, "square")
        meta = _dicom_meta(rng, f"siim{k}", 1)
        meta["sop_uid"] = image_id
        path = (root / "dicom-images-train" / meta["study_uid"] / meta["series_uid"]
                / f"{image_id}.dcm")
        tasks.append((seed, (5, k), rows, cols, signs, path, meta, encodings[k]))
    root.mkdir(parents=True, exist_ok=True)
    with (root / "train-rle.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["ImageId", " EncodedPixels"])
        w.writerows(rows_out)
    return tasks


def plan_chexpert_train(outdir: Path, per_class: int, seed: int,
                        long_side: tuple[int, int]) -> list[tuple]:
    """``chexpert/CheXpert-v1.0/train.csv``: ``per_class`` single-positive frontal studies per
    competition label plus, per label, a two-positive, an uncertain and a lateral one."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 6]))
    root = outdir / "chexpert"
    rows_out, tasks = [], []
    kinds = ["single"] * per_class + ["two", "uncertain", "lateral"]
    for c, name in enumerate(COMPETITION_LABELS):
        for kind in kinds:
            k = len(rows_out)
            state = {lab: (pick(rng, [NAN, 0.0]) if lab in COMPETITION_LABELS else NAN)
                     for lab in LABELS}
            state[name] = 1.0
            other = COMPETITION_LABELS[(c + 1) % len(COMPETITION_LABELS)]
            if kind == "two":
                state[other] = 1.0
            elif kind == "uncertain":
                state[other] = -1.0
            f = _findings(rng, {})
            f.state = state
            frontal = kind != "lateral"
            study = f"CheXpert-v1.0/train/patient{10000 + k:05d}/study1"
            path = f"{study}/view1_{'frontal' if frontal else 'lateral'}.jpg"
            rows_out.append([path, pick(rng, ["Female", "Male"]), int(rng.integers(20, 90)),
                             "Frontal" if frontal else "Lateral",
                             pick(rng, ["AP", "PA"]) if frontal else "",
                             *["" if np.isnan(state[col]) else state[col]
                               for col in TRAIN_COLUMNS[5:]]])
            if k == 0:
                continue  # listed in train.csv, no film on disk
            rows, cols = draw_image_size(rng, long_side, "portrait")
            signs = signs_for(f, rng)
            tasks.append((seed, (6, k), rows, cols, signs, root / path, None, None))
    (root / "CheXpert-v1.0").mkdir(parents=True, exist_ok=True)
    with (root / "CheXpert-v1.0" / "train.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(TRAIN_COLUMNS)
        w.writerows(rows_out)
    return tasks
