"""Dataset assembly: plan studies, write files and the official CSVs in MIMIC-CXR's layout."""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from chexdino import LABELS
from chexdino.demo.dicom_files import (
    UID_EXPLICIT_LE,
    UID_J2K_LOSSLESS,
    UID_RLE,
    available_compressions,
    draw_encodings,
    draw_image_size,
    encode_dicom,
    jpeg_bytes,
)
from chexdino.demo.draws import draw_dicom_id, draw_uid, pick, stratified, unique_ints
from chexdino.demo.findings import NAN, draw_findings, signs_for, with_no_finding
from chexdino.demo.phantom import StudySigns, render_frontal, render_lateral
from chexdino.demo.prose import EMPTY_REPORT, write_report

SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
CHEXPERT_COLUMNS = ("subject_id", "study_id", *LABELS)
GROUNDTRUTH_COLUMNS = ("Study", *LABELS)
BAD_KINDS = ("truncated_dicom", "not_dicom", "missing_report", "empty_report")


@dataclass
class _Study:
    subject_id: int
    study_id: int
    split: str
    labels: dict[str, float]
    signs: StudySigns
    report: str | None
    date: str
    time: str
    procedure: str
    bad: str | None = None
    images: list[_Image] = field(default_factory=list)
    uids: tuple = ()  # (study uid, series uid, [sop uid per image])


@dataclass
class _Image:
    key: tuple[int, ...]  # rendering rng key: independent of processing order
    dicom_id: str
    view: str  # "PA", "AP", "LATERAL" or "" (missing ViewPosition)
    frontal: bool
    rows: int
    cols: int
    path: Path  # without suffix
    signs: StudySigns | None
    encoding: dict
    bad: str | None = None



def _render_image(seed: int, img: _Image) -> np.ndarray:
    rng = np.random.default_rng([seed, *img.key])
    if img.frontal:
        return render_frontal(rng, img.rows, img.cols, img.signs or StudySigns(), seed)
    return render_lateral(rng, img.rows, img.cols, seed)


def _write_mimic_image(task: tuple) -> tuple[str, str]:
    """Render one image, write its DICOM and JPG twin (or its deliberate breakage)."""
    seed, img, meta, compress = task
    path: Path = img.path
    if img.bad == "not_dicom":
        path.with_suffix(".dcm").write_bytes(
            b"This is not a DICOM file: the transfer from the PACS failed.\n" * 4)
        path.with_suffix(".jpg").write_bytes(b"<html><body>404 Not Found</body></html>\n")
        return img.dicom_id, "not_dicom"
    disp = _render_image(seed, img)
    dcm, ts = encode_dicom(disp, meta, img.encoding, compress)
    jpg = jpeg_bytes(disp)
    if img.bad == "truncated_dicom":
        pixel_bytes = img.rows * img.cols * 2
        dcm = dcm[: len(dcm) - pixel_bytes + int(pixel_bytes * 0.4)]
        jpg = jpg[: int(len(jpg) * 0.4)]
    path.with_suffix(".dcm").write_bytes(dcm)
    path.with_suffix(".jpg").write_bytes(jpg)
    return img.dicom_id, ts


def _write_chexpert_image(task: tuple) -> tuple[str, str]:
    seed, key, rows, cols, signs, path = task
    rng = np.random.default_rng([seed, *key])
    disp = render_frontal(rng, rows, cols, signs, seed)
    path.write_bytes(jpeg_bytes(disp))
    return str(path), "jpg"


def _write_gz_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """gzip without name or mtime in its header, so reruns are byte-identical."""
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow(["" if isinstance(x, float) and math.isnan(x) else x for x in row])
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                               mtime=0) as gz:
        gz.write(text.getvalue().encode("utf-8"))


def _progress(it: Iterable, total: int, desc: str) -> Iterator:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        yield from it
        return
    yield from tqdm(it, total=total, desc=desc, unit="img", leave=False)


def _run_tasks(func, tasks: list, desc: str, workers: int) -> list:
    """Map ``func`` over tasks, in worker processes for big runs; output is order-free."""
    if workers <= 1 or len(tasks) < 64:
        return list(_progress(map(func, tasks), len(tasks), desc))
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(_progress(pool.map(func, tasks, chunksize=8), len(tasks), desc))



