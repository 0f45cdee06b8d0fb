"""Geometry, readers and the shard worker of stage 2 (images -> HDF5), on real files."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from chexdino import LABELS
from chexdino.dicom import read_dicom
from chexdino.errors import ImageReadError
from chexdino.h5store import load_cxr_array, read_meta
from chexdino.images import (
    _decode_in_order,
    load_cxr,
    process_shard,
    read_image,
    read_jpg,
    resize_and_pad,
)
from conftest import MAX_FRAME_PIXELS, STORE_SIZE


def chexzero_preprocess(image: np.ndarray, desired_size: int = 320) -> np.ndarray:
    """CheXzero's ``preprocess`` (data_process.py), transcribed: the reference geometry."""
    img = Image.fromarray(image)
    old_size = img.size
    ratio = float(desired_size) / max(old_size)
    new_size = tuple([int(x * ratio) for x in old_size])
    img = img.resize(new_size, Image.LANCZOS)
    new_img = Image.new("L", (desired_size, desired_size))
    new_img.paste(img, ((desired_size - new_size[0]) // 2, (desired_size - new_size[1]) // 2))
    return np.asarray(new_img)


def nonzero_box(image: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(image)
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def smooth_film(rows: int, cols: int) -> np.ndarray:
    """A smooth uint8 picture (JPEG-friendly), darkest value 28 so padding stays distinct."""
    y, x = np.mgrid[0:rows, 0:cols]
    return (128 + 100 * np.sin(x / (cols / 7)) * np.cos(y / (rows / 5))).astype(np.uint8)


def corpus(name: str) -> Path:
    return Path(get_testdata_file(name))


# --- geometry ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "box"),
    [
        ((300, 200), (0, 319, 53, 265)),  # portrait: 213 wide, pasted at x = 53
        ((150, 400), (100, 219, 0, 319)),  # landscape: 120 tall, pasted at y = 100
        ((581, 400), (0, 318, 50, 269)),  # int() truncation: long side comes out 319
        ((320, 320), (0, 319, 0, 319)),
    ],
)
def test_resize_and_pad_places_the_film_where_chexzero_did(shape, box):
    image = resize_and_pad(np.full(shape, 200, dtype=np.uint8), size=STORE_SIZE)
    assert image.shape == (320, 320) and image.dtype == np.uint8
    assert nonzero_box(image) == box


@pytest.mark.parametrize("shape", [(3056, 2544), (2544, 3056), (1000, 999), (700, 700), (17, 5)])
def test_resize_and_pad_equals_chexzero_pixel_for_pixel(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    np.testing.assert_array_equal(resize_and_pad(image, size=STORE_SIZE),
                                  chexzero_preprocess(image))


def test_square_film_fills_the_whole_canvas():
    rng = np.random.default_rng(0)
    image = rng.integers(100, 200, size=(1000, 1000), dtype=np.uint8)
    assert (resize_and_pad(image, size=STORE_SIZE) > 0).all()


# --- readers -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3000, 2000), (2000, 3000)])
def test_jpg_draft_decode_gives_the_full_decode_geometry(tmp_path: Path, shape):
    path = tmp_path / "film.jpg"
    Image.fromarray(smooth_film(*shape)).save(path, quality=92)
    drafted = read_jpg(path, 320, max_frame_pixels=MAX_FRAME_PIXELS)
    full = np.asarray(Image.open(path).convert("L"))

    # the coarsest power-of-two scale that still holds a 320 long side: 1/8 here (375 px).
    # Asking Pillow for (320, 320) would let the short side decide: 1/4 (750 px).
    assert 320 <= max(drafted.shape) < 2 * 320
    assert math.isclose(drafted.shape[0] / drafted.shape[1], shape[0] / shape[1], rel_tol=0.01)
    from_draft = resize_and_pad(drafted, size=STORE_SIZE)
    from_full = resize_and_pad(full, size=STORE_SIZE)
    assert nonzero_box(from_draft) == nonzero_box(from_full)
    assert np.abs(from_draft.astype(int) - from_full).mean() < 3

    image, source_shape = load_cxr(path, 320, max_frame_pixels=MAX_FRAME_PIXELS)
    assert source_shape == shape  # the file's size, not the draft's
    np.testing.assert_array_equal(image, from_draft)


def test_read_image_dispatches_on_suffix(tmp_path: Path):
    np.testing.assert_array_equal(
        read_image(corpus("MR_small.dcm"), size=STORE_SIZE, max_frame_pixels=MAX_FRAME_PIXELS),
        read_dicom(corpus("MR_small.dcm"), max_frame_pixels=MAX_FRAME_PIXELS)
    )
    film = smooth_film(90, 60)
    Image.fromarray(film).save(tmp_path / "film.png")
    np.testing.assert_array_equal(read_image(tmp_path / "film.png", size=STORE_SIZE,
                                             max_frame_pixels=MAX_FRAME_PIXELS), film)


def test_16bit_png_is_scaled_to_full_range_not_clipped(tmp_path: Path):
    values = (smooth_film(90, 60).astype(np.uint16) * 200).astype(np.uint16)  # up to ~45k
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png", size=STORE_SIZE, max_frame_pixels=MAX_FRAME_PIXELS)
    assert image.min() == 0 and image.max() == 255
    assert np.corrcoef(image.ravel(), values.ravel())[0, 1] > 0.999


def test_dicom_source_shape_is_rows_by_columns():
    image, source_shape = load_cxr(corpus("JPEG2000_UNC.dcm"), size=STORE_SIZE,
                                   max_frame_pixels=MAX_FRAME_PIXELS)  # 1024 rows x 256 columns
    assert source_shape == (1024, 256)
    # 80 px wide, centred at columns 120..199; the film itself may contain zeros
    assert not image[:, :120].any() and not image[:, 200:].any()
    assert image[:, 120:200].std() > 10


@pytest.mark.parametrize(("name", "size"), [("RG1_UNCR.dcm", 320), ("JPEG2000_UNC.dcm", 100)])
def test_block_averaged_dicom_keeps_the_full_frame_geometry(name: str, size: int):
    # RG1_UNCR is 1955 x 1841 (factor 3 leaves partial blocks on both edges); JPEG2000_UNC is
    # 1024 x 256 (factor 5: a thin strip, 25 px wide at size 100)
    fast, source_shape = load_cxr(corpus(name), size, max_frame_pixels=MAX_FRAME_PIXELS)
    full_resolution = read_dicom(corpus(name), max_frame_pixels=MAX_FRAME_PIXELS)
    full = resize_and_pad(full_resolution, size)
    assert source_shape == full_resolution.shape
    assert nonzero_box(fast) == nonzero_box(full)
    assert np.abs(fast.astype(int) - full).mean() < 1


def test_dicom_too_small_to_reduce_gives_the_full_resolution_result_exactly():
    # 64 x 64 at size 320 (and 1024 x 256 at 320): no block averaging, same pixels as before
    for name in ("MR_small.dcm", "JPEG2000_UNC.dcm"):
        expected = resize_and_pad(read_dicom(corpus(name), max_frame_pixels=MAX_FRAME_PIXELS), 320)
        np.testing.assert_array_equal(load_cxr(corpus(name), 320,
                                               max_frame_pixels=MAX_FRAME_PIXELS)[0], expected)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("missing.jpg", None, "file not found"),
        ("missing.dcm", None, "file not found"),
        ("notes.jpg", b"not a picture at all", "not an image file"),
        ("scan.tif", b"II*\x00", "unsupported file type '.tif'"),
    ],
)
def test_read_image_failures_name_the_problem(tmp_path: Path, name, content, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError) as caught:
        read_image(path, size=STORE_SIZE, max_frame_pixels=MAX_FRAME_PIXELS)
    assert reason in caught.value.reason
    assert caught.value.path == str(path)


def test_truncated_jpg_is_rejected(tmp_path: Path):
    whole = tmp_path / "whole.jpg"
    Image.fromarray(smooth_film(600, 400)).save(whole, quality=92)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:3000])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(cut, size=STORE_SIZE, max_frame_pixels=MAX_FRAME_PIXELS)


