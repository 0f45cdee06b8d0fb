"""Tests for the synthetic MIMIC-CXR generator: layout, determinism, DICOM variety, labels."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, UnidentifiedImageError
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from chexdino import COMPETITION_LABELS, LABELS
from chexdino.demo import StudySigns, make_demo_dataset, render_frontal
from chexdino.demo.findings import draw_findings
from chexdino.demo.phantom import LEFT, RIGHT
from chexdino.demo.prose import write_report

SMALL = {"n_studies": 30, "n_chexpert": 10, "image_long_side": (200, 300)}
UNCOMPRESSED = "1.2.840.10008.1.2.1"


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    summary = make_demo_dataset(out, seed=0, **SMALL)
    return out, summary


@pytest.fixture(scope="module")
def tables(demo) -> dict[str, pd.DataFrame]:
    out, _ = demo
    m = out / "mimic"
    return {
        "split": pd.read_csv(m / "mimic-cxr-2.0.0-split.csv.gz"),
        "meta": pd.read_csv(m / "mimic-cxr-2.0.0-metadata.csv.gz"),
        "labels": pd.read_csv(m / "mimic-cxr-2.0.0-chexpert.csv.gz"),
    }


def _study_dir(out: Path, subject_id: int, study_id: int) -> Path:
    return out / "mimic" / "files" / f"p{str(subject_id)[:2]}" / f"p{subject_id}" / f"s{study_id}"


def _bad_dicom_ids(summary: dict) -> set[str]:
    return set(summary["bad_ids"]["truncated_dicom"]) | set(summary["bad_ids"]["not_dicom"])


def _displayed(ds) -> np.ndarray:
    """Reference decode: modality LUT, DICOM linear window (else min-max), MONOCHROME1 invert."""
    x = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    if "WindowCenter" in ds:
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    else:
        lo, hi = float(x.min()), float(x.max())
    y = (np.clip(x, lo, hi) - lo) / (hi - lo)
    return 1.0 - y if ds.PhotometricInterpretation == "MONOCHROME1" else y


# ---------------------------------------------------------------------------- determinism


def test_same_seed_is_byte_identical_and_other_seed_differs(demo, tmp_path):
    out, _ = demo
    again = tmp_path / "again"
    other = tmp_path / "other"
    make_demo_dataset(again, seed=0, **SMALL)
    make_demo_dataset(other, seed=1, **SMALL)
    first = _hashes(out)
    assert len(first) > 80
    assert _hashes(again) == first
    shared = set(_hashes(other).values()) & set(first.values())
    assert len(shared) <= 3  # only fixed-text files: the not-DICOM/not-JPEG pair, empty report


def test_worker_processes_do_not_change_bytes(tmp_path):
    kw = {"n_studies": 60, "n_chexpert": 2, "image_long_side": (64, 96)}
    serial = make_demo_dataset(tmp_path / "a", seed=3, workers=1, **kw)
    assert serial["images"] >= 64  # large enough to take the worker-pool path
    make_demo_dataset(tmp_path / "b", seed=3, workers=2, **kw)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")


# ---------------------------------------------------------------------------- tables, layout


def test_tables_have_real_columns_and_values(tables, demo):
    _, summary = demo
    split, meta, labels = tables["split"], tables["meta"], tables["labels"]
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert list(meta.columns) == [
        "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
        "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
        "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
        "PatientOrientationCodeSequence_CodeMeaning",
    ]
    assert list(labels.columns) == ["subject_id", "study_id", *LABELS]
    assert set(split["split"]) == {"train", "validate", "test"}
    assert set(meta["ViewPosition"].dropna()) <= {"PA", "AP", "LATERAL"}
    assert meta["ViewPosition"].isna().sum() >= 1  # blank ViewPosition rows exist
    assert (meta["ViewPosition"] == "LATERAL").sum() >= 1
    values = set(np.unique(labels[list(LABELS)].to_numpy(dtype=float).ravel()[
        ~np.isnan(labels[list(LABELS)].to_numpy(dtype=float).ravel())]))
    assert values == {1.0, 0.0, -1.0}
    assert labels[list(LABELS)].isna().any().any()
    for did in split["dicom_id"]:
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}", did)
    assert split["subject_id"].astype(str).str.fullmatch(r"1\d{7}").all()
    assert split["study_id"].astype(str).str.fullmatch(r"5\d{7}").all()
    assert split["dicom_id"].is_unique and meta["dicom_id"].is_unique
    assert set(split["dicom_id"]) == set(meta["dicom_id"])
    assert set(labels["study_id"]) == set(meta["study_id"])
    assert len(meta) == summary["images"] and labels["study_id"].nunique() == summary["studies"]


def test_no_finding_follows_other_labels(tables):
    labels = tables["labels"]
    others = labels[[k for k in LABELS if k != "No Finding"]]
    any_pos = (others == 1.0).any(axis=1)
    assert (labels.loc[~any_pos, "No Finding"] == 1.0).all()
    assert labels.loc[any_pos, "No Finding"].isna().all()
    assert any_pos.any() and (~any_pos).any()


def test_subjects_never_span_splits(tables):
    per_subject = tables["split"].groupby("subject_id")["split"].nunique()
    assert (per_subject == 1).all()


def test_every_metadata_row_has_files_and_no_orphans(demo, tables):
    out, _ = demo
    meta = tables["meta"]
    expected = set()
    for r in meta.itertuples():
        d = _study_dir(out, r.subject_id, r.study_id)
        dcm, jpg = d / f"{r.dicom_id}.dcm", d / f"{r.dicom_id}.jpg"
        assert dcm.stat().st_size > 0 and jpg.stat().st_size > 0
        expected |= {dcm, jpg}
    on_disk = {p for p in (out / "mimic" / "files").rglob("*") if p.suffix in (".dcm", ".jpg")}
    assert on_disk == expected


# ---------------------------------------------------------------------------- DICOM variety


def test_good_dicoms_decode_to_their_jpg_twin_and_cover_variants(demo, tables):
    out, summary = demo
    bad = _bad_dicom_ids(summary)
    seen = {"phot": set(), "bits": set(), "ts": set(), "orient": set(), "signed": set(),
            "window": set(), "rescale": set()}
    meta = tables["meta"].set_index("dicom_id")
    for did, r in meta.iterrows():
        if did in bad:
            continue
        path = _study_dir(out, r.subject_id, r.study_id) / f"{did}.dcm"
        ds = dcmread(path)
        assert ds.preamble is not None and ds.file_meta.TransferSyntaxUID
        assert ds.PatientID == str(r.subject_id) and ds.StudyID == str(r.study_id)
        assert (ds.Rows, ds.Columns) == (r.Rows, r.Columns)
        assert ds.ViewPosition == ("" if pd.isna(r.ViewPosition) else r.ViewPosition)
        shown = _displayed(ds)
        twin = np.asarray(Image.open(path.with_suffix(".jpg")), dtype=np.float64) / 255.0
        assert twin.shape == shown.shape
        assert np.abs(shown - twin).mean() < 0.01, path
        seen["phot"].add(ds.PhotometricInterpretation)
        seen["bits"].add(int(ds.BitsStored))
        seen["ts"].add(str(ds.file_meta.TransferSyntaxUID))
        seen["orient"].add("portrait" if ds.Rows > ds.Columns else "landscape"
                           if ds.Rows < ds.Columns else "square")
        seen["signed"].add(int(ds.PixelRepresentation))
        seen["window"].add("WindowCenter" in ds)
        seen["rescale"].add(float(ds.get("RescaleSlope", 1.0)))
    assert seen["phot"] == {"MONOCHROME1", "MONOCHROME2"}
    assert seen["bits"] == {12, 15, 16}
    assert UNCOMPRESSED in seen["ts"] and len(seen["ts"] - {UNCOMPRESSED}) >= 1
    assert {"portrait", "landscape"} <= seen["orient"]
    assert seen["signed"] == {0, 1}
    assert seen["window"] == {True, False}
    assert {1.0, 0.5} <= seen["rescale"]


# ---------------------------------------------------------------------------- bad records


def test_bad_records_are_really_bad(demo, tables):
    out, summary = demo
    assert summary["bad_records"] == {
        "truncated_dicom": 1, "not_dicom": 1, "missing_report": 1, "empty_report": 1}
    meta = tables["meta"].set_index("dicom_id")
    split = tables["split"].set_index("dicom_id")
    for kind in ("truncated_dicom", "not_dicom"):
        (did,) = summary["bad_ids"][kind]
        r = meta.loc[did]
        assert r.ViewPosition in ("PA", "AP") and split.loc[did, "split"] == "train"
        path = _study_dir(out, r.subject_id, r.study_id) / f"{did}.dcm"
        if kind == "truncated_dicom":
            ds = dcmread(path)  # the header is intact ...
            assert ds.Rows == r.Rows
            with pytest.raises(ValueError):
                _ = ds.pixel_array  # ... the pixel data is not
            with pytest.raises(OSError):
                Image.open(path.with_suffix(".jpg")).load()
        else:
            with pytest.raises(InvalidDicomError):
                dcmread(path)
            with pytest.raises(UnidentifiedImageError):
                Image.open(path.with_suffix(".jpg"))

    studies = tables["meta"].drop_duplicates("study_id").set_index("study_id")
    (missing,) = summary["bad_ids"]["missing_report"]
    r = studies.loc[int(missing)]
    d = _study_dir(out, r.subject_id, int(missing))
    assert not d.with_suffix(".txt").exists()
    assert any(d.glob("*.dcm"))
    (empty,) = summary["bad_ids"]["empty_report"]
    r = studies.loc[int(empty)]
    text = _study_dir(out, r.subject_id, int(empty)).with_suffix(".txt").read_text()
    assert "FINAL REPORT" in text
    assert re.sub(r"FINAL REPORT|_+|\s+", "", text) == ""


# ---------------------------------------------------------------------------- labels vs text

_KEYWORDS = {
    "Atelectasis": ("atelectasis",),
    "Cardiomegaly": ("cardiomegaly", "heart is", "cardiac silhouette", "heart size"),
    "Consolidation": ("consolidation",),
    "Edema": ("edema",),
    "Pleural Effusion": ("effusion", "layering fluid"),
}
_UNCERTAIN = ("possible", "may represent", "cannot exclude", "cannot be excluded")
_NEGATED = ("no ", "normal", "without")


def _mentions(text: str, label: str) -> dict[str, bool]:
    sentences = [s.strip() for s in re.split(r"[.;]", " ".join(text.lower().split()))]
    kinds = {"pos": False, "unc": False, "neg": False}
    for s in sentences:
        if not any(k in s for k in _KEYWORDS[label]):
            continue
        if any(c in s for c in _UNCERTAIN):
            kinds["unc"] = True
        elif s.startswith(_NEGATED[0]) or any(c in s for c in _NEGATED[1:]) or " no " in s:
            kinds["neg"] = True
        else:
            kinds["pos"] = True
    return kinds


def test_labels_agree_with_report_text(demo, tables):
    out, summary = demo
    skip = {int(s) for s in summary["bad_ids"]["missing_report"] + summary["bad_ids"][
        "empty_report"]}
    checked = 0
    for r in tables["labels"].itertuples(index=False):
        if r.study_id in skip:
            continue
        text = _study_dir(out, r.subject_id, r.study_id).with_suffix(".txt").read_text()
        row = dict(zip(tables["labels"].columns, r, strict=True))
        for label in COMPETITION_LABELS:
            m = _mentions(text, label)
            value = row[label]
            if value == 1.0:
                assert m["pos"] and not m["neg"], (label, text)
            elif value == -1.0:
                assert m["unc"] and not m["pos"] and not m["neg"], (label, text)
            elif value == 0.0:
                assert m["neg"] and not m["pos"] and not m["unc"], (label, text)
            else:
                assert not any(m.values()), (label, text)
            checked += 1
    assert checked >= 100


def test_report_shapes_vary_and_name_the_labels():
    rng = np.random.default_rng(7)
    reports, findings = [], []
    for _ in range(600):
        f = draw_findings(rng)
        findings.append(f)
        reports.append(write_report(rng, f, "CHEST (PA AND LAT)"))
    has = lambda token: sum(token in t for t in reports)  # noqa: E731
    assert has("FINDINGS AND IMPRESSION:") > 10
    assert has("CONCLUSION:") > 10 and has("ADDENDUM:") > 10 and has("___") > 0.8 * len(reports)
    no_impression = sum("IMPRESSION:" not in t and "CONCLUSION:" not in t for t in reports)
    assert 0.08 * len(reports) < no_impression < 0.35 * len(reports)
    no_headers = sum(not re.search(r"^ [A-Z ]+:", t, re.M) for t in reports)
    assert no_headers > 5
    assert has("No acute cardiopulmonary") > 5
    for label, word in (("Cardiomegaly", "cardiomegaly"), ("Pleural Effusion", "effusion"),
                        ("Consolidation", "consolidation"), ("Edema", "edema"),
                        ("Atelectasis", "atelectasis")):
        pos = [t for t, f in zip(reports, findings, strict=True) if f.state[label] == 1.0]
        assert len(pos) > 100
        named = sum(word in t.lower() for t in pos) / len(pos)
        assert named > 0.6, (label, named)
    # Every positive competition label is in the last impression-like section.
    for t, f in zip(reports, findings, strict=True):
        m = re.search(r"(?:IMPRESSION|CONCLUSION):(.*?)(?:\n [A-Z ]+:|\Z)", t, re.S)
        if m is None or "FINDINGS:" in t[m.end():]:
            continue
        for label in COMPETITION_LABELS:
            if f.state[label] in (1.0, -1.0):
                ks = _mentions(m.group(1), label)
                assert ks["pos"] or ks["unc"], (label, t)


# ---------------------------------------------------------------------------- pictures


@pytest.mark.parametrize("label,signs,area", [
    ("Cardiomegaly", StudySigns(cardiomegaly=1.0, ctr=0.65), 0.01),
    ("Pleural Effusion", StudySigns(effusion=1.0, effusion_sides=(LEFT,)), 0.01),
    ("Consolidation", StudySigns(consolidation=1.0, consolidation_side=RIGHT), 0.01),
    ("Edema", StudySigns(edema=1.0), 0.01),
    ("Atelectasis", StudySigns(atelectasis=1.0, atelectasis_sides=(RIGHT,)), 0.01),
])
def test_each_competition_sign_is_visible_at_96_px(label, signs, area):
    def at96(img: np.ndarray) -> np.ndarray:
        im = Image.fromarray(np.rint(img * 255).astype(np.uint8))
        return np.asarray(im.resize((96, 96), Image.Resampling.BILINEAR), dtype=float) / 255

    for seed in range(3):
        plain = render_frontal(np.random.default_rng(seed), 480, 400, StudySigns())
        sign = render_frontal(np.random.default_rng(seed), 480, 400, signs)
        diff = np.abs(at96(sign) - at96(plain))
        changed = (diff > 0.15).mean()
        assert changed > area, (label, changed)  # 1 % of 96x96 = 92 pixels
        assert (at96(sign) - at96(plain)).mean() > 0, label  # signs add density


def test_chexpert_eval_set_shape(demo):
    out, summary = demo
    gt = pd.read_csv(out / "chexpert" / "groundtruth.csv")
    assert list(gt.columns) == ["Study", *LABELS]
    assert len(gt) == summary["chexpert_studies"] == SMALL["n_chexpert"]
    assert gt["Study"].str.fullmatch(r"test/patient\d{5}/study1").all() and gt["Study"].is_unique
    assert set(np.unique(gt[list(LABELS)].to_numpy())) <= {0, 1}
    assert gt[list(LABELS)].dtypes.map(lambda d: d.kind == "i").all()
    no_other = (gt[[k for k in LABELS if k != "No Finding"]] == 0).all(axis=1)
    assert (gt["No Finding"] == no_other.astype(int)).all()
    for study in gt["Study"]:
        path = out / "chexpert" / "CheXpert-v1.0" / study / "view1_frontal.jpg"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "L"
            assert 200 <= max(im.size) <= 300


def test_rejects_too_small_runs(tmp_path):
    with pytest.raises(ValueError, match="n_studies"):
        make_demo_dataset(tmp_path, n_studies=3, n_chexpert=1)
