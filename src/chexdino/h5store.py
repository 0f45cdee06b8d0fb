"""The HDF5 image store: one row per kept image, ids and labels row-aligned with the pixels.

Layout (every dataset has N rows):

- ``cxr``: uint8 (N, size, size), CONTIGUOUS. No chunking and no compression, because
  fancy-indexing a chunked dataset (random training batches) was measured ~200x slower.
- ``dicom_id``, ``study_id``, ``subject_id``, ``split``, ``view``: UTF-8 strings. Ids are
  strings everywhere so that a join never trips over 10000032 vs "10000032" vs 1.0000032e7.
- ``source_shape``: int32 (N, 2), the (rows, cols) of the film before resizing.
- ``labels``: float32 (N, 14), 1 / 0 / -1, NaN where the label table was blank; attribute
  ``label_names`` gives the column order (``chexdino.LABELS``).
- file attributes ``size`` and ``chexdino_version``, and ``environment`` (JSON: where and
  with what the job that wrote the store ran, :func:`chexdino.provenance.environment`).
- a gathered store also has ``provenance/image_shards``: one JSON ``environment`` per shard
  job, in shard order (the shards themselves are deleted after the gather). It is the one
  dataset without N rows.

Every file is written beside its final name and renamed into place
(:func:`chexdino.atomic.atomic_output`), so a killed job never leaves a partial file that
looks complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from chexdino import LABELS, __version__
from chexdino.atomic import atomic_output
from chexdino.tables import ID_COLUMNS, IMAGE_REJECT_COLUMNS

CXR = "cxr"
KEY_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id")
SHAPE_COLUMNS: tuple[str, ...] = ("source_rows", "source_cols")
META_COLUMNS: tuple[str, ...] = ID_COLUMNS + SHAPE_COLUMNS + LABELS
"""Columns of the ``meta`` table that :func:`write_store` takes and :func:`read_meta` returns."""
_COPY_BLOCK_ROWS = 1024  # 100 MB of 320x320 images per read while gathering


def write_store(path: Path, images: np.ndarray, meta: pd.DataFrame, size: int,
                environment: dict[str, Any] | None = None) -> None:
    """Write one image store atomically; ``meta`` row i describes ``images[i]``.

    ``meta`` needs the columns in :data:`META_COLUMNS` (ids, ``source_rows``/``source_cols``,
    the 14 labels). Inputs are validated before anything is written. ``environment`` (the
    writing job's record) is kept as the ``environment`` attribute.
    """
    _check_images(images, size)
    _check_meta(meta, len(images))
    ids = {name: _text_column(meta[name], required=name in KEY_COLUMNS) for name in ID_COLUMNS}
    source_shape = meta[list(SHAPE_COLUMNS)].to_numpy(dtype=np.int32)
    labels = meta[list(LABELS)].to_numpy(dtype=np.float32)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as store:
        _create_layout(store, len(images), size, LABELS)
        _record_environment(store, environment)
        store[CXR][...] = images
        for name, values in ids.items():
            store[name][...] = values
        store["source_shape"][...] = source_shape
        store["labels"][...] = labels


def gather_stores(shard_paths: Sequence[Path], out_path: Path,
                  environment: dict[str, Any] | None = None) -> int:
    """Concatenate shard stores, in the given order, into one contiguous store; return N.

    Streams block by block into a preallocated ``cxr``, so memory stays at one block
    whatever the dataset size. Each shard's ``environment`` record is copied into
    ``provenance/image_shards``, so the deleted shard jobs stay on the record.
    """
    if not shard_paths:
        raise ValueError("gather_stores needs at least one shard store")
    counts, size, label_names = _check_shards_match(shard_paths)
    total = sum(counts)
    with atomic_output(out_path) as tmp, h5py.File(tmp, "w") as out:
        _create_layout(out, total, size, label_names)
        _record_environment(out, environment)
        out.create_dataset("provenance/image_shards", data=_shard_environments(shard_paths),
                           dtype=h5py.string_dtype())
        start = 0
        shards = list(zip(shard_paths, counts, strict=True))
        for path, count in tqdm(shards, desc="gather", unit="shard"):
            with h5py.File(path, "r") as shard:
                _copy_rows(shard, out, start, count)
            start += count
    return total


def write_rejects(rejects: pd.DataFrame, path: Path) -> None:
    """Write an image reject table (:data:`~chexdino.tables.IMAGE_REJECT_COLUMNS`) atomically;
    header even if empty."""
    missing = [c for c in IMAGE_REJECT_COLUMNS if c not in rejects.columns]
    if missing:
        raise ValueError(f"reject table lacks columns {missing}")
    table = rejects.loc[:, list(IMAGE_REJECT_COLUMNS)].copy()
    for name in KEY_COLUMNS:
        table[name] = [_id_text(v) for v in table[name]]
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False)


def gather_rejects(csv_paths: Sequence[Path], out_csv: Path) -> int:
    """Concatenate shard reject tables in order into ``out_csv``; return the row count."""
    tables = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in csv_paths]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    table = table.reindex(columns=list(IMAGE_REJECT_COLUMNS))
    write_rejects(table, out_csv)
    return len(table)


def stored_size(path: Path) -> int:
    """The side of a store's square films (the images stage's ``images.size``)."""
    with h5py.File(path, "r") as store:
        return int(store.attrs["size"]) if "size" in store.attrs else int(store["cxr"].shape[-1])


def read_meta(path: Path) -> pd.DataFrame:
    """Ids, source shapes and labels of a store, one row per ``cxr`` row (N rows)."""
    with h5py.File(path, "r") as store:
        meta = pd.DataFrame({name: store[name].asstr()[()] for name in ID_COLUMNS}).astype(str)
        shape = store["source_shape"][()]
        meta["source_rows"], meta["source_cols"] = shape[:, 0], shape[:, 1]
        names = [str(n) for n in store["labels"].attrs["label_names"]]
        labels = pd.DataFrame(store["labels"][()], columns=names)
    return pd.concat([meta, labels], axis=1)


@contextmanager
def open_cxr(path: Path) -> Iterator[h5py.Dataset]:
    """Open a store read-only and yield its ``cxr`` dataset (slice it to read pixels)."""
    with h5py.File(path, "r") as store:
        yield store[CXR]


def load_cxr_array(
    path: Path, rows: slice | Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """Read images into memory: all of them (one read), a slice, or rows in the given order.

    A row list is read as one HDF5 selection of its sorted unique rows, which a contiguous
    dataset serves fast (150k of 300k rows: 0.3 s; a read per run of rows took 8 s), then
    put back in the caller's order; duplicates are allowed.
    """
    with open_cxr(path) as cxr:
        if rows is None:
            return cxr[()]
        if isinstance(rows, slice):
            return cxr[rows]
        wanted = _checked_row_indices(rows, len(cxr))
        unique, inverse = np.unique(wanted, return_inverse=True)
        if unique.size == 0:
            return np.empty((0, *cxr.shape[1:]), dtype=cxr.dtype)
        block = cxr[unique]
    if len(unique) == len(wanted) and np.array_equal(unique, wanted):
        return block
    return block[inverse.ravel()]


def _create_layout(store: h5py.File, n: int, size: int, label_names: Sequence[str]) -> None:
    """Preallocate every dataset of the layout with N rows (N may be 0)."""
    store.attrs["size"] = int(size)
    store.attrs["chexdino_version"] = __version__
    store.create_dataset(CXR, shape=(n, size, size), dtype=np.uint8)  # contiguous
    for name in ID_COLUMNS:
        store.create_dataset(name, shape=(n,), dtype=h5py.string_dtype())
    store.create_dataset("source_shape", shape=(n, 2), dtype=np.int32)
    labels = store.create_dataset("labels", shape=(n, len(label_names)), dtype=np.float32)
    labels.attrs["label_names"] = list(label_names)


def _record_environment(store: h5py.File, environment: dict[str, Any] | None) -> None:
    if environment is not None:
        store.attrs["environment"] = json.dumps(environment)


def _shard_environments(shard_paths: Sequence[Path]) -> list[str]:
    """Each shard's ``environment`` attribute (JSON text), ``{}`` for a shard without one."""
    records = []
    for path in shard_paths:
        with h5py.File(path, "r") as shard:
            records.append(str(shard.attrs.get("environment", "{}")))
    return records


