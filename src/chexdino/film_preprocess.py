"""chexdino's film preprocessing, standalone: shipped as ``preprocess.py`` in every export.

``load_film(path)`` gives the greyscale film chexdino's images stage stores (and
``chexdino predict`` scores): long side to ``STORE_SIZE`` px with Lanczos, centred on a black
square. open_clip's ``preprocess`` then does the rest (bicubic resize to the input size,
3 channels, the model's mean/std), so

    model(preprocess(load_film(path)))

reproduces chexdino's embedding of the film (cosine >= 0.9999, tests/test_export.py).

The steps are chexdino.images' own:

- JPG/PNG with Pillow. JPEGs decode in draft mode at the smallest libjpeg scale whose size
  still holds the final resize (request: ``ceil(w * r), ceil(h * r)`` with
  ``r = STORE_SIZE / max(w, h)``); 16-bit, 32-bit and float PNGs are rescaled by their own
  min and max to 0-255 (rounded), never clipped; everything else is converted to "L".
- DICOM (needs pydicom and, for compressed files, its decoders): Modality LUT, then the VOI
  LUT or the first window (else the film's own min-max), MONOCHROME1 inverted, to uint8.
  chexdino block-averages large frames before the lookup for speed; this file decodes the
  full frame, which differs by a fraction of a grey level on chest films.
- Letterbox: ``r = STORE_SIZE / max(w, h)`` of the decoded picture, new size
  ``int(w * r), int(h * r)`` (CheXzero's arithmetic), Lanczos, pasted at
  ``((S - new_w) // 2, (S - new_h) // 2)`` on black.

Only Pillow and numpy are needed (pydicom for DICOMs); nothing here imports chexdino.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

STORE_SIZE = 320
"""The stored film size the model was trained on (the export writes its run's value)."""

_FAR = 1e9


def load_film(path: str | Path, size: int | None = None) -> Image.Image:
    """The film at ``path`` (.jpg/.jpeg/.png/.dcm) as chexdino stores it: a ``size x size``
    greyscale ("L") PIL image, the film letterboxed on black."""
    size = int(size or STORE_SIZE)
    path = Path(path)
    dicom = path.suffix.lower() == ".dcm"
    pixels = _read_dicom(path) if dicom else _read_with_pillow(path, size)
    if pixels.min() == pixels.max():
        raise ValueError(f"{path}: blank image (every pixel has the value {pixels.flat[0]})")
    return letterbox(Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L"),
                     size)


def letterbox(picture: Image.Image, size: int) -> Image.Image:
    """Long side to ``size`` (Lanczos, CheXzero's ``int()`` arithmetic), centred on black."""
    width, height = picture.size
    ratio = float(size) / max(width, height)
    new_size = (max(1, int(width * ratio)), max(1, int(height * ratio)))
    picture = picture.resize(new_size, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (size, size))
    canvas.paste(picture, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return canvas


def _read_with_pillow(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as picture:
        width, height = picture.size
        ratio = size / max(width, height)
        request = (max(1, math.ceil(width * ratio)), max(1, math.ceil(height * ratio)))
        picture.draft("L", request)  # a no-op unless JPEG
        if picture.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            values = np.asarray(picture, dtype=np.float32)
            low, high = float(values.min()), float(values.max())
            scaled = (values - low) * (255.0 / max(high - low, 1e-12))
            return np.rint(scaled).astype(np.uint8)
        return np.asarray(picture.convert("L"), dtype=np.uint8)


def _read_dicom(path: Path) -> np.ndarray:
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    from pydicom.pixels.processing import apply_voi, apply_windowing

    ds = dcmread(path)
    stored = ds.pixel_array
    modality = apply_modality_lut(stored, ds)
    voi_items = ds.get("VOILUTSequence")
    has_lut = bool(voi_items) and voi_items[0].get("LUTDescriptor") is not None \
        and voi_items[0].get("LUTData") is not None
    if has_lut:
        if modality.dtype.kind == "f":
            modality = np.rint(modality).astype(np.int64)
        count, first = (int(v) for v in voi_items[0].LUTDescriptor[:2])
        entries = apply_voi(np.arange(first, first + (count or 2**16)), ds, index=0)
        low, high = float(entries.min()), float(entries.max())
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        ends = apply_windowing(np.array([-_FAR, _FAR]), ds, index=0)
        low, high = float(ends.min()), float(ends.max())
    else:
        low, high = float(modality.min()), float(modality.max())
    voi = apply_voi_lut(modality, ds, index=0)
    fraction = np.clip((voi.astype(np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        fraction = 1.0 - fraction
    return np.rint(fraction * 255).astype(np.uint8)