# --- the shard worker --------------------------------------------------------------------


def make_manifest(tmp_path: Path) -> pd.DataFrame:
    """Seven films: four readable (DICOM x2, JPG, PNG) and three that must be rejected."""
    Image.fromarray(smooth_film(400, 300)).save(tmp_path / "portrait.jpg", quality=92)
    Image.fromarray(smooth_film(200, 260)).save(tmp_path / "landscape.png")
    (tmp_path / "text.dcm").write_text("IMPRESSION: none\n")
    paths = [
        corpus("MR_small.dcm"),
        tmp_path / "text.dcm",
        tmp_path / "portrait.jpg",
        tmp_path / "absent.jpg",
        corpus("JPEG2000_UNC.dcm"),
        corpus("emri_small.dcm"),  # 10 frames
        tmp_path / "landscape.png",
    ]
    n = len(paths)
    rng = np.random.default_rng(1)
    labels = rng.choice([1.0, 0.0, -1.0, np.nan], size=(n, len(LABELS)))
    manifest = pd.DataFrame(
        {
            "dicom_id": [f"d{i:02d}" for i in range(n)],
            "study_id": [50000000 + i for i in range(n)],
            "subject_id": [10000000 + i // 2 for i in range(n)],
            "split": ["train", "train", "validate", "test", "train", "train", "test"],
            "view": ["PA", "AP", "PA", "PA", "AP", "PA", "AP"],
            "image_path": [str(p) for p in paths],
        }
    )
    manifest[list(LABELS)] = labels
    return manifest.set_index(pd.Index(range(100, 100 + n)))  # a non-default index


KEPT = [0, 2, 4, 6]
REJECTED = {1: "not a DICOM file", 3: "file not found", 5: "multi-frame"}


def test_process_shard_keeps_or_rejects_every_row_in_order(tmp_path: Path):
    manifest = make_manifest(tmp_path)
    out_h5, rejects_csv = tmp_path / "out" / "shard.h5", tmp_path / "out" / "rejects.csv"
    counts = process_shard(manifest, out_h5, rejects_csv, size=64, threads=1,
                           max_frame_pixels=MAX_FRAME_PIXELS)

    assert counts == {"input": 7, "kept": 4, "rejected": 3}
    meta = read_meta(out_h5)
    kept_rows = manifest.iloc[KEPT]
    assert meta["dicom_id"].tolist() == kept_rows["dicom_id"].tolist()
    assert meta["study_id"].tolist() == [str(s) for s in kept_rows["study_id"]]
    assert meta["view"].tolist() == kept_rows["view"].tolist()
    np.testing.assert_array_equal(meta[list(LABELS)], kept_rows[list(LABELS)].astype(np.float32))
    assert meta[["source_rows", "source_cols"]].values.tolist() == [
        [64, 64],
        [400, 300],
        [1024, 256],
        [200, 260],
    ]
    expected = np.stack([load_cxr(Path(p), 64, max_frame_pixels=MAX_FRAME_PIXELS)[0]
                         for p in kept_rows["image_path"]])
    np.testing.assert_array_equal(load_cxr_array(out_h5), expected)

    rejects = pd.read_csv(rejects_csv, dtype=str)
    assert rejects.columns.tolist() == [
        "dicom_id",
        "study_id",
        "subject_id",
        "split",
        "image_path",
        "reason",
    ]
    assert rejects["dicom_id"].tolist() == [f"d{i:02d}" for i in REJECTED]
    for reason, expected_reason in zip(rejects["reason"], REJECTED.values(), strict=True):
        assert expected_reason in reason
    assert set(meta["dicom_id"]) | set(rejects["dicom_id"]) == set(manifest["dicom_id"])
    assert sorted(p.name for p in out_h5.parent.iterdir()) == ["rejects.csv", "shard.h5"]


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_worker_pools_return_the_same_results_in_manifest_order(tmp_path: Path, pool):
    paths = [str(p) for p in make_manifest(tmp_path)["image_path"]] * 2
    inline = list(_decode_in_order(paths, 64, MAX_FRAME_PIXELS, 1))
    pooled = list(_decode_in_order(paths, 64, MAX_FRAME_PIXELS, 2, pool))
    assert [r[2] for r in pooled] == [r[2] for r in inline]
    for (image, shape, _), (image_ref, shape_ref, _) in zip(pooled, inline, strict=True):
        assert shape == shape_ref
        assert (image is None and image_ref is None) or np.array_equal(image, image_ref)


def test_process_shard_with_threads_writes_the_same_store(tmp_path: Path):
    manifest = make_manifest(tmp_path)
    process_shard(manifest, tmp_path / "a.h5", tmp_path / "a.csv", size=64, threads=1,
                  max_frame_pixels=MAX_FRAME_PIXELS)
    process_shard(manifest, tmp_path / "b.h5", tmp_path / "b.csv", size=64, threads=2,
                  max_frame_pixels=MAX_FRAME_PIXELS)
    np.testing.assert_array_equal(
        load_cxr_array(tmp_path / "a.h5"), load_cxr_array(tmp_path / "b.h5")
    )
    pd.testing.assert_frame_equal(read_meta(tmp_path / "a.h5"), read_meta(tmp_path / "b.h5"))
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_shard_where_every_film_fails_still_writes_both_outputs(tmp_path: Path):
    manifest = make_manifest(tmp_path).iloc[[1, 3, 5]]
    counts = process_shard(manifest, tmp_path / "s.h5", tmp_path / "r.csv", size=32,
                           max_frame_pixels=MAX_FRAME_PIXELS)
    assert counts == {"input": 3, "kept": 0, "rejected": 3}
    with h5py.File(tmp_path / "s.h5", "r") as store:
        assert store["cxr"].shape == (0, 32, 32) and store["cxr"].dtype == np.uint8
    assert len(read_meta(tmp_path / "s.h5")) == 0
    assert len(pd.read_csv(tmp_path / "r.csv")) == 3


def test_manifest_without_label_columns_is_refused(tmp_path: Path):
    manifest = make_manifest(tmp_path).drop(columns=["Edema"])
    with pytest.raises(ValueError, match="Edema"):
        process_shard(manifest, tmp_path / "s.h5", tmp_path / "r.csv", size=32,
                      max_frame_pixels=MAX_FRAME_PIXELS)
    assert not (tmp_path / "s.h5").exists()


def test_convert_shard_takes_its_block_of_the_manifest_at_the_configured_size(tmp_path: Path):
    """The images stage: shard k of n is the k-th contiguous block, so gathering the shards
    in order gives the manifest's order; the stored size is images.size."""
    from chexdino.config import ImagesConfig
    from chexdino.images import convert_shard

    manifest = make_manifest(tmp_path)
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    cfg = ImagesConfig.from_section({"size": 48, "shards": 3})
    seen = []
    for k in (1, 2, 3):
        counts = convert_shard(tmp_path / "manifest.csv", (k, 3), tmp_path / f"{k}.h5",
                               tmp_path / f"{k}.csv", cfg)
        assert counts["input"] == len(range(7)[(k - 1) * 7 // 3:k * 7 // 3])
        assert load_cxr_array(tmp_path / f"{k}.h5").shape[1:] == (48, 48)
        kept = read_meta(tmp_path / f"{k}.h5")["dicom_id"].tolist()
        rejected = pd.read_csv(tmp_path / f"{k}.csv", dtype=str)["dicom_id"].tolist()
        seen += sorted(kept + rejected)
    assert seen == manifest["dicom_id"].tolist()
