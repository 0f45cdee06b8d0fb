"""Decode one DICOM radiograph into the 2-D uint8 display image the model is trained on.

The display pipeline follows DICOM PS3.3 C.11: stored values -> Modality LUT (or rescale
slope/intercept) -> VOI LUT (or window) -> MONOCHROME1 inversion -> 0..255. Both LUT stages
are pydicom's own (``apply_modality_lut``, ``apply_voi_lut``), but they are evaluated once
per *possible stored value* (at most 65,536 of them for 8/16-bit pixels) instead of once per
pixel: the result is a uint8 lookup table indexed by the stored pixels. pydicom's functions
return float64, and a 3000x2500 film would otherwise cost several 60 MB full-frame copies.

Anything that prevents a faithful picture raises :class:`~chexdino.errors.ImageReadError`
with a short reason for the reject table; nothing is ever replaced by a zero image.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.processing import apply_voi, apply_windowing

from chexdino.errors import ImageReadError

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
_FAR = 1e30  # a modality value outside any real window: windowing it gives the range ends


def read_dicom(path: Path) -> np.ndarray:
    """Return the display image of a single-frame greyscale DICOM as uint8 (bright = dense).

    Raises ImageReadError (with the reason) for anything that is not such a file.
    """
    path = Path(path)
    ds = _read_dataset(path)
    _check_one_greyscale_frame(path, ds)
    stored = _decode_stored_pixels(path, ds)
    _check_not_blank(path, stored)
    try:
        return _display_image(stored, ds)
    except Exception as exc:  # malformed LUT / window attributes
        raise ImageReadError(path, f"invalid Modality/VOI LUT attributes: {_short(exc)}") from exc


def _read_dataset(path: Path) -> Dataset:
    """Parse the file; pydicom's errors become reasons a person can act on."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lenient-parsing chatter, once per file
            return dcmread(path)
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file not found") from exc
    except InvalidDicomError as exc:
        raise ImageReadError(path, "not a DICOM file (no 'DICM' preamble)") from exc
    except EOFError as exc:
        raise ImageReadError(path, "truncated file (ends inside the DICOM header)") from exc
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file: {exc.strerror or exc}") from exc
    except Exception as exc:
        raise ImageReadError(path, f"unreadable DICOM header: {_short(exc)}") from exc


def _check_one_greyscale_frame(path: Path, ds: Dataset) -> None:
    """Only single greyscale frames are chest radiographs; reject the rest by name."""
    if "PixelData" not in ds:
        if "Rows" in ds:
            raise ImageReadError(path, "truncated file: image attributes but no pixel data")
        raise ImageReadError(path, "no pixel data in file (not an image, or truncated header)")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise ImageReadError(path, f"multi-frame image ({frames} frames); expected one film")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples != 1 or photometric not in GREYSCALE:
        raise ImageReadError(
            path,
            f"colour image (PhotometricInterpretation {photometric or 'missing'}, "
            f"{samples} samples/pixel); expected MONOCHROME1/2",
        )


