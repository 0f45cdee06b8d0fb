"""The extra zero-shot sets read from their official layouts (chexdino.evalsets): RSNA
Pneumonia, SIIM-ACR Pneumothorax and CheXpert 5x200, on tiny real-format fixtures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chexdino import LABELS
from chexdino.errors import ConfigError
from chexdino.evalsets import (
    chexpert_5x200_selection,
    class_accuracy,
    select_chexpert_5x200,
    select_rsna_pneumonia,
    select_siim_pneumothorax,
)
from chexdino.tables import MANIFEST_COLUMNS, SELECT_REJECT_COLUMNS
from conftest import MAX_FRAME_PIXELS

COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def write_dicom(path, uid: str = "1.2.3") -> None:
    """A 16 x 16 MONOCHROME2 film, explicit VR little endian, as pydicom writes it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    fm.MediaStorageSOPInstanceUID = uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = fm.MediaStorageSOPClassUID, uid, "CR"
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(256, dtype=np.uint16) * 16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def check_shape(manifest: pd.DataFrame, rejects: pd.DataFrame, scored: list[str]) -> None:
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert list(rejects.columns) == list(SELECT_REJECT_COLUMNS)
    for lab in LABELS:
        assert manifest[lab].isna().all() == (lab not in scored), lab


def test_rsna_one_row_per_image_pneumonia_when_any_box(tmp_path):
    root = tmp_path / "stage_2_train_images"
    (tmp_path / "labels.csv").write_text(
        "patientId,x,y,width,height,Target\n"
        "aaa,,,,,0\n"
        "bbb,264.0,152.0,213.0,379.0,1\n"
        "bbb,562.0,152.0,256.0,453.0,1\n"
        "ccc,,,,,0\n"
        "ddd,10,10,20,20,1\n")
    for pid in ("aaa", "bbb", "ddd"):
        write_dicom(root / f"{pid}.dcm")
    manifest, rejects = select_rsna_pneumonia(tmp_path / "labels.csv", root)
    check_shape(manifest, rejects, ["Pneumonia"])
    assert dict(zip(manifest["dicom_id"], manifest["Pneumonia"], strict=True)) == {
        "aaa": 0.0, "bbb": 1.0, "ddd": 1.0}
    assert manifest["image_path"].tolist() == [str(root / f"{p}.dcm") for p in ("aaa", "bbb",
                                                                               "ddd")]
    assert rejects["dicom_id"].tolist() == ["ccc"]
    assert rejects["reason"][0] == f"image file not found: {root / 'ccc.dcm'}"


def test_rsna_refuses_a_table_without_target(tmp_path):
    (tmp_path / "labels.csv").write_text("patientId,x\naaa,1\n")
    with pytest.raises(ConfigError, match="lacks columns"):
        select_rsna_pneumonia(tmp_path / "labels.csv", tmp_path)


def test_siim_searches_nested_folders_and_reads_masks(tmp_path):
    root = tmp_path / "dicom-images-train"
    ids = ["1.2.276.0.1", "1.2.276.0.2", "1.2.276.0.3", "1.2.276.0.4"]
    # the official header has a space before EncodedPixels; several mask rows per image
    (tmp_path / "train-rle.csv").write_text(
        "ImageId, EncodedPixels\n"
        f"{ids[0]}, -1\n"
        f"{ids[1]}, 387620 23 996 33 986 43\n"
        f"{ids[1]}, 5000 10 1014 10\n"
        f"{ids[2]}, -1\n"
        f"{ids[3]}, 100 4\n")
    write_dicom(root / "1.2.276.0.9.1" / "1.2.276.0.9.2" / f"{ids[0]}.dcm")
    write_dicom(root / "s2" / "r2" / f"{ids[1]}.dcm")
    write_dicom(root / "s4a" / "r" / f"{ids[3]}.dcm")
    write_dicom(root / "s4b" / "r" / f"{ids[3]}.dcm")  # the same image twice: ambiguous
    manifest, rejects = select_siim_pneumothorax(tmp_path / "train-rle.csv", root)
    check_shape(manifest, rejects, ["Pneumothorax"])
    assert manifest["dicom_id"].tolist() == ids[:2]
    assert manifest["Pneumothorax"].tolist() == [0.0, 1.0]
    assert manifest["image_path"][1] == str(root / "s2" / "r2" / f"{ids[1]}.dcm")
    assert dict(zip(rejects["dicom_id"], rejects["reason"], strict=True)) == {
        ids[2]: f"no {ids[2]}.dcm under {root}",
        ids[3]: f"{ids[3]}.dcm found more than once under {root}"}


def test_rsna_films_go_through_the_images_stage(tmp_path):
    from chexdino.h5store import read_meta
    from chexdino.images import process_shard

    root = tmp_path / "img"
    (tmp_path / "labels.csv").write_text("patientId,x,y,width,height,Target\np1,,,,,0\n"
                                         "p2,1,1,2,2,1\n")
    write_dicom(root / "p1.dcm")
    (root / "p2.dcm").write_bytes(b"not a DICOM file\n")
    manifest, _ = select_rsna_pneumonia(tmp_path / "labels.csv", root)
    counts = process_shard(manifest, tmp_path / "s.h5", tmp_path / "r.csv", size=32,
                           max_frame_pixels=MAX_FRAME_PIXELS)
    assert counts == {"input": 2, "kept": 1, "rejected": 1}
    assert read_meta(tmp_path / "s.h5")["Pneumonia"].tolist() == [0.0]
    assert pd.read_csv(tmp_path / "r.csv")["dicom_id"].tolist() == ["p2"]