def _default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, 8))


def _plan_mimic(rng: np.random.Generator, outdir: Path, n_studies: int,
                long_side: tuple[int, int], compress: dict) -> list[_Study]:
    """Subjects, studies, labels, reports, images and encodings: everything but the pixels."""
    n_subjects = max(3, round(n_studies / 2.2))
    subject_ids = unique_ints(rng, n_subjects, 10_000_000, 20_000_000)
    # Split by subject, so a subject never spans splits.
    subject_split = dict(zip(subject_ids, stratified(
        rng, n_subjects, ["train", "validate", "test"], [0.8, 0.1, 0.1]), strict=True))
    owners = list(subject_ids) + [
        subject_ids[int(i)] for i in rng.integers(0, n_subjects, n_studies - n_subjects)]
    owners = [owners[i] for i in rng.permutation(len(owners))]
    study_ids = unique_ints(rng, n_studies, 50_000_000, 60_000_000)
    train_idx = [i for i, s in enumerate(owners) if subject_split[s] == "train"]
    if len(train_idx) < len(BAD_KINDS):
        raise ValueError("too few train studies for the bad records; raise n_studies")
    bad_study = {int(i): kind for i, kind in zip(
        rng.choice(train_idx, size=len(BAD_KINDS), replace=False), BAD_KINDS, strict=True)}

    studies: list[_Study] = []
    for i in range(n_studies):
        subject, study_id = owners[i], study_ids[i]
        kind = bad_study.get(i)
        f = draw_findings(rng)
        # Bad records are plain single-frontal studies, so they reach the selected rows.
        n_frontal = 1 if kind else (2 if rng.random() < 0.05 else 1)
        lateral = (not kind) and rng.random() < 0.25
        date = (f"{int(rng.integers(2110, 2210))}{int(rng.integers(1, 13)):02d}"
                f"{int(rng.integers(1, 29)):02d}")
        time = (f"{int(rng.integers(0, 24)):02d}{int(rng.integers(0, 60)):02d}"
                f"{int(rng.integers(0, 60)):02d}.{int(rng.integers(0, 1000)):03d}")
        portable = rng.random() < 0.45
        procedure = "CHEST (PORTABLE AP)" if portable else (
            "CHEST (PA AND LAT)" if lateral or rng.random() < 0.8 else "CHEST (PRE-OP PA AND LAT)")
        if kind == "empty_report":
            f.state = {name: NAN for name in LABELS}
        report = EMPTY_REPORT if kind == "empty_report" else write_report(rng, f, procedure)
        signs = signs_for(f, rng)
        st = _Study(subject, study_id, subject_split[subject], with_no_finding(f.state), signs,
                    None if kind == "missing_report" else report, date, time, procedure,
                    bad=kind)
        base = outdir / "mimic" / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study_id}"
        for j in range(n_frontal + int(lateral)):
            is_front = j < n_frontal
            did = draw_dicom_id(rng)
            view = ("AP" if portable else "PA") if is_front else "LATERAL"
            st.images.append(_Image(
                key=(1, i, j), dicom_id=did, view=view, frontal=is_front, rows=0, cols=0,
                path=base / did, signs=signs if is_front else None, encoding={}, bad=None))
        if kind in ("truncated_dicom", "not_dicom"):
            st.images[0].bad = kind
        studies.append(st)

    images = [im for st in studies for im in st.images]
    # Blank ViewPosition on ~3 % of ordinary frontal images (as in real MIMIC-CXR).
    frontal_ok = [im for im in images if im.frontal and im.key[1] not in bad_study]
    blanks = stratified(rng, len(frontal_ok), [False, True], [0.97, 0.03])
    for im, blank in zip(frontal_ok, blanks, strict=True):
        if blank:
            im.view = ""
    orients = stratified(rng, len(images), ["portrait", "landscape", "square"], [0.6, 0.3, 0.1])
    encodings = draw_encodings(rng, len(images), compress)
    for im, orient, enc in zip(images, orients, encodings, strict=True):
        im.rows, im.cols = draw_image_size(rng, long_side, orient)
        im.encoding = {**enc, "ts": "none"} if im.bad == "truncated_dicom" else enc
    for st in studies:
        st.uids = (draw_uid(rng), draw_uid(rng), [draw_uid(rng) for _ in st.images])
    return studies