def _copy_rows(shard: h5py.File, out: h5py.File, start: int, count: int) -> None:
    """Copy one shard into rows [start, start+count) of the output store."""
    for offset in range(0, count, _COPY_BLOCK_ROWS):
        stop = min(offset + _COPY_BLOCK_ROWS, count)
        out[CXR][start + offset : start + stop] = shard[CXR][offset:stop]
    if count == 0:
        return
    for name in (*ID_COLUMNS, "source_shape", "labels"):
        out[name][start : start + count] = shard[name][()]


def _check_shards_match(shard_paths: Sequence[Path]) -> tuple[list[int], int, list[str]]:
    """Row counts, and the size and label order that every shard must share."""
    counts, sizes, label_orders = [], set(), set()
    for path in shard_paths:
        with h5py.File(path, "r") as shard:
            counts.append(shard[CXR].shape[0])
            sizes.add(int(shard.attrs["size"]))
            label_orders.add(tuple(str(n) for n in shard["labels"].attrs["label_names"]))
    if len(sizes) != 1 or len(label_orders) != 1:
        raise ValueError(
            f"shards disagree on image size {sorted(sizes)} or label order; "
            f"rerun the image stage for all of {[str(p) for p in shard_paths]}"
        )
    return counts, sizes.pop(), list(label_orders.pop())


def _check_images(images: np.ndarray, size: int) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
        raise ValueError(
            f"images must be uint8 (N, {size}, {size}); got {images.dtype} {images.shape}"
        )


def _check_meta(meta: pd.DataFrame, n: int) -> None:
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise ValueError(f"meta lacks columns {missing}")
    if len(meta) != n:
        raise ValueError(f"meta has {len(meta)} rows but there are {n} images")


def _text_column(values: pd.Series, required: bool) -> np.ndarray:
    """A column as strings; a missing key id is an error, a missing split/view becomes ''."""
    if required and values.isna().any():
        raise ValueError(f"column {values.name!r} has missing ids")
    return np.array([_id_text(v) for v in values], dtype=object)


def _id_text(value: object) -> str:
    """One id as text: integral floats (ids read next to NaNs) lose their '.0'; NaN -> ''."""
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return ""
        if float(value).is_integer():
            return str(int(value))
    return str(value)


def _checked_row_indices(rows: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    wanted = np.asarray(rows)
    if wanted.ndim != 1 or (wanted.size and wanted.dtype.kind not in "iu"):
        raise IndexError("rows must be a 1-D list of integer row numbers")
    wanted = wanted.astype(np.int64)
    if wanted.size and (wanted.min() < 0 or wanted.max() >= n):
        raise IndexError(f"row numbers must lie in [0, {n}); got {wanted.min()}..{wanted.max()}")
    return wanted
