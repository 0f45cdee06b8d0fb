"""Decode one DICOM radiograph into the 2-D uint8 display image the model is trained on.

The display pipeline follows DICOM PS3.3 C.11: stored values -> Modality LUT (or rescale
slope/intercept) -> VOI LUT (or window) -> MONOCHROME1 inversion -> 0..255. Both LUT stages
are pydicom's own (``apply_modality_lut``, ``apply_voi_lut``), but they are evaluated once
per *possible stored value* (at most 65,536 of them for 8/16-bit pixels) instead of once per
pixel: the result is a uint8 lookup table indexed by the stored pixels. pydicom's functions
return float64, and a 3000x2500 film would otherwise cost several 60 MB full-frame copies.

A film that is only going to be shrunk to a few hundred pixels is also *reduced first*
(:func:`read_dicom_reduced`): the stored integer frame is block-averaged by an integer factor
and only then looked up, so the full frame is read a few times as uint16 and never converted
(a 3056x2544 12-bit film to 320x320: ~62 -> ~15 ms on one core, docs/performance.md).

Anything that prevents a faithful picture raises :class:`~chexdino.errors.ImageReadError`
with a short reason for the reject table; nothing is ever replaced by a zero image. That
includes files a decoder would turn into a *plausible* picture: native pixel data longer than
the header's size (a sheared or cropped film), non-finite rescale or window values (an
all-black film), and frames larger than ``max_frame_pixels``, refused before any decoder
allocates them.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.processing import apply_voi, apply_windowing
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from chexdino.errors import ImageReadError

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT",
          "YBR_RCT", "XYB", "HSV", "ARGB", "CMYK")
_FAR = 1e30  # a modality value outside any real window: windowing it gives the range ends
SAMPLE_EVERY = 16  # block rows checked before trusting averaged-first lookups (~1 ms)
OFF_GREY_LEVELS = 4  # in that check, a reduced pixel further off than this is wrong ...
MAX_OFF_SHARE = 0.001  # ... and averaging first is kept while at most this share is
LUT_ATTRIBUTES = ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth")


@dataclass(frozen=True)
class ReducedFilm:
    """A display image block-averaged by ``factor`` from a stored frame of ``source_shape``.

    Edge blocks that the frame does not fill are averaged over the pixels they have, so the
    image is ``ceil(rows / factor) x ceil(cols / factor)`` and its pixel ``(i, j)`` covers
    source pixels ``[i * factor, (i + 1) * factor)``: a resize that maps the box
    ``(0, 0, cols / factor, rows / factor)`` keeps the full frame's geometry exactly.
    """

    image: np.ndarray
    source_shape: tuple[int, int]
    factor: int


def read_dicom(path: Path, max_frame_pixels: int) -> np.ndarray:
    """Return the display image of a single-frame greyscale DICOM as uint8 (bright = dense).

    Raises ImageReadError (with the reason) for anything that is not such a file.
    """
    return read_dicom_reduced(path, min_long_side=0, max_frame_pixels=max_frame_pixels).image


def read_dicom_reduced(
    path: Path, min_long_side: int, max_frame_pixels: int
) -> ReducedFilm:
    """The display image reduced by the largest integer factor that keeps its long side at
    least ``min_long_side`` (0: full resolution), for a film that will be resized anyway.

    Stored values are averaged before the Modality/VOI lookup. Where the lookup is linear
    over a block's values that equals averaging the display values; blocks that straddle a
    point where the window clips or bends differ. A sample of block rows measures that
    difference for each film, and a film where it is large (a narrow window on sharp edges)
    is looked up first and averaged after. Tests compare with the full-resolution path.
    """
    path = Path(path)
    ds = _read_dataset(path)
    try:
        _check_one_greyscale_frame(path, ds)
        _check_frame_size(path, ds, max_frame_pixels)
        _check_pixel_data_length(path, ds)
        _check_finite_lut_attributes(path, ds)
    except ImageReadError:
        raise
    except Exception as exc:  # pydicom parses elements lazily: a corrupt one fails here
        raise ImageReadError(path, f"unreadable DICOM header: {_short(exc)}") from exc
    stored = _decode_stored_pixels(path, ds)
    if stored.size == 0:
        raise ImageReadError(path, "empty pixel data (0 rows or columns)")
    stored, low, high = _clear_unused_bits(stored, ds)
    _check_not_blank(path, stored, low, high)
    factor = reduction_factor(stored.shape, min_long_side)
    try:
        image = _display_image(stored, ds, low, high, factor)
    except Exception as exc:  # malformed LUT / window attributes
        raise ImageReadError(path, f"invalid Modality/VOI LUT attributes: {_short(exc)}") from exc
    _check_not_flat(path, image, ds, low, high)
    return ReducedFilm(image, (int(stored.shape[0]), int(stored.shape[1])), factor)


def reduction_factor(shape: tuple[int, ...], min_long_side: int) -> int:
    """The largest integer factor that keeps the long side >= ``min_long_side`` (at least 1).

    With ``min_long_side = gap * size`` this is the first step of Pillow's
    ``resize(reducing_gap=gap)`` (libvips' ``resize`` does the same with ``gap`` 2).
    """
    if min_long_side <= 0:
        return 1
    return max(1, int(max(shape) // min_long_side))


def _read_dataset(path: Path) -> Dataset:
    """Parse the file; pydicom's errors become reasons a person can act on."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # lenient-parsing chatter: kept, never printed
            ds = dcmread(path)
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file not found") from exc
    except InvalidDicomError as exc:
        ds = _read_without_preamble(path)
        if ds is None:
            raise ImageReadError(path, "not a DICOM file (no 'DICM' preamble)") from exc
        return ds
    except EOFError as exc:
        raise ImageReadError(path, "truncated file (ends inside the DICOM header)") from exc
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file: {exc.strerror or exc}") from exc
    except Exception as exc:
        raise ImageReadError(path, f"unreadable DICOM header: {_short(exc)}") from exc
    if "PixelData" not in ds and any(_UNDELIMITED in str(w.message) for w in caught):
        # pydicom drops the whole dataset when the file ends inside an undefined-length
        # element: for a film, the encapsulated (compressed) pixel data
        raise ImageReadError(
            path, "truncated file: it ends inside its compressed pixel data (or a sequence)"
        )
    return ds


_UNDELIMITED = "End of file reached before delimiter"
_ENCODINGS = {  # (implicit VR, little endian) -> the transfer syntax it means for native data
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


def _read_without_preamble(path: Path) -> Dataset | None:
    """An old file without the 128-byte preamble and 'DICM' (allowed before DICOM 3.0):
    the dataset when it parses and holds pixel data, with its transfer syntax set from the
    encoding pydicom detected; None for anything else (a text file, random bytes)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, force=True)
            if "PixelData" not in ds or "Rows" not in ds:
                return None
            encoding = ds.original_encoding
    except Exception:
        return None
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        if encoding not in _ENCODINGS:
            return None
        ds.file_meta = meta if meta is not None else FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = _ENCODINGS[encoding]
    return ds


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
    if samples == 1 and photometric in GREYSCALE:
        return
    if samples != 1 or photometric in COLOUR:
        raise ImageReadError(
            path,
            f"colour image (PhotometricInterpretation {photometric or 'missing'}, "
            f"{samples} samples/pixel); expected MONOCHROME1/2",
        )
    if not photometric:
        raise ImageReadError(
            path, "PhotometricInterpretation missing: cannot tell MONOCHROME1 from MONOCHROME2"
        )
    raise ImageReadError(
        path, f"unsupported PhotometricInterpretation '{photometric}'; expected MONOCHROME1/2"
    )


def _check_frame_size(path: Path, ds: Dataset, max_frame_pixels: int) -> None:
    """Refuse a frame larger than the limit from its header alone, before any decoder runs."""
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows * cols > max_frame_pixels:
        raise ImageReadError(
            path,
            f"frame of {rows} x {cols} pixels is larger than images.max_frame_pixels "
            f"({max_frame_pixels:,}); refused before decoding",
        )


def _check_pixel_data_length(path: Path, ds: Dataset) -> None:
    """Native pixel data must not be longer than Rows x Columns x samples x bytes (plus the
    one pad byte to an even length). Longer data means the header's size is wrong, and the
    decoder would silently drop the excess as "padding": a sheared or cropped film.
    """
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_encapsulated:
        return  # a compressed frame's size is checked by its decoder
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.get("BitsAllocated") or 0)
    expected = math.ceil(rows * cols * samples * bits / 8)
    actual = len(ds.PixelData)
    if actual > expected + expected % 2:
        raise ImageReadError(
            path,
            f"pixel data is longer than the header says ({actual:,} bytes; Rows x Columns "
            f"{rows} x {cols} at {bits} bits needs {expected:,}): the header's image size or "
            "bit depth is wrong",
        )


def _check_finite_lut_attributes(path: Path, ds: Dataset) -> None:
    """NaN or infinite rescale / window values would window every pixel to black."""
    for keyword in LUT_ATTRIBUTES:
        value = ds.get(keyword)
        if value is None:
            continue
        values = list(value) if isinstance(value, MultiValue) else [value]
        for item in values:
            if not math.isfinite(float(item)):
                raise ImageReadError(path, f"non-finite {keyword} ({item}) in the header")


def _decode_stored_pixels(path: Path, ds: Dataset) -> np.ndarray:
    """Decompress the stored values; name the transfer syntax when no decoder can.

    Native pixel data comes back as a read-only view of the file's bytes: pydicom's default
    copies the frame to clear the bits above Bits Stored, which :func:`_clear_unused_bits`
    does only for the rare file whose values need it.
    """
    syntax = _transfer_syntax_name(ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.pixel_array_options(view_only=True, correct_unused_bits=False)
            stored = ds.pixel_array
    except NotImplementedError as exc:
        raise ImageReadError(path, f"unsupported transfer syntax {syntax} (no decoder)") from exc
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # pylibjpeg-rle's Rust panic is not an Exception
        raise ImageReadError(path, _decode_failure_reason(exc, syntax, ds)) from exc
    if stored.ndim != 2:
        raise ImageReadError(path, f"decoded pixel array has shape {stored.shape}; expected 2-D")
    return stored


def _transfer_syntax_name(ds: Dataset) -> str:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return f"'{uid.name}'" if uid is not None else "(missing)"


_SIZE_MISMATCH = re.compile(
    r"could not broadcast input array from shape \((\d+),?\) into shape \((\d+),?\)"
    r"|doesn't match the expected amount"  # pydicom's RLE decoder
)


def _decode_failure_reason(exc: BaseException, syntax: str, ds: Dataset) -> str:
    """Map pydicom's decoder errors to the reject-table wording."""
    message = str(exc)
    size = _SIZE_MISMATCH.search(message)
    if size is not None:
        decoded = size.group(1)
        found = f" (the frame decodes to {int(decoded):,} values)" if decoded else ""
        return (f"the header's image size (Rows x Columns {ds.get('Rows')} x "
                f"{ds.get('Columns')}) does not match the compressed {syntax} frame{found}")
    if not isinstance(exc, Exception):  # a decoder's Rust panic
        return (f"the {syntax} decoder crashed ({_short(exc, 80)}): corrupt data, or a "
                f"header image size ({ds.get('Rows')} x {ds.get('Columns')}) that does not "
                "match it")
    if "less than expected" in message or "truncated" in message.lower():
        return "truncated pixel data"
    if "no pixel data handlers" in message or "plugins are missing" in message:
        return f"unsupported transfer syntax {syntax} (no decoder installed)"
    if "Unable to decode" in message:
        details = message.partition(":")[2] or message
        return f"corrupt {syntax} pixel data, every decoder failed: {_short(Exception(details))}"
    return f"pixel data could not be decoded ({syntax}): {_short(exc)}"


def _check_not_blank(path: Path, stored: np.ndarray, low: float, high: float) -> None:
    """A constant frame carries no picture: reject it instead of storing a flat image."""
    if low == high:
        raise ImageReadError(path, f"blank image: every pixel has the value {stored.flat[0]}")


def _check_not_flat(
    path: Path, image: np.ndarray, ds: Dataset, low: float, high: float
) -> None:
    """A film whose display image is one grey level is blank to the model: reject it, saying
    which part of the header put every pixel there."""
    if image.min() != image.max():
        return
    level = int(image.flat[0])
    if _has_voi_lut(ds):
        cause = "the VOI LUT maps every stored value to it"
    elif _has_window(ds):
        center, width = (_first(ds.get(k)) for k in ("WindowCenter", "WindowWidth"))
        cause = (f"the window (center {center}, width {width}) lies outside the film's "
                 f"values (stored {low:g}..{high:g}, before rescale)")
    else:
        cause = "the rescale maps every stored value to it"
    raise ImageReadError(path, f"blank display: every pixel shows grey level {level}; {cause}")


def _first(value: object) -> object:
    return value[0] if isinstance(value, MultiValue) else value


def _clear_unused_bits(stored: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float]:
    """The frame with bits above Bits Stored ignored (PS3.5 8.1.1), and its (min, max).

    pydicom's shift is applied, on a copy, only when the range shows that an unused bit is
    set; otherwise the shift changes nothing and the frame stays a view of the file.
    """
    low, high = stored.min().item(), stored.max().item()
    bits = stored.dtype.itemsize * 8
    bits_stored = int(ds.get("BitsStored") or bits)
    if stored.dtype.kind not in "iu" or not 0 < bits_stored < bits:
        return stored, low, high
    if stored.dtype.kind == "i":
        smallest, largest = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    else:
        smallest, largest = 0, 2**bits_stored - 1
    if smallest <= low and high <= largest:
        return stored, low, high
    shift = bits - bits_stored
    fixed = np.right_shift(np.left_shift(stored, shift), shift)  # sign-extends signed types
    return fixed, fixed.min().item(), fixed.max().item()


def _display_image(
    stored: np.ndarray, ds: Dataset, low: float, high: float, factor: int = 1
) -> np.ndarray:
    """Map stored values to uint8 through a per-value lookup table when the type allows;
    ``factor > 1`` block-averages the stored values first, unless a sample shows that this
    film's lookup is too far from linear for that (then it averages display values)."""
    if stored.dtype.kind not in "iu" or stored.dtype.itemsize > 2:
        # 32-bit or float pixels (dose maps, never radiographs): transform the frame itself.
        return block_mean(_display_values(stored, ds), factor, 0, 255)
    unsigned = np.dtype(f"u{stored.dtype.itemsize}")
    lut = np.zeros(2 ** (8 * unsigned.itemsize), dtype=np.uint8)  # indexed by raw bits
    values = np.arange(low, high + 1, dtype=stored.dtype)  # block means stay in range
    lut[values.view(unsigned)] = _display_values(values, ds)
    reduced = block_mean(stored, factor, low, high).view(unsigned)
    averaged_first = np.take(lut, reduced)
    if factor == 1 or _averaging_first_is_faithful(stored.view(unsigned), lut, averaged_first,
                                                   factor):
        return averaged_first
    return block_mean(np.take(lut, stored.view(unsigned)), factor, 0, 255)


def _averaging_first_is_faithful(
    raw: np.ndarray, lut: np.ndarray, averaged_first: np.ndarray, factor: int
) -> bool:
    """Whether at most ``MAX_OFF_SHARE`` of the reduced pixels move by more than
    ``OFF_GREY_LEVELS`` when stored values are averaged before the lookup, measured on every
    ``SAMPLE_EVERY``-th block row.

    Averaging first is exact where the lookup is linear over a block's values; it errs in
    blocks that straddle a point where the window clips or bends. On a chest film whose
    window spans most of its values about 1 reduced pixel in 10,000 is off by more than 4;
    a narrow window (a CT soft-tissue window on bone and air, or a 150-wide window on a
    chest film) puts 2-5 % of them there, up to 200 levels off, and is looked up first.
    """
    block_rows = np.arange(0, averaged_first.shape[0], SAMPLE_EVERY)
    source_rows = (block_rows[:, None] * factor + np.arange(factor)).ravel()
    source_rows = source_rows[source_rows < raw.shape[0]]
    looked_up_first = block_mean(np.take(lut, raw[source_rows]), factor, 0, 255)
    error = np.abs(looked_up_first.astype(np.int16) - averaged_first[block_rows])
    return float(np.mean(error > OFF_GREY_LEVELS)) <= MAX_OFF_SHARE


def block_mean(frame: np.ndarray, factor: int, low: float = 0, high: float = 0) -> np.ndarray:
    """Rounded mean of each ``factor x factor`` block of an integer frame, in its own dtype.

    Edge blocks the frame does not fill are averaged over the pixels they have (as Pillow's
    ``Image.reduce``). Sums run over strided views of whole rows, never a float copy of the
    frame; ``low``/``high`` (the frame's range) pick the narrowest sum type that cannot
    overflow: uint16 for 12-bit data at factor 4, the common case for MIMIC-CXR.
    """
    if factor <= 1:
        return frame
    if frame.dtype.kind not in "iu":
        raise TypeError(f"block_mean needs integer pixels, got {frame.dtype}")
    cells = factor * factor
    accumulator = _sum_dtype(frame.dtype, cells * max(abs(low), abs(high)) + cells)
    rows = frame[0::factor].astype(accumulator)
    for offset in range(1, factor):
        part = frame[offset::factor]
        rows[: len(part)] += part
    sums = rows[:, 0::factor].copy()
    for offset in range(1, factor):
        part = rows[:, offset::factor]
        sums[:, : part.shape[1]] += part
    mean = (sums + cells // 2) // cells  # whole blocks, rounded half up
    _average_edge_blocks(mean, sums, frame.shape, factor)
    return mean.astype(frame.dtype)


def _average_edge_blocks(
    mean: np.ndarray, sums: np.ndarray, shape: tuple[int, ...], factor: int
) -> None:
    """Redo the last block row / column in place where the frame does not fill them
    (rounded half up, like the whole blocks)."""
    row_lengths, col_lengths = (_block_lengths(length, factor) for length in shape)
    if shape[0] % factor:
        mean[-1] = np.floor(sums[-1] / (row_lengths[-1] * col_lengths) + 0.5)
    if shape[1] % factor:
        mean[:, -1] = np.floor(sums[:, -1] / (row_lengths * col_lengths[-1]) + 0.5)


def _sum_dtype(dtype: np.dtype, bound: float) -> np.dtype:
    """The narrowest integer type of ``dtype``'s signedness that holds sums up to ``bound``."""
    for bits in (16, 32, 64):
        candidate = np.dtype(f"{dtype.kind}{bits // 8}")
        if candidate.itemsize >= dtype.itemsize and bound <= np.iinfo(candidate).max:
            return candidate
    raise OverflowError(f"block sums up to {bound} do not fit a 64-bit integer")


def _block_lengths(length: int, factor: int) -> np.ndarray:
    """How many source pixels each block covers along one axis (the last may be short)."""
    blocks = np.full(-(-length // factor), factor, dtype=np.float64)
    blocks[-1] = length - factor * (len(blocks) - 1)
    return blocks


def _display_values(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values -> uint8 display values. ``values`` spans the frame's range (the frame
    itself, or every integer from its min to its max): that range is the window when the file
    gives none."""
    with np.errstate(over="ignore", invalid="ignore"):
        modality = apply_modality_lut(values, ds)
    if modality.dtype.kind == "f" and not np.isfinite(modality).all():
        raise ValueError(
            f"rescale gives non-finite values (RescaleSlope {ds.get('RescaleSlope')}, "
            f"RescaleIntercept {ds.get('RescaleIntercept')})"
        )
    if _has_voi_lut(ds) and modality.dtype.kind == "f":
        modality = np.rint(modality).astype(np.int64)  # a VOI LUT is indexed by integers
    low, high = _voi_output_range(ds, modality)
    with np.errstate(over="ignore", invalid="ignore"):
        voi = apply_voi_lut(modality, ds, index=0)
    if not (np.isfinite(low) and np.isfinite(high) and np.isfinite(voi).all()):
        raise ValueError("the window or VOI LUT gives non-finite values")
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


def _short(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one clipped line: reject reasons stay readable in a CSV."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