def _decode_stored_pixels(path: Path, ds: Dataset) -> np.ndarray:
    """Decompress the stored values; name the transfer syntax when no decoder can."""
    syntax = _transfer_syntax_name(ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = ds.pixel_array
    except NotImplementedError as exc:
        raise ImageReadError(path, f"unsupported transfer syntax {syntax} (no decoder)") from exc
    except Exception as exc:
        raise ImageReadError(path, _decode_failure_reason(exc, syntax)) from exc
    if stored.ndim != 2:
        raise ImageReadError(path, f"decoded pixel array has shape {stored.shape}; expected 2-D")
    return stored


def _transfer_syntax_name(ds: Dataset) -> str:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return f"'{uid.name}'" if uid is not None else "(missing)"


def _decode_failure_reason(exc: Exception, syntax: str) -> str:
    """Map pydicom's decoder errors to the reject-table wording."""
    message = str(exc)
    if "less than expected" in message or "truncated" in message.lower():
        return "truncated pixel data"
    if "no pixel data handlers" in message or "plugins are missing" in message:
        return f"unsupported transfer syntax {syntax} (no decoder installed)"
    if "Unable to decode" in message:
        details = message.partition(":")[2] or message
        return f"corrupt {syntax} pixel data, every decoder failed: {_short(Exception(details))}"
    return f"pixel data could not be decoded ({syntax}): {_short(exc)}"


def _check_not_blank(path: Path, stored: np.ndarray) -> None:
    """A constant frame carries no picture: reject it instead of storing a flat image."""
    if stored.size == 0:
        raise ImageReadError(path, "empty pixel data (0 rows or columns)")
    if stored.min() == stored.max():
        raise ImageReadError(path, f"blank image: every pixel has the value {stored.flat[0]}")


def _display_image(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Map stored values to uint8, through a per-value lookup table when the type allows."""
    if stored.dtype.kind in "iub" and stored.dtype.itemsize <= 2:
        unsigned = np.dtype(f"u{stored.dtype.itemsize}")
        every_value = np.arange(2 ** (8 * unsigned.itemsize), dtype=unsigned).view(stored.dtype)
        present = (every_value >= stored.min()) & (every_value <= stored.max())
        lut = _display_values(every_value, ds, present)
        return lut[stored.view(unsigned)]
    # 32-bit or float pixels (dose maps, never radiographs): transform the frame itself.
    return _display_values(stored, ds, present=None)


def _display_values(values: np.ndarray, ds: Dataset, present: np.ndarray | None) -> np.ndarray:
    """Stored values -> uint8 display values; ``present`` marks values the frame contains."""
    modality = apply_modality_lut(values, ds)
    if _has_voi_lut(ds) and modality.dtype.kind == "f":
        modality = np.rint(modality).astype(np.int64)  # a VOI LUT is indexed by integers
    low, high = _voi_output_range(ds, modality if present is None else modality[present])
    voi = apply_voi_lut(modality, ds, index=0)
    if high <= low:
        raise ValueError("all pixels map to one display value")
    fraction = np.clip((voi.astype(np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        fraction = 1.0 - fraction  # MONOCHROME1 stores dense tissue as low values
    return np.rint(fraction * 255).astype(np.uint8)


def _has_voi_lut(ds: Dataset) -> bool:
    """Same validity test as apply_voi_lut, so both agree on which VOI stage runs."""
    items = ds.get("VOILUTSequence")
    if not items:
        return False
    return items[0].get("LUTDescriptor") is not None and items[0].get("LUTData") is not None


def _has_window(ds: Dataset) -> bool:
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def _voi_output_range(ds: Dataset, present_modality: np.ndarray) -> tuple[float, float]:
    """The values that mean black and white after the VOI stage, mirroring apply_voi_lut.

    - VOI LUT Sequence: the smallest and largest LUT entry. The descriptor's nominal bit
      depth is not used because vendors often declare 16 bits for 12-bit data.
    - Window: pydicom's fixed output range, read off by windowing two far-out values.
    - Neither (the file gives no display intent): the min-max of the frame's own rescaled
      values, so every film uses the full 0-255 range.
    """
    if _has_voi_lut(ds):
        entries = _voi_lut_entries(ds)
        return float(entries.min()), float(entries.max())
    if _has_window(ds):
        with np.errstate(over="ignore"):
            ends = apply_windowing(np.array([-_FAR, _FAR]), ds, index=0)
        return float(ends.min()), float(ends.max())
    return float(present_modality.min()), float(present_modality.max())


def _voi_lut_entries(ds: Dataset) -> np.ndarray:
    """All entries of the first VOI LUT, as pydicom parses them."""
    count, first_input = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor[:2])
    count = count or 2**16  # 0 means 65,536 entries (PS3.3 C.11.2.1.1)
    return apply_voi(np.arange(first_input, first_input + count), ds, index=0)


def _short(exc: Exception, limit: int = 200) -> str:
    """An exception's message on one clipped line: reject reasons stay readable in a CSV."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