def _write_mimic(studies: list[_Study], outdir: Path, seed: int, compress: dict,
                 workers: int) -> Counter:
    """Reports, images (DICOM + JPG twins) and the three gzipped CSVs; returns syntax counts."""
    tasks = []
    for st in studies:
        study_uid, series_uid, sop_uids = st.uids
        st.images[0].path.parent.mkdir(parents=True, exist_ok=True)
        if st.report is not None:
            st.images[0].path.parent.with_suffix(".txt").write_text(st.report, encoding="utf-8")
        for n, (im, sop_uid) in enumerate(zip(st.images, sop_uids, strict=True), start=1):
            meta = {"sop_uid": sop_uid, "study_uid": study_uid, "series_uid": series_uid,
                    "subject_id": st.subject_id, "study_id": st.study_id, "date": st.date,
                    "time": st.time, "view": im.view, "procedure": st.procedure,
                    "instance": n}
            tasks.append((seed, im, meta, compress))
    results = _run_tasks(_write_mimic_image, tasks, "demo MIMIC images", workers)

    split_rows, meta_rows, label_rows = [], [], []
    for st in sorted(studies, key=lambda s: (s.subject_id, s.study_id)):
        label_rows.append([st.subject_id, st.study_id, *[st.labels[k] for k in LABELS]])
        for im in sorted(st.images, key=lambda x: x.dicom_id):
            split_rows.append([im.dicom_id, st.study_id, st.subject_id, st.split])
            view_meaning = {"PA": "postero-anterior", "AP": "antero-posterior",
                            "LATERAL": "lateral", "": ""}[im.view]
            orient = "" if im.view == "" else ("Recumbent" if im.view == "AP" else "Erect")
            # The real table stores StudyTime as a float (no leading zeros).
            meta_rows.append([im.dicom_id, st.subject_id, st.study_id, st.procedure, im.view,
                              im.rows, im.cols, st.date, repr(float(st.time)), st.procedure,
                              view_meaning, orient])
    mimic = outdir / "mimic"
    _write_gz_csv(mimic / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_COLUMNS, split_rows)
    _write_gz_csv(mimic / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_COLUMNS, meta_rows)
    _write_gz_csv(mimic / "mimic-cxr-2.0.0-chexpert.csv.gz", CHEXPERT_COLUMNS, label_rows)
    return Counter(ts for _, ts in results)


def _write_chexpert(outdir: Path, n: int, seed: int, long_side: tuple[int, int],
                    workers: int) -> None:
    """CheXpert-test-shaped eval set: independent 0/1 labels, same image generator, JPG only."""
    crng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    patients = unique_ints(crng, n, 64541, 64541 + max(1000, 3 * n))
    rows_out, tasks = [], []
    for k, patient in enumerate(patients):
        f = draw_findings(crng, competition_only_binary=True)
        f.state = {name: (1.0 if f.state[name] == 1.0 else NAN) for name in LABELS}
        labels = with_no_finding(f.state)
        study = f"test/patient{patient}/study1"
        rows, cols = draw_image_size(crng, long_side,
                                 pick(crng, ["portrait", "portrait", "landscape", "square"]))
        path = outdir / "chexpert" / "CheXpert-v1.0" / study / "view1_frontal.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows_out.append([study, *[int(labels[name] == 1.0) for name in LABELS]])
        tasks.append((seed, (3, k), rows, cols, signs_for(f, crng), path))
    _run_tasks(_write_chexpert_image, tasks, "demo CheXpert images", workers)
    gt = outdir / "chexpert" / "groundtruth.csv"
    gt.parent.mkdir(parents=True, exist_ok=True)
    with gt.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(GROUNDTRUTH_COLUMNS)
        w.writerows(rows_out)


