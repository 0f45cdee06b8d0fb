"""The HDF5 image store: layout, atomic writes, gathering shards, reading rows back."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import chexdino
from chexdino import LABELS
from chexdino.atomic import atomic_output
from chexdino.h5store import (
    gather_rejects,
    gather_stores,
    load_cxr_array,
    open_cxr,
    read_meta,
    write_rejects,
    write_store,
)

SIZE = 16


def make_rows(n: int, first: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """n distinct images and their metadata, ids numbered from ``first``."""
    rng = np.random.default_rng(first + 7)
    images = rng.integers(0, 256, size=(n, SIZE, SIZE), dtype=np.uint8)
    ids = range(first, first + n)
    meta = pd.DataFrame(
        {
            "dicom_id": [f"dcm-{i}" for i in ids],
            "study_id": [50000000 + i for i in ids],  # integers in, strings out
            "subject_id": [10000000.0 + i for i in ids],  # floats, as read next to NaNs
            "split": ["train"] * n,
            "view": ["PA", "AP"] * (n // 2) + ["LATERAL"] * (n % 2),
            "source_rows": [3000 + i for i in ids],
            "source_cols": [2500 - i for i in ids],
        }
    )
    meta[list(LABELS)] = rng.choice([1.0, 0.0, -1.0, np.nan], size=(n, len(LABELS)))
    return images, meta


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_store_layout_is_contiguous_uint8_with_string_ids(tmp_path: Path):
    images, meta = make_rows(5)
    write_store(tmp_path / "s.h5", images, meta, SIZE)
    with h5py.File(tmp_path / "s.h5", "r") as store:
        cxr = store["cxr"]
        assert cxr.dtype == np.uint8 and cxr.shape == (5, SIZE, SIZE)
        assert cxr.chunks is None and cxr.compression is None  # contiguous
        assert store["study_id"].asstr()[0] == "50000000"
        assert store["subject_id"].asstr()[0] == "10000000"  # not "10000000.0"
        assert h5py.check_string_dtype(store["dicom_id"].dtype) is not None
        assert store["labels"].dtype == np.float32
        assert list(store["labels"].attrs["label_names"]) == list(LABELS)
        assert store["source_shape"].dtype == np.int32
        assert store.attrs["size"] == SIZE
        assert store.attrs["chexdino_version"] == chexdino.__version__
    assert files_in(tmp_path) == ["s.h5"]


def test_read_meta_round_trips_ids_shapes_and_labels(tmp_path: Path):
    images, meta = make_rows(6)
    write_store(tmp_path / "s.h5", images, meta, SIZE)
    back = read_meta(tmp_path / "s.h5")
    assert back["dicom_id"].tolist() == meta["dicom_id"].tolist()
    assert back["study_id"].tolist() == [str(s) for s in meta["study_id"]]
    assert back["view"].tolist() == meta["view"].tolist()
    assert back["source_rows"].tolist() == meta["source_rows"].tolist()
    assert back["source_cols"].tolist() == meta["source_cols"].tolist()
    np.testing.assert_array_equal(back[list(LABELS)], meta[list(LABELS)].astype(np.float32))
    assert back[list(LABELS)].isna().to_numpy().sum() > 0  # blanks stay NaN
    np.testing.assert_array_equal(load_cxr_array(tmp_path / "s.h5"), images)


def test_empty_store_has_zero_rows_everywhere(tmp_path: Path):
    images, meta = make_rows(0)
    write_store(tmp_path / "empty.h5", images, meta, SIZE)
    assert load_cxr_array(tmp_path / "empty.h5").shape == (0, SIZE, SIZE)
    back = read_meta(tmp_path / "empty.h5")
    assert len(back) == 0 and {"dicom_id", "source_rows", *LABELS} <= set(back.columns)


def test_gather_of_three_shards_with_an_empty_one_equals_concatenation(tmp_path: Path):
    parts = [make_rows(4, first=0), make_rows(0, first=100), make_rows(3, first=200)]
    shards = []
    for i, (images, meta) in enumerate(parts):
        shards.append(tmp_path / f"shard{i}.h5")
        write_store(shards[-1], images, meta, SIZE)
    out = tmp_path / "all" / "images.h5"

    assert gather_stores(shards, out) == 7

    np.testing.assert_array_equal(
        load_cxr_array(out), np.concatenate([images for images, _ in parts])
    )
    expected = pd.concat([read_meta(p) for p in shards], ignore_index=True)
    pd.testing.assert_frame_equal(read_meta(out), expected)
    assert read_meta(out)["dicom_id"].tolist() == [f"dcm-{i}" for i in (0, 1, 2, 3, 200, 201, 202)]
    with h5py.File(out, "r") as store:
        assert store["cxr"].chunks is None and store["cxr"].dtype == np.uint8
        assert store.attrs["size"] == SIZE
    assert files_in(out.parent) == ["images.h5"]


def test_gather_refuses_shards_of_different_sizes(tmp_path: Path):
    images, meta = make_rows(2)
    write_store(tmp_path / "a.h5", images, meta, SIZE)
    write_store(tmp_path / "b.h5", np.zeros((2, 8, 8), np.uint8), meta, 8)
    with pytest.raises(ValueError, match="disagree"):
        gather_stores([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_load_cxr_array_reads_rows_in_the_order_asked(tmp_path: Path):
    images, meta = make_rows(12)
    write_store(tmp_path / "s.h5", images, meta, SIZE)
    rows = [9, 2, 3, 4, 2, 11, 0]  # unsorted, a duplicate, a run
    np.testing.assert_array_equal(load_cxr_array(tmp_path / "s.h5", rows), images[rows])
    np.testing.assert_array_equal(load_cxr_array(tmp_path / "s.h5", [3, 4, 5]), images[3:6])
    np.testing.assert_array_equal(load_cxr_array(tmp_path / "s.h5", slice(5, 9)), images[5:9])
    assert load_cxr_array(tmp_path / "s.h5", []).shape == (0, SIZE, SIZE)
    with pytest.raises(IndexError, match=r"\[0, 12\)"):
        load_cxr_array(tmp_path / "s.h5", [3, 12])
    with open_cxr(tmp_path / "s.h5") as cxr:
        np.testing.assert_array_equal(cxr[4], images[4])


def test_atomic_output_leaves_nothing_when_the_write_fails(tmp_path: Path):
    target = tmp_path / "store.h5"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half a file")
        assert tmp.parent == target.parent and tmp.name.endswith(".tmp")
        raise RuntimeError("job killed mid-write")
    assert files_in(tmp_path) == []


def test_a_killed_writers_leftover_is_reclaimed_by_the_next_write(tmp_path: Path):
    """SIGKILL runs no cleanup: the rerun must overwrite the orphan, not add a second one."""
    images, meta = make_rows(3)
    (tmp_path / ".s.h5.tmp").write_bytes(b"\0" * 4096)  # what a killed writer leaves
    write_store(tmp_path / "s.h5", images, meta, SIZE)
    assert files_in(tmp_path) == ["s.h5"]
    np.testing.assert_array_equal(load_cxr_array(tmp_path / "s.h5"), images)


def test_failed_rewrite_keeps_the_previous_store_intact(tmp_path: Path):
    images, meta = make_rows(3)
    write_store(tmp_path / "s.h5", images, meta, SIZE)
    before = (tmp_path / "s.h5").read_bytes()
    broken = meta.assign(Edema=["yes", "no", "maybe"])  # labels must be numbers
    with pytest.raises(ValueError):
        write_store(tmp_path / "s.h5", images, broken, SIZE)
    with pytest.raises(ValueError, match="uint8"):
        write_store(tmp_path / "s.h5", images.astype(np.float32), meta, SIZE)
    # passes validation, fails inside HDF5 after pixels went to the temp file:
    # a lone surrogate cannot be encoded as UTF-8
    unencodable = meta.assign(dicom_id=["ok", "bad\udc80", "ok2"])
    with pytest.raises(UnicodeEncodeError):
        write_store(tmp_path / "s.h5", images, unencodable, SIZE)
    assert (tmp_path / "s.h5").read_bytes() == before
    assert files_in(tmp_path) == ["s.h5"]


def test_missing_view_is_stored_as_empty_text_but_a_missing_id_is_refused(tmp_path: Path):
    images, meta = make_rows(2)
    write_store(tmp_path / "s.h5", images, meta.assign(view=[np.nan, "PA"]), SIZE)
    assert read_meta(tmp_path / "s.h5")["view"].tolist() == ["", "PA"]
    with pytest.raises(ValueError, match="study_id"):
        write_store(tmp_path / "t.h5", images, meta.assign(study_id=[np.nan, 5.0]), SIZE)
    assert files_in(tmp_path) == ["s.h5"]


def test_write_store_refuses_misaligned_meta(tmp_path: Path):
    images, meta = make_rows(3)
    with pytest.raises(ValueError, match="3 images"):
        write_store(tmp_path / "s.h5", images, meta.iloc[:2], SIZE)
    with pytest.raises(ValueError, match="source_rows"):
        write_store(tmp_path / "s.h5", images, meta.drop(columns="source_rows"), SIZE)
    assert files_in(tmp_path) == []


def test_gather_rejects_concatenates_and_keeps_the_header_when_empty(tmp_path: Path):
    columns = ["dicom_id", "study_id", "subject_id", "split", "image_path", "reason"]
    first = pd.DataFrame(
        [["a", 50000001, 10000001.0, "train", "/x/a.dcm", "file not found"]], columns=columns
    )
    empty = pd.DataFrame(columns=columns)
    last = pd.DataFrame(
        [["c", 50000003, 10000003, "test", "/x/c.dcm", "truncated pixel data"]],
        columns=columns,
    )
    paths = [tmp_path / f"r{i}.csv" for i in range(3)]
    for table, path in zip([first, empty, last], paths, strict=True):
        write_rejects(table, path)
    assert paths[1].read_text().strip() == ",".join(columns)

    assert gather_rejects(paths, tmp_path / "rejects.csv") == 2
    merged = pd.read_csv(tmp_path / "rejects.csv", dtype=str)
    assert merged.columns.tolist() == columns
    assert merged["dicom_id"].tolist() == ["a", "c"]
    assert merged["subject_id"].tolist() == ["10000001", "10000003"]

    assert gather_rejects([paths[1]], tmp_path / "none.csv") == 0
    assert (tmp_path / "none.csv").read_text().strip() == ",".join(columns)
