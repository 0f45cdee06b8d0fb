"""Stage 2, images -> HDF5: decode each film, resize and pad it as CheXzero did, store a shard.

CheXzero's stored images are the reference geometry: scale so the long side is ``size``
(``int()`` truncation included), LANCZOS, paste centred on a black ``size x size`` canvas.
JPGs are decoded with Pillow's JPEG draft mode, which lets libjpeg do most of the
downscaling inside the IDCT (measured here: 31 vs 96-111 ms per 3056x2544 film). DICOMs are
block-averaged by an integer factor before their lookup table (``REDUCING_GAP``), then
Lanczos-resized from the reduced frame with the box that keeps the full frame's geometry.
Throughput and fidelity: ``bench/preprocess.py`` and docs/performance.md.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from chexdino import LABELS
from chexdino.config import ImagesConfig
from chexdino.dicom import ReducedFilm, read_dicom, read_dicom_reduced
from chexdino.errors import ImageReadError
from chexdino.h5store import write_rejects, write_store
from chexdino.tables import ID_COLUMNS, IMAGE_REJECT_COLUMNS, MANIFEST_COLUMNS

DICOM_SUFFIXES = (".dcm",)
PILLOW_SUFFIXES = (".jpg", ".jpeg", ".png")
PoolKind = Literal["process", "thread"]
POOL: PoolKind = "process"
"""Pool used when ``threads > 1``; process_shard's docstring gives the timing behind it."""

REDUCING_GAP = 2
"""A DICOM frame is block-averaged to no less than this many times the output size before
the final Lanczos resize; see :func:`chexdino.dicom.reduction_factor`."""

Decoded = tuple[np.ndarray | None, tuple[int, int] | None, str | None]
"""(image, source (rows, cols), None) for a kept film, or (None, None, reason) for a reject."""


def read_jpg(path: Path, size: int, max_frame_pixels: int) -> np.ndarray:
    """Greyscale pixels of a JPG/PNG. JPEGs decode at reduced scale (long side >= size),
    enough for :func:`resize_and_pad`; PNGs decode at full size."""
    return _read_with_pillow(Path(path), size, max_frame_pixels)[0]


def read_image(
    path: Path, size: int, max_frame_pixels: int
) -> np.ndarray:
    """Decode a .dcm, .jpg/.jpeg or .png film to a 2-D uint8 array (bright = dense)."""
    return _decode(Path(path), size, max_frame_pixels)[0]


def resize_and_pad(image: np.ndarray, size: int) -> np.ndarray:
    """CheXzero's stored-image geometry: long side to ``size``, centred on black, uint8.

    Same arithmetic as CheXzero's ``preprocess``: ``ratio = size / max(w, h)``,
    ``new = int(w * ratio), int(h * ratio)`` (so a long side can come out at size - 1
    through float rounding), paste at ``((size - new_w) // 2, (size - new_h) // 2)``.
    """
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"expected a non-empty 2-D greyscale image, got shape {image.shape}")
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L")
    return _fit_on_canvas(picture, picture.size, size)