def write_train_csv(path, per_class: int = 6, seed: int = 0) -> None:
    """CheXpert train.csv: single-positive studies per class, plus rows 5x200 must skip."""
    rng = np.random.default_rng(seed)
    head = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *[
        "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
        "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
        "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]]
    rows = []
    patient = 0

    def add(labels: dict, frontal: bool = True, views: int = 1):
        nonlocal patient
        patient += 1
        for v in range(1, views + 1):
            kind = "frontal" if frontal else "lateral"
            row = {c: "" for c in head}
            row.update({"Path": f"CheXpert-v1.0/train/patient{patient:05d}/study1/"
                                f"view{v}_{kind}.jpg", "Sex": "Female", "Age": "60",
                        "Frontal/Lateral": "Frontal" if frontal else "Lateral",
                        "AP/PA": "AP" if frontal else ""})
            row.update({k: str(x) for k, x in labels.items()})
            rows.append(row)

    for name in COMPETITION:
        for _ in range(per_class):
            others = {c: rng.choice(["", "0.0"]) for c in COMPETITION if c != name}
            add({name: "1.0", **others, "Support Devices": "1.0"}, views=2)
        add({name: "1.0", COMPETITION[(COMPETITION.index(name) + 1) % 5]: "1.0"})  # two
        add({name: "1.0", COMPETITION[(COMPETITION.index(name) + 2) % 5]: "-1.0"})  # unsure
        add({name: "1.0"}, frontal=False)  # lateral
    order = rng.permutation(len(rows))
    pd.DataFrame([rows[i] for i in order], columns=head).to_csv(path, index=False)


def test_5x200_draw_is_seeded_single_positive_and_balanced(tmp_path):
    write_train_csv(tmp_path / "train.csv")
    a = chexpert_5x200_selection(tmp_path / "train.csv", COMPETITION, 4, seed=3)
    assert a.equals(chexpert_5x200_selection(tmp_path / "train.csv", COMPETITION, 4, seed=3))
    assert not a.equals(chexpert_5x200_selection(tmp_path / "train.csv", COMPETITION, 4,
                                                 seed=4))
    assert a["class"].value_counts().to_dict() == dict.fromkeys(COMPETITION, 4)
    assert a["Path"].is_unique and a["Path"].str.endswith("view1_frontal.jpg").all()
    table = pd.read_csv(tmp_path / "train.csv").set_index("Path")
    chosen = table.loc[a["Path"], COMPETITION].fillna(0.0).to_numpy()
    assert (chosen == 1.0).sum(axis=1).tolist() == [1] * 20
    assert set(np.unique(chosen)) <= {0.0, 1.0}  # no uncertain label among the chosen
    picked = np.asarray(COMPETITION)[np.argmax(chosen, axis=1)]
    assert picked.tolist() == a["class"].tolist()
    # the row order of train.csv does not change the draw
    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(tmp_path / "train.csv", dtype=str).iloc[::-1].to_csv(shuffled, index=False)
    assert a.equals(chexpert_5x200_selection(shuffled, COMPETITION, 4, seed=3))
    with pytest.raises(ConfigError, match="only Atelectasis positive"):
        chexpert_5x200_selection(tmp_path / "train.csv", COMPETITION, 7, seed=3)


def test_5x200_manifest_is_one_hot_and_rejects_missing_films(tmp_path):
    write_train_csv(tmp_path / "train.csv")
    selection = chexpert_5x200_selection(tmp_path / "train.csv", COMPETITION, 2, seed=0)
    for p in selection["Path"][1:]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"jpg")
    manifest, rejects = select_chexpert_5x200(selection, tmp_path, COMPETITION)
    check_shape(manifest, rejects, COMPETITION)
    assert len(manifest) == 9 and len(rejects) == 1
    assert rejects["reason"][0] == f"image file not found: {tmp_path / selection['Path'][0]}"
    assert (manifest[COMPETITION].sum(axis=1) == 1.0).all()
    first = selection["Path"][1]
    assert manifest["dicom_id"][0] == first.removesuffix(".jpg").replace("/", "_")
    assert manifest["study_id"][0] == first.rsplit("/", 1)[0]
    assert manifest["subject_id"][0].startswith("patient")


def test_accuracy_by_hand():
    classes = ["A", "B", "C"]
    probs = np.array([[0.9, 0.1, 0.2],   # A -> A
                      [0.3, 0.6, 0.5],   # B -> B
                      [0.7, 0.2, 0.6],   # C -> A (wrong)
                      [0.1, 0.2, 0.3],   # C -> C
                      [0.5, 0.4, 0.45]])  # B -> A (wrong)
    table = class_accuracy(probs, ["A", "B", "C", "C", "B"], classes, n_bootstrap=50, seed=1)
    got = table.set_index("label")
    assert got.loc["overall", "accuracy"] == pytest.approx(3 / 5)
    assert got.loc["overall", "n_correct"] == 3 and got.loc["overall", "n"] == 5
    assert got["accuracy"][classes].tolist() == [1.0, 0.5, 0.5]
    assert got.loc["overall", "ci_low"] <= 0.6 <= got.loc["overall", "ci_high"]
    again = class_accuracy(probs, ["A", "B", "C", "C", "B"], classes, n_bootstrap=50, seed=1)
    assert again.equals(table)
    with pytest.raises(ValueError, match="not among"):
        class_accuracy(probs, ["A", "B", "C", "C", "D"], classes, n_bootstrap=5, seed=1)
