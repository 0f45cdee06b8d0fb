"""Fuzzing the image stage: hundreds of mutated DICOMs, every one kept or rejected with a reason.

Mutations: truncation at random offsets, random byte flips, absurd or inconsistent image
tags, wrong transfer syntax claims, missing pixel data, colour/multi-frame claims, and
plain non-DICOM bytes. The shard must finish, in bounded time and memory.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from chexdino import LABELS, h5store
from chexdino.images import process_shard
from conftest import MAX_FRAME_PIXELS

N_MUTANTS = 240


def seed_dataset(rows: int = 48, cols: int = 40, seed: int = 0) -> pydicom.Dataset:
    rng = np.random.default_rng(seed)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(seed)])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = rng.integers(0, 4096, (rows, cols), dtype=np.uint16).tobytes()
    return ds


def tag_mutations(ds: pydicom.Dataset, rng: np.random.Generator) -> pydicom.Dataset:
    """One random edit of the header that a broken scanner or export could produce."""
    choice = int(rng.integers(12))
    if choice == 0:
        ds.Rows, ds.Columns = 65535, 65535  # absurd size, pixel data far too short
    elif choice == 1:
        ds.Rows = 0
    elif choice == 2:
        ds.BitsAllocated = int(rng.choice([1, 7, 12, 64]))
    elif choice == 3:
        ds.BitsStored = 20
    elif choice == 4:
        ds.PhotometricInterpretation = "RGB"
        ds.SamplesPerPixel = 3
    elif choice == 5:
        ds.NumberOfFrames = 4
    elif choice == 6:
        del ds.PixelData
    elif choice == 7:
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless  # claims J2K, holds raw bytes
    elif choice == 8:
        ds.file_meta.TransferSyntaxUID = RLELossless
    elif choice == 9:
        ds.PhotometricInterpretation = "PALETTE COLOR"
    elif choice == 10:
        ds.WindowWidth = 0
    else:
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    return ds


def write_mutants(folder, n: int) -> list:
    rng = np.random.default_rng(1234)
    paths = []
    base = folder / "seed.dcm"
    seed_dataset().save_as(base, enforce_file_format=True)
    raw = base.read_bytes()
    for i in range(n):
        path = folder / f"m{i:04d}.dcm"
        kind = i % 4
        if kind == 0:  # truncated at a random offset
            path.write_bytes(raw[: int(rng.integers(0, len(raw)))])
        elif kind == 1:  # random byte flips anywhere, header included
            data = bytearray(raw)
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 40))):
                data[pos] = int(rng.integers(256))
            path.write_bytes(bytes(data))
        elif kind == 2:  # a header edit
            ds = tag_mutations(seed_dataset(seed=i), rng)
            try:
                ds.save_as(path, enforce_file_format=True)
            except Exception:  # pydicom refused to write it: use the seed
                ds = seed_dataset(seed=i)
                ds.Rows = 70000 % 65536
                ds.save_as(path, enforce_file_format=True)
        else:  # not DICOM at all
            path.write_bytes(rng.bytes(int(rng.integers(0, 4096))))
        paths.append(path)
    return paths


def manifest_for(paths) -> pd.DataFrame:
    table = pd.DataFrame({
        "dicom_id": [p.stem for p in paths], "study_id": "s1", "subject_id": "p1",
        "split": "train", "view": "PA", "image_path": [str(p) for p in paths]})
    for lab in LABELS:
        table[lab] = np.nan
    return table


def shard_with_peak_memory(manifest, out_h5, rejects_csv) -> tuple[dict, float]:
    """``process_shard`` (2 decoder workers) and its workers' peak resident memory in MB.

    Run in a fresh interpreter: ``RUSAGE_CHILDREN`` counts every child a process has reaped,
    and this test session's other children (a full-size model in a subprocess) are larger.
    """
    counts = process_shard(manifest, out_h5, rejects_csv, size=64, threads=2,
                           max_frame_pixels=MAX_FRAME_PIXELS)
    return counts, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


@pytest.mark.slow
def test_mutated_dicoms_never_crash_the_shard(tmp_path):
    paths = write_mutants(tmp_path, N_MUTANTS)
    manifest = manifest_for(paths)
    started = time.monotonic()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        counts, peak_mb = fresh.submit(shard_with_peak_memory, manifest, tmp_path / "shard.h5",
                                       tmp_path / "rejects.csv").result()
    elapsed = time.monotonic() - started
    rejects = pd.read_csv(tmp_path / "rejects.csv", dtype=str, keep_default_na=False)
    kept = h5store.read_meta(tmp_path / "shard.h5")
    assert counts["input"] == N_MUTANTS == len(kept) + len(rejects)
    assert set(kept["dicom_id"]).isdisjoint(rejects["dicom_id"])
    assert (rejects["reason"].str.len() > 0).all()
    # Every non-DICOM blob and every truncation before the pixel data is a reject.
    assert len(rejects) >= N_MUTANTS // 4
    with h5store.open_cxr(tmp_path / "shard.h5") as cxr:
        images = cxr[()]
    assert images.dtype == np.uint8 and images.shape[1:] == (64, 64)
    assert elapsed < 120, f"fuzzing took {elapsed:.0f} s"
    assert 20 < peak_mb < 2048, f"a decoder worker peaked at {peak_mb:.0f} MB"
    # The reasons are short and human (no tracebacks in the reject table).
    assert rejects["reason"].str.len().max() < 300
    assert not rejects["reason"].str.contains("Traceback").any()