def _fit_on_canvas(
    picture: Image.Image,
    film_size: tuple[int, int],
    size: int,
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Lanczos-resize ``box`` of ``picture`` to the size CheXzero gives a ``film_size`` (w, h)
    film, and paste it centred on a black ``size x size`` canvas."""
    width, height = film_size
    ratio = float(size) / max(width, height)
    new_size = (max(1, int(width * ratio)), max(1, int(height * ratio)))  # >= 1: thin strips
    picture = picture.resize(new_size, Image.Resampling.LANCZOS, box=box)
    canvas = Image.new("L", (size, size))
    canvas.paste(picture, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def load_cxr(
    path: Path, size: int, max_frame_pixels: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """The stored (size, size) image of a film and the film's own (rows, cols).

    A film whose header claims more than ``max_frame_pixels`` is rejected unread.
    """
    path = Path(path)
    _check_readable(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        film = read_dicom_reduced(path, REDUCING_GAP * size, max_frame_pixels)
        return _resize_reduced(film, size), film.source_shape
    image, source_shape = _read_with_pillow(path, size, max_frame_pixels)
    return resize_and_pad(image, size), source_shape


def _resize_reduced(film: ReducedFilm, size: int) -> np.ndarray:
    """CheXzero's geometry for the full frame, resampled from its block-averaged copy."""
    rows, cols = film.source_shape
    box = (0.0, 0.0, cols / film.factor, rows / film.factor)
    picture = Image.fromarray(np.ascontiguousarray(film.image, dtype=np.uint8), mode="L")
    return _fit_on_canvas(picture, (cols, rows), size, box)


def shard_rows(n_rows: int, k: int, n: int) -> slice:
    """Contiguous block ``k`` of ``n`` (1-based), so gathering in order keeps manifest order."""
    return slice((k - 1) * n_rows // n, k * n_rows // n)


def convert_shard(manifest_csv: Path, shard: tuple[int, int], out_h5: Path, rejects_csv: Path,
                  cfg: ImagesConfig, threads: int = 1,
                  environment: dict[str, Any] | None = None) -> dict[str, int]:
    """The images stage: shard ``k`` of ``n`` of the manifest into its store and rejects.

    ``environment`` (this job's record) goes into the shard store for the provenance table.
    """
    from chexdino.selection import read_manifest

    manifest = read_manifest(Path(manifest_csv))
    k, n = shard
    part = manifest.iloc[shard_rows(len(manifest), k, n)].reset_index(drop=True)
    return process_shard(part, out_h5, rejects_csv, size=cfg.size, threads=threads,
                         max_frame_pixels=cfg.max_frame_pixels, environment=environment)


def process_shard(
    manifest: pd.DataFrame,
    out_h5: Path,
    rejects_csv: Path,
    size: int,
    max_frame_pixels: int,
    threads: int = 1,
    pool: PoolKind = POOL,
    environment: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Decode one shard's films into an image store plus a reject table.

    Every manifest row lands in exactly one of the two; kept rows keep manifest order.
    ``threads > 1`` decodes in a pool of that many workers, processes by default.
    Measured on 2 cores, ms per MIMIC-sized film (inline / 2 threads / 2 processes):
    native 12-bit DICOM 21 / 13 / 16, JPG 21 / 12 / 12 (bench/preprocess.py films), JPEG
    2000 1329 / 1448 / 1076 (decoder-bound). Threads win slightly where numpy and Pillow
    release the GIL, but the JPEG 2000 decoder (pylibjpeg-openjpeg) holds it, so threads
    cannot speed that up at all; processes scale for every codec.
    Films larger than ``max_frame_pixels`` are rejected before decoding.
    Returns ``{"input", "kept", "rejected"}`` counts.
    """
    _check_manifest(manifest)
    manifest = manifest.reset_index(drop=True)
    n = len(manifest)
    images = np.empty((n, size, size), dtype=np.uint8)
    source_shapes = np.empty((n, 2), dtype=np.int32)
    kept = np.zeros(n, dtype=bool)
    reasons: list[str] = []
    n_kept = 0  # kept films fill images[] front to back, in manifest order
    paths = [str(p) for p in manifest["image_path"]]
    results = _decode_in_order(paths, size, max_frame_pixels, threads, pool)
    for row, (image, shape, reason) in enumerate(_progress(results, n, Path(out_h5).name)):
        if reason is None:
            images[n_kept], source_shapes[n_kept] = image, shape
            kept[row] = True
            n_kept += 1
        else:
            reasons.append(reason)
    meta = _kept_meta(manifest[kept], source_shapes[:n_kept])
    rejects = manifest.loc[~kept, list(IMAGE_REJECT_COLUMNS[:-1])].assign(reason=reasons)
    write_store(Path(out_h5), images[:n_kept], meta, size, environment)
    write_rejects(rejects, Path(rejects_csv))
    return {"input": n, "kept": n_kept, "rejected": n - n_kept}


def _decode(
    path: Path, size: int, max_frame_pixels: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Dispatch on the suffix; returns the decoded picture and the film's (rows, cols)."""
    _check_readable(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        image = read_dicom(path, max_frame_pixels)
        return image, (int(image.shape[0]), int(image.shape[1]))
    return _read_with_pillow(path, size, max_frame_pixels)


def _check_readable(path: Path) -> None:
    """A known image suffix and an existing file, or the reason for the reject table."""
    if path.suffix.lower() not in DICOM_SUFFIXES + PILLOW_SUFFIXES:
        raise ImageReadError(
            path, f"unsupported file type '{path.suffix}' (expected .dcm, .jpg, .jpeg, .png)"
        )
    if not path.is_file():
        raise ImageReadError(path, "file not found")


def _read_with_pillow(
    path: Path, size: int, max_frame_pixels: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Greyscale pixels (JPEG at draft scale) and the file's full (rows, cols)."""
    try:
        with Image.open(path) as picture:  # reads the header only
            width, height = picture.size
            if width * height > max_frame_pixels:
                raise ImageReadError(
                    path,
                    f"frame of {height} x {width} pixels is larger than "
                    f"images.max_frame_pixels ({max_frame_pixels:,}); refused before decoding",
                )
            picture.draft("L", _draft_request(width, height, size))  # no-op unless JPEG
            pixels = _greyscale_pixels(picture)
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file not found") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not an image file Pillow can read") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"refused before decoding: {_first_line(exc)}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"truncated or corrupt image: {_first_line(exc)}") from exc
    if pixels.min() == pixels.max():
        raise ImageReadError(path, f"blank image: every pixel has the value {pixels.flat[0]}")
    return pixels, (height, width)


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def _draft_request(width: int, height: int, size: int) -> tuple[int, int]:
    """The smallest (w, h) that still holds the final resize, keeping the aspect ratio.

    Pillow reduces by the largest power of two <= min(w // req_w, h // req_h). Asking for
    (size, size) would let the *short* side decide, so a portrait film would decode at a
    larger scale than the long-side-to-``size`` resize needs.
    """
    ratio = size / max(width, height)
    return max(1, math.ceil(width * ratio)), max(1, math.ceil(height * ratio))


def _greyscale_pixels(picture: Image.Image) -> np.ndarray:
    """uint8 greyscale; 16-bit and float greyscale PNGs are min-max scaled, not clipped."""
    if picture.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(picture, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / max(high - low, 1e-12))
        return np.rint(scaled).astype(np.uint8)
    return np.asarray(picture.convert("L"), dtype=np.uint8)


def _decode_one(path: str, size: int, max_frame_pixels: int) -> Decoded:
    """Worker: one film to its stored image, or to the reason it was rejected."""
    try:
        image, source_shape = load_cxr(Path(path), size, max_frame_pixels)
    except ImageReadError as exc:
        return None, None, exc.reason
    return image, source_shape, None


def _decode_in_order(
    paths: list[str], size: int, max_frame_pixels: int, workers: int, pool: PoolKind = POOL,
) -> Iterator[Decoded]:
    """Decode in manifest order, inline for one worker, else in a pool of ``workers``."""
    limits = repeat(max_frame_pixels)
    if workers <= 1 or len(paths) <= 1:
        yield from map(_decode_one, paths, repeat(size), limits)
        return
    executor = _make_pool(pool, workers)
    try:
        chunks = {"chunksize": 4} if pool == "process" else {}
        yield from executor.map(_decode_one, paths, repeat(size), limits, **chunks)
    finally:  # on an error downstream, drop the queued films instead of decoding them all
        executor.shutdown(wait=True, cancel_futures=True)


def _make_pool(pool: PoolKind, workers: int) -> Executor:
    """Worker processes come from a forkserver that has imported this module once.

    Forking the caller directly is unsafe once it runs threads (tqdm's monitor, h5py),
    and a spawned worker would pay ~0.7 s of imports each.
    """
    if pool == "thread":
        return ThreadPoolExecutor(max_workers=workers)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _progress(results: Iterable[Decoded], total: int, label: str) -> Iterable[Decoded]:
    """A tqdm bar; in a non-interactive log it updates every 30 s instead of flooding it."""
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(results, total=total, desc=f"decode {label}", unit="img", mininterval=interval)


def _check_manifest(manifest: pd.DataFrame) -> None:
    needed = [c for c in MANIFEST_COLUMNS if c != "report_path"]  # reports are not read here
    missing = [c for c in needed if c not in manifest.columns]
    if missing:
        raise ValueError(f"image manifest lacks columns {missing}")


def _kept_meta(kept_rows: pd.DataFrame, source_shapes: np.ndarray) -> pd.DataFrame:
    """The store's row metadata: ids, the films' own shapes, the labels as floats."""
    meta = kept_rows.loc[:, [*ID_COLUMNS, *LABELS]].reset_index(drop=True)
    meta["source_rows"] = source_shapes[:, 0]
    meta["source_cols"] = source_shapes[:, 1]
    return meta