def _write_evalsets(outdir: Path, seed: int, long_side: tuple[int, int], workers: int,
                    n_rsna: int, n_siim: int, per_class: int) -> dict:
    """The extra zero-shot sets' layouts (:mod:`.evalsets`); returns their film counts."""
    from chexdino.demo import evalsets

    out = {}
    for name, count, plan in (("rsna_films", n_rsna, evalsets.plan_rsna),
                              ("siim_films", n_siim, evalsets.plan_siim),
                              ("chexpert_train_films", per_class,
                               evalsets.plan_chexpert_train)):
        if count > 0:
            tasks = plan(outdir, count, seed, long_side)
            _run_tasks(evalsets.write_film, tasks, f"demo {name}", workers)
            out[name] = len(tasks)
    return out


def make_demo_dataset(
    outdir: Path,
    n_studies: int = 2000,
    n_chexpert: int = 300,
    seed: int = 0,
    image_long_side: tuple[int, int] = (384, 640),
    workers: int | None = None,
    n_rsna: int = 0,
    n_siim: int = 0,
    chexpert_per_class: int = 0,
) -> dict:
    """Write a synthetic MIMIC-CXR + CheXpert-test set under ``outdir``; return a summary.

    Why: the pipeline's demo and tests run the real code paths (DICOM variety, broken files,
    report sections) on data anyone may have, with labels a tiny model can actually learn.
    Writes ``outdir/mimic/`` (files tree, split/metadata/chexpert ``.csv.gz``) and
    ``outdir/chexpert/`` (``groundtruth.csv``, ``CheXpert-v1.0/test/...``). ``workers``
    (default: usable CPUs, at most 8) changes speed only, never bytes: every image has its
    own seeded rng. Worker processes are spawned, so a calling script needs the usual
    ``if __name__ == "__main__":`` guard. ``n_rsna``, ``n_siim`` and ``chexpert_per_class``
    (0: none) add small copies of the extra zero-shot sets' layouts (:mod:`.evalsets`):
    ``outdir/rsna/``, ``outdir/siim/`` and ``outdir/chexpert/CheXpert-v1.0/train.csv``.
    """
    if n_studies < 10:
        raise ValueError(f"n_studies must be >= 10 (got {n_studies}): the bad records need room")
    if n_chexpert < 0:
        raise ValueError(f"n_chexpert must be >= 0 (got {n_chexpert})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (got {seed})")
    lo_side, hi_side = int(image_long_side[0]), int(image_long_side[1])
    if not 16 <= lo_side <= hi_side:
        raise ValueError(f"image_long_side must be (min, max) with 16 <= min <= max, "
                         f"got {image_long_side}")
    outdir = Path(outdir)
    workers = _default_workers() if workers is None else workers
    compress = available_compressions()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))

    studies = _plan_mimic(rng, outdir, n_studies, (lo_side, hi_side), compress)
    ts_counts = _write_mimic(studies, outdir, seed, compress, workers)
    _write_chexpert(outdir, n_chexpert, seed, (lo_side, hi_side), workers)
    extra = _write_evalsets(outdir, seed, (lo_side, hi_side), workers, n_rsna, n_siim,
                            chexpert_per_class)

    images = [im for st in studies for im in st.images]
    bad: dict[str, list[str]] = {k: [] for k in BAD_KINDS}
    for st in sorted(studies, key=lambda s: (s.subject_id, s.study_id)):
        if st.bad in ("truncated_dicom", "not_dicom"):
            bad[st.bad].append(st.images[0].dicom_id)
        elif st.bad:
            bad[st.bad].append(str(st.study_id))
    ts_names = {UID_EXPLICIT_LE: "ExplicitVRLittleEndian", UID_RLE: "RLELossless",
                UID_J2K_LOSSLESS: "JPEG2000Lossless", "not_dicom": "not_dicom"}
    return {
        "outdir": str(outdir),
        "seed": seed,
        "subjects": len({st.subject_id for st in studies}),
        "studies": n_studies,
        "reports": sum(st.report is not None for st in studies),
        "images": len(images),
        "frontal_images": sum(im.frontal for im in images),
        "lateral_images": sum(not im.frontal for im in images),
        "blank_view_images": sum(im.view == "" for im in images),
        "splits": dict(sorted(Counter(st.split for st in studies).items())),
        "transfer_syntaxes": {ts_names.get(k, k): v for k, v in sorted(ts_counts.items())},
        "chexpert_studies": n_chexpert,
        **extra,
        "bad_records": {k: len(v) for k, v in bad.items()},
        "bad_ids": bad,
    }
