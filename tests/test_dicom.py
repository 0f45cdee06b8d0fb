"""read_dicom on real files from pydicom's corpus (pydicom + pydicom-data) and on files
written here with pydicom. Expected pictures are computed independently of chexdino."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from chexdino.demo import StudySigns, render_frontal
from chexdino.dicom import block_mean, read_dicom, read_dicom_reduced, reduction_factor
from chexdino.errors import ImageReadError
from chexdino.images import load_cxr, resize_and_pad
from conftest import MAX_FRAME_PIXELS

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def corpus(name: str) -> str:
    """A file of pydicom's test corpus; the singular getter never touches the network."""
    path = get_testdata_file(name)
    assert path is not None, f"{name} missing from pydicom / pydicom-data"
    return str(path)


def stored_pixels(name: str) -> np.ndarray:
    return dcmread(corpus(name)).pixel_array.astype(np.float64)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    syntax: UID = ExplicitVRLittleEndian,
    pixel_data: bytes | None = None,
    **attributes: object,
) -> Path:
    """A minimal single-frame DX file; ``pixel_data`` overrides the native pixel bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixel_data if pixel_data is not None else pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def smooth_picture(rows: int = 96, cols: int = 80, top: int = 4095) -> np.ndarray:
    """A 12-bit test picture with structure in both directions (uint16)."""
    y, x = np.mgrid[0:rows, 0:cols]
    picture = 0.5 + 0.45 * np.sin(x / 9.0) * np.cos(y / 13.0)
    return np.rint(picture * top).astype(np.uint16)


def min_max_uint8(values: np.ndarray) -> np.ndarray:
    scaled = (values - values.min()) / (values.max() - values.min())
    return np.rint(scaled * 255)


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, written out, scaled to 0..255."""
    fraction = (values - (center - 0.5)) / (width - 1) + 0.5
    return np.rint(np.clip(fraction, 0, 1) * 255)


# --- real films from the corpus -------------------------------------------------------


def test_monochrome1_chest_film_shows_dark_lungs_and_bright_mediastinum():
    # RG1_UNCR: a real CR chest PA, MONOCHROME1 (air is stored bright), 15-bit, windowed.
    image = read_dicom(corpus("RG1_UNCR.dcm"), max_frame_pixels=MAX_FRAME_PIXELS)
    raw = stored_pixels("RG1_UNCR.dcm")

    def lungs_and_mediastinum(a: np.ndarray) -> tuple[float, float, float]:
        rows, cols = a.shape
        band = slice(int(0.2 * rows), int(0.55 * rows))

        def mean(x0: float, x1: float) -> float:
            return float(a[band, int(x0 * cols) : int(x1 * cols)].mean())

        return mean(0.20, 0.35), mean(0.45, 0.55), mean(0.62, 0.78)

    right_lung, mediastinum, left_lung = lungs_and_mediastinum(image.astype(np.float64))
    assert image.dtype == np.uint8 and image.shape == raw.shape == (1955, 1841)
    assert mediastinum > right_lung + 40 and mediastinum > left_lung + 40
    # the stored values run the other way, so this fails if MONOCHROME1 were not inverted
    raw_right, raw_mediastinum, raw_left = lungs_and_mediastinum(raw)
    assert raw_mediastinum < raw_right and raw_mediastinum < raw_left


@pytest.mark.parametrize(
    ("compressed", "uncompressed"),
    [
        ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),  # JPEG 2000 lossless, 15-bit CR chest
        ("RG1_J2KI.dcm", "RG1_UNCI.dcm"),  # JPEG 2000 lossy vs its decoded twin
        ("693_J2KR.dcm", "693_UNCR.dcm"),  # JPEG 2000 lossless, signed CT with rescale
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),  # JPEG 2000 lossless, fractional rescale slope
        ("JPEG2000.dcm", "JPEG2000_UNC.dcm"),  # JPEG 2000, signed 16-bit, no window
        ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE lossless
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_bigendian.dcm", "MR_small.dcm"),  # explicit VR big endian
    ],
)
def test_compressed_file_decodes_to_the_same_picture_as_its_uncompressed_twin(
    compressed: str, uncompressed: str
):
    image = read_dicom(corpus(compressed), max_frame_pixels=MAX_FRAME_PIXELS)
    twin = read_dicom(corpus(uncompressed), max_frame_pixels=MAX_FRAME_PIXELS)
    assert image.dtype == np.uint8
    assert image.std() > 10  # a real picture, not a flat frame
    np.testing.assert_array_equal(image, twin)


def test_jpeg_extended_12bit_lossy_matches_its_lossless_twin_closely():
    lossy = read_dicom(corpus("JPGExtended.dcm"),
                       max_frame_pixels=MAX_FRAME_PIXELS).astype(np.float64)
    lossless = read_dicom(corpus("JPEG-LL.dcm"),
                          max_frame_pixels=MAX_FRAME_PIXELS).astype(np.float64)
    assert np.abs(lossy - lossless).mean() < 4
    assert np.corrcoef(lossy.ravel(), lossless.ravel())[0, 1] > 0.98


def test_jpeg_baseline_pixel_data_decodes_like_pillow(tmp_path: Path):
    # the corpus's JPEG baseline files are all colour, so wrap a greyscale JPEG ourselves
    picture = smooth_picture(120, 90, top=255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    path = write_dicom(
        tmp_path / "baseline.dcm",
        picture,
        syntax=JPEGBaseline8Bit,
        pixel_data=encapsulate([jpeg]),
    )
    expected = min_max_uint8(np.asarray(Image.open(io.BytesIO(jpeg)), dtype=np.float64))
    decoded = read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS)
    assert np.abs(decoded - expected).mean() < 0.5  # libjpeg vs libjpeg-turbo IDCT


def test_window_and_rescale_are_applied_and_saturate():
    # 693_UNCR: signed CT, RescaleIntercept -1024, soft-tissue window 40/100
    ds = dcmread(corpus("693_UNCR.dcm"))
    hounsfield = stored_pixels("693_UNCR.dcm") * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = linear_window(hounsfield, float(ds.WindowCenter), float(ds.WindowWidth))
    image = read_dicom(corpus("693_UNCR.dcm"), max_frame_pixels=MAX_FRAME_PIXELS)
    assert (image == 0).mean() > 0.1 and (image == 255).mean() > 0.01
    assert np.abs(image - expected).max() <= 1


def test_first_of_several_windows_is_used():
    # bad_sequence.dcm carries two windows, 40/350 and 450/1500
    ds = dcmread(corpus("bad_sequence.dcm"))
    assert len(ds.WindowCenter) == 2
    values = stored_pixels("bad_sequence.dcm") * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = linear_window(values, float(ds.WindowCenter[0]), float(ds.WindowWidth[0]))
    assert np.abs(read_dicom(corpus("bad_sequence.dcm"),
                             max_frame_pixels=MAX_FRAME_PIXELS) - expected).max() <= 1


def test_voi_lut_sequence_is_applied_and_saturates():
    ds = dcmread(corpus("vlut_04.dcm"))
    item = ds.VOILUTSequence[0]
    count, first_input, _ = item.LUTDescriptor
    lut = np.asarray(item.LUTData, dtype=np.float64)
    index = np.clip(stored_pixels("vlut_04.dcm") - first_input, 0, count - 1).astype(int)
    expected = np.rint((lut[index] - lut.min()) / (lut.max() - lut.min()) * 255)
    image = read_dicom(corpus("vlut_04.dcm"), max_frame_pixels=MAX_FRAME_PIXELS)
    assert (image == 0).mean() > 0.05 and (image == 255).mean() > 0.05
    assert np.abs(image - expected).max() <= 1


@pytest.mark.parametrize(
    "name",
    [
        "JPEG2000_UNC.dcm",  # signed 16-bit, values -30..245
        "JPGExtended.dcm",  # unsigned 12-bit in 16
        "CT_small.dcm",  # signed, rescale intercept -1024, no window
        "image_dfl.dcm",  # 8-bit, deflated transfer syntax
    ],
)
def test_files_without_a_window_use_the_full_range_of_their_pixels(name: str):
    ds = dcmread(corpus(name))
    assert "WindowCenter" not in ds and "VOILUTSequence" not in ds
    image = read_dicom(corpus(name), max_frame_pixels=MAX_FRAME_PIXELS)
    assert image.min() == 0 and image.max() == 255
    assert np.abs(image - min_max_uint8(stored_pixels(name))).max() <= 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("emri_small.dcm", "multi-frame"),
        ("SC_rgb.dcm", "colour"),
        ("examples_palette.dcm", "PALETTE COLOR"),
        ("MR_truncated.dcm", "truncated pixel data"),
        ("JPEG-lossy.dcm", "JPEG Extended"),  # corrupt JPEG stream: every decoder fails
        ("reportsi.dcm", "no pixel data"),  # a structured report, not an image
        ("no_meta.dcm", "not a DICOM file"),
    ],
)
def test_unusable_corpus_files_are_rejected_with_a_reason(name: str, reason: str):
    with pytest.raises(ImageReadError) as caught:
        read_dicom(corpus(name), max_frame_pixels=MAX_FRAME_PIXELS)
    assert reason in caught.value.reason
    assert caught.value.path == corpus(name)


# --- files written here ----------------------------------------------------------------


@pytest.mark.parametrize("window", [None, (1500.0, 2000.0)])
def test_monochrome1_and_monochrome2_of_one_picture_decode_identically(
    tmp_path: Path, window: tuple[float, float] | None
):
    picture = smooth_picture()
    inverted = (4095 - picture).astype(np.uint16)
    mono2_window, mono1_window = {}, {}
    if window is not None:  # the same window on the inverted value scale
        center, width = window
        mono2_window = {"WindowCenter": center, "WindowWidth": width}
        mono1_window = {"WindowCenter": 4095 - center + 1, "WindowWidth": width}
    mono2 = write_dicom(tmp_path / "m2.dcm", picture, bits_stored=12, **mono2_window)
    mono1 = write_dicom(
        tmp_path / "m1.dcm", inverted, "MONOCHROME1", bits_stored=12, **mono1_window
    )
    image2 = read_dicom(mono2, max_frame_pixels=MAX_FRAME_PIXELS)
    image1 = read_dicom(mono1, max_frame_pixels=MAX_FRAME_PIXELS)
    assert image2.std() > 30
    assert np.abs(image1.astype(int) - image2).max() <= 1
    # bright where the MONOCHROME2 stored value is high
    assert image2[picture == picture.max()].min() > 250


def test_rescale_slope_and_intercept_are_applied_before_the_window(tmp_path: Path):
    picture = smooth_picture()  # modality values 0..4095
    window = {"WindowCenter": 2048.0, "WindowWidth": 1024.0}
    plain = write_dicom(tmp_path / "plain.dcm", picture, bits_stored=12, **window)
    # the same modality values stored as (value - 100) / 2 with slope 2, intercept 100
    halved = np.floor((picture.astype(np.int32) - 100) / 2).astype(np.int16)
    picture_back = halved.astype(np.float64) * 2 + 100
    rescaled = write_dicom(
        tmp_path / "rescaled.dcm", halved, RescaleSlope=2, RescaleIntercept=100, **window
    )
    expected = linear_window(picture_back, 2048.0, 1024.0)
    image = read_dicom(rescaled, max_frame_pixels=MAX_FRAME_PIXELS)
    assert np.abs(image - expected).max() <= 1
    full = read_dicom(plain, max_frame_pixels=MAX_FRAME_PIXELS)
    assert np.abs(image.astype(int) - full).max() <= 2  # <= 1 stored step
    assert (image == 0).any() and (image == 255).any()


def test_signed_pixels_without_window_map_to_full_range(tmp_path: Path):
    picture = (smooth_picture().astype(np.int32) - 3000).astype(np.int16)  # -3000..1095
    path = write_dicom(tmp_path / "signed.dcm", picture, bits_stored=13)
    image = read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS)
    np.testing.assert_allclose(image, min_max_uint8(picture.astype(np.float64)), atol=1)
    assert image[picture == picture.min()].max() == 0
    assert image[picture == picture.max()].min() == 255


def test_truncated_pixel_data_is_rejected_as_truncated(tmp_path: Path):
    whole = write_dicom(tmp_path / "whole.dcm", smooth_picture(), bits_stored=12).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[: len(whole) - 500])
    with pytest.raises(ImageReadError, match="truncated pixel data"):
        read_dicom(cut, max_frame_pixels=MAX_FRAME_PIXELS)


def test_file_cut_before_its_pixel_data_is_rejected_as_truncated(tmp_path: Path):
    picture = smooth_picture()
    whole = write_dicom(tmp_path / "whole.dcm", picture, bits_stored=12).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[: len(whole) - picture.nbytes - 12])  # drop the pixel element
    with pytest.raises(ImageReadError, match="truncated"):
        read_dicom(cut, max_frame_pixels=MAX_FRAME_PIXELS)


def test_text_file_named_dcm_is_not_a_dicom_file(tmp_path: Path):
    path = tmp_path / "report.dcm"
    path.write_text("FINDINGS: no acute cardiopulmonary process.\n")
    with pytest.raises(ImageReadError, match="not a DICOM file") as caught:
        read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS)
    assert caught.value.path == str(path)


def test_corrupt_header_element_is_rejected_with_a_reason(tmp_path: Path):
    # pydicom parses elements when first read: an unknown VR on Photometric Interpretation
    # surfaces only in the header checks, and must not escape as NotImplementedError
    whole = write_dicom(tmp_path / "whole.dcm", smooth_picture(), bits_stored=12).read_bytes()
    element = b"\x28\x00\x04\x00CS"
    assert whole.count(element) == 1
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(whole.replace(element, b"\x28\x00\x04\x00C8"))
    with pytest.raises(ImageReadError, match="unreadable DICOM header"):
        read_dicom(bad, max_frame_pixels=MAX_FRAME_PIXELS)


def test_blank_frame_is_rejected_not_stored_as_a_flat_image(tmp_path: Path):
    path = write_dicom(tmp_path / "blank.dcm", np.full((32, 32), 7, dtype=np.uint16))
    with pytest.raises(ImageReadError, match="blank image"):
        read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS)


def test_transfer_syntax_without_a_decoder_is_named(tmp_path: Path):
    mpeg2 = UID("1.2.840.10008.1.2.4.100")
    path = write_dicom(
        tmp_path / "video.dcm",
        smooth_picture(),
        syntax=mpeg2,
        pixel_data=encapsulate([b"\x00" * 64]),
    )
    with pytest.raises(ImageReadError, match="unsupported transfer syntax 'MPEG2"):
        read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS)


def test_bits_above_bits_stored_are_ignored(tmp_path: Path):
    # an overlay written into bit 15 of a 12-bit film must not change the picture
    picture = smooth_picture()
    overlaid = picture.copy()
    overlaid[10:20, 10:60] |= 0x8000
    clean = write_dicom(tmp_path / "clean.dcm", picture, bits_stored=12)
    dirty = write_dicom(tmp_path / "dirty.dcm", overlaid, bits_stored=12)
    np.testing.assert_array_equal(read_dicom(dirty, max_frame_pixels=MAX_FRAME_PIXELS),
                                  read_dicom(clean, max_frame_pixels=MAX_FRAME_PIXELS))


def test_signed_values_without_sign_extension_are_sign_extended(tmp_path: Path):
    # a 12-bit two's complement value stored with its upper 4 bits zero: -1 arrives as 4095
    picture = (smooth_picture().astype(np.int32) - 2048).astype(np.int16)  # -2048..2047
    extended = write_dicom(tmp_path / "extended.dcm", picture, bits_stored=12)
    raw = (picture.view(np.uint16) & 0x0FFF).tobytes()
    packed = write_dicom(tmp_path / "packed.dcm", picture, bits_stored=12, pixel_data=raw)
    image = read_dicom(packed, max_frame_pixels=MAX_FRAME_PIXELS)
    np.testing.assert_array_equal(image, read_dicom(extended, max_frame_pixels=MAX_FRAME_PIXELS))
    assert image[picture == picture.min()].max() == 0  # -2048 is the darkest, not 2048


# --- the reduce-first path: block means of stored values, then the lookup table -------------


def reference_block_mean(frame: np.ndarray, factor: int) -> np.ndarray:
    """Each factor x factor block's mean (edge blocks over the pixels they have), half up."""
    rows, cols = frame.shape
    out = np.empty((-(-rows // factor), -(-cols // factor)))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = frame[i * factor : (i + 1) * factor, j * factor : (j + 1) * factor]
            out[i, j] = np.floor(block.astype(np.float64).mean() + 0.5)
    return out


@pytest.mark.parametrize(
    ("dtype", "low", "high", "factor"),
    [
        ("uint16", 0, 4095, 4),  # 12-bit at factor 4: sums fill uint16 exactly (65,520)
        ("uint16", 0, 65535, 3),  # 16-bit: sums need uint32
        ("int16", -3000, 1095, 5),
        ("uint8", 0, 255, 2),
    ],
)
def test_block_mean_averages_whole_and_partial_blocks(dtype, low, high, factor):
    rng = np.random.default_rng(factor)
    frame = rng.integers(low, high + 1, size=(47, 38), dtype=dtype)
    frame[:factor, :factor] = high  # one block at the top of the range: no overflow
    reduced = block_mean(frame, factor, low, high)
    assert reduced.dtype == frame.dtype
    assert reduced.shape == (-(-47 // factor), -(-38 // factor))
    np.testing.assert_array_equal(reduced, reference_block_mean(frame, factor))
    assert reduced[0, 0] == high


def test_reduction_factor_keeps_the_long_side_at_least_the_minimum():
    assert reduction_factor((3056, 2544), 640) == 4  # 764 px left for the final Lanczos
    assert reduction_factor((2544, 3056), 640) == 4
    assert reduction_factor((639, 400), 640) == 1
    assert reduction_factor((3056, 2544), 0) == 1
    assert max(3056, 2544) // reduction_factor((3056, 2544), 640) >= 640


def chest_dicom(
    path: Path, photometric: str, center: float = 2000.0, width: float = 3000.0
) -> Path:
    """A MIMIC-sized 12-bit chest film; the default window clips a little at both ends."""
    film = render_frontal(np.random.default_rng(3), 3056, 2544, StudySigns(cardiomegaly=1.0))
    stored = np.rint(200 + film * 3600).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored, center = 4095 - stored, 4095 - center + 1
    return write_dicom(path, stored, photometric, bits_stored=12, WindowCenter=center,
                       WindowWidth=width)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_reduced_path_matches_the_full_resolution_path_on_a_mimic_sized_film(
    tmp_path: Path, photometric: str
):
    path = chest_dicom(tmp_path / "film.dcm", photometric)
    film = read_dicom_reduced(path, min_long_side=640, max_frame_pixels=MAX_FRAME_PIXELS)
    assert film.factor == 4 and film.source_shape == (3056, 2544)
    assert film.image.shape == (764, 636)
    fast, source_shape = load_cxr(path, 320, max_frame_pixels=MAX_FRAME_PIXELS)
    full = resize_and_pad(read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS), 320).astype(np.int16)
    assert source_shape == (3056, 2544)
    diff = np.abs(fast - full)
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 2 and diff.max() <= 6
    assert (fast[:, :27] == 0).all() and (fast[:, 293:] == 0).all()  # 266 px wide, centred
    assert (fast[:, 27:293] > 0).mean() > 0.9


def test_narrow_window_is_looked_up_before_averaging(tmp_path: Path):
    # a 150-wide window saturates most of the film: averaging stored values first would put
    # 2 % of the reduced pixels more than 4 grey levels off (up to 84) along its edges
    path = chest_dicom(tmp_path / "narrow.dcm", "MONOCHROME2", center=1500.0, width=150.0)
    fast, _ = load_cxr(path, 320, max_frame_pixels=MAX_FRAME_PIXELS)
    full = resize_and_pad(read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS), 320).astype(np.int16)
    diff = np.abs(fast - full)
    assert (full == 0).mean() > 0.2 and (full == 255).mean() > 0.2  # mostly saturated
    assert diff.mean() < 0.5 and diff.max() <= 8


@pytest.mark.parametrize(
    ("name", "size", "mean_error"),
    [
        ("RG1_UNCR.dcm", 320, 0.5),  # real CR chest, MONOCHROME1, 15-bit: factor 3
        ("RG1_J2KR.dcm", 320, 0.5),  # the same film, JPEG 2000
        ("MR2_UNCR.dcm", 64, 1.0),  # fractional rescale slope, window: factor 8
        ("JPEG2000_UNC.dcm", 64, 1.0),  # signed, no window (min-max), 1024 x 256: factor 8
        ("CT_small.dcm", 16, 1.0),  # signed, rescale, no window: factor 4
        # CT soft-tissue window 40/100: averaging stored values first would be off by ~2 grey
        # levels on average (up to 122 at bone and air edges); the sampled check catches it
        ("693_UNCR.dcm", 64, 1.0),
        # VOI LUT sequence on the SMPTE test pattern: line pairs at the pixel pitch are the
        # worst case for any reduce-then-resample (Pillow's reducing_gap gives the same)
        ("vlut_04.dcm", 64, 2.0),
    ],
)
def test_reduced_path_matches_the_full_resolution_path_on_corpus_films(
    name: str, size: int, mean_error: float
):
    fast, _ = load_cxr(corpus(name), size, max_frame_pixels=MAX_FRAME_PIXELS)
    assert read_dicom_reduced(corpus(name), 2 * size,
                              max_frame_pixels=MAX_FRAME_PIXELS).factor > 1  # the reduced path ran
    full = resize_and_pad(read_dicom(corpus(name), max_frame_pixels=MAX_FRAME_PIXELS),
                          size).astype(np.int16)
    assert np.abs(fast - full).mean() < mean_error


# --- headers that disagree with their pixels: reject, never a plausible picture -------------


def rewrite_header(source: str | Path, path: Path, **attributes: object) -> Path:
    """A copy of a real file with some header attributes changed and its pixels untouched."""
    ds = dcmread(source)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    ("change", "expected_bytes"),
    [
        ({"Columns": 1840}, 1955 * 1840 * 2),  # one column short: the film would be sheared
        ({"Rows": 1855}, 1855 * 1841 * 2),  # 100 rows short: the film would be cropped
    ],
)
def test_pixel_data_longer_than_the_header_says_is_rejected(
    tmp_path: Path, change: dict, expected_bytes: int
):
    # RG1_UNCR: a real CR chest film, 1955 x 1841, native 16-bit; pydicom itself only warns
    # about "excess padding" and decodes a sheared or cropped chest
    path = rewrite_header(corpus("RG1_UNCR.dcm"), tmp_path / "film.dcm", **change)
    with pytest.raises(ImageReadError, match="pixel data is longer than the header says") as caught:
        read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS)
    assert f"needs {expected_bytes:,}" in caught.value.reason
    with pytest.raises(ImageReadError, match="longer than the header"):
        load_cxr(path, 64, max_frame_pixels=MAX_FRAME_PIXELS)


def test_odd_sized_8bit_frame_with_its_one_pad_byte_is_kept(tmp_path: Path):
    picture = smooth_picture(9, 11, top=255).astype(np.uint8)  # 99 bytes, stored padded to 100
    path = write_dicom(tmp_path / "odd.dcm", picture)
    assert len(dcmread(path).PixelData) == 100
    assert read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS).shape == (9, 11)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # pydicom on NaN / inf
@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"WindowCenter": "NaN", "WindowWidth": 2000.0}, "non-finite WindowCenter"),
        ({"WindowCenter": 2000.0, "WindowWidth": "inf"}, "non-finite WindowWidth"),
        ({"RescaleSlope": "-inf", "RescaleIntercept": 0}, "non-finite RescaleSlope"),
        # finite, but every rescaled value overflows to infinity
        ({"RescaleSlope": 1e308, "RescaleIntercept": 0, "WindowCenter": 2000.0,
          "WindowWidth": 4000.0}, "rescale gives non-finite values"),
    ],
)
def test_non_finite_window_or_rescale_is_rejected_not_windowed_to_black(
    tmp_path: Path, attributes: dict, reason: str
):
    path = write_dicom(tmp_path / "film.dcm", smooth_picture(), bits_stored=12, **attributes)
    with pytest.raises(ImageReadError, match=reason):
        read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS)


def test_window_outside_every_pixel_value_is_rejected_as_a_blank_display(tmp_path: Path):
    # a real CT slice with a finite window far above its values: every pixel would be black
    path = rewrite_header(corpus("CT_small.dcm"), tmp_path / "ct.dcm",
                          WindowCenter=60000.0, WindowWidth=100.0)
    with pytest.raises(ImageReadError, match="blank display: every pixel shows grey level 0") \
            as caught:
        load_cxr(path, 64, max_frame_pixels=MAX_FRAME_PIXELS)
    assert "window (center 60000.0, width 100.0) lies outside" in caught.value.reason


def rle_file(path: Path, rows: int, cols: int) -> Path:
    """A real RLE Lossless file of a small picture whose header then claims rows x cols."""
    ds = dcmread(write_dicom(path, smooth_picture(64, 64, top=255).astype(np.uint8)))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.Rows, ds.Columns = rows, cols
    ds.save_as(path)
    return path


def test_huge_frame_claim_is_refused_before_any_decoder_allocates_it(tmp_path: Path):
    path = rle_file(tmp_path / "bomb.dcm", 60000, 60000)
    assert path.stat().st_size < 8192  # a few kilobytes claiming a 3.6-gigapixel frame
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError) as caught:
            load_cxr(path, 320, max_frame_pixels=MAX_FRAME_PIXELS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "frame of 60000 x 60000 pixels is larger than images.max_frame_pixels" in (
        caught.value.reason)
    assert "refused before decoding" in caught.value.reason
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MB allocated"


def test_frame_size_limit_is_a_setting(tmp_path: Path):
    path = write_dicom(tmp_path / "film.dcm", smooth_picture(96, 80), bits_stored=12)
    assert load_cxr(path, 32, max_frame_pixels=96 * 80)[1] == (96, 80)  # at the limit: kept
    with pytest.raises(ImageReadError, match=r"96 x 80 pixels .* \(7,679\)"):
        load_cxr(path, 32, max_frame_pixels=96 * 80 - 1)
    jpg = tmp_path / "film.jpg"
    Image.fromarray(smooth_picture(96, 80, top=255).astype(np.uint8)).save(jpg)
    with pytest.raises(ImageReadError, match="larger than images.max_frame_pixels"):
        load_cxr(jpg, 32, max_frame_pixels=1000)


# --- reasons that say what is wrong -----------------------------------------------------------


def test_missing_photometric_interpretation_is_not_called_colour(tmp_path: Path):
    path = write_dicom(tmp_path / "film.dcm", smooth_picture(), bits_stored=12)
    ds = dcmread(path)
    del ds.PhotometricInterpretation
    ds.save_as(path)
    with pytest.raises(ImageReadError) as caught:
        read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS)
    assert caught.value.reason.startswith("PhotometricInterpretation missing")
    assert "colour" not in caught.value.reason


@pytest.mark.parametrize("name", ["RG1_J2KR.dcm", "MR_small_RLE.dcm", "JPEG-LL.dcm"])
def test_truncated_compressed_stream_is_called_truncated(tmp_path: Path, name: str):
    raw = Path(corpus(name)).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(raw[: int(len(raw) * 0.7)])  # inside the encapsulated pixel data
    with pytest.raises(ImageReadError) as caught:
        read_dicom(cut, max_frame_pixels=MAX_FRAME_PIXELS)
    assert caught.value.reason == (
        "truncated file: it ends inside its compressed pixel data (or a sequence)")


@pytest.mark.parametrize(
    ("name", "rows", "cols", "decoded"),
    [
        ("JPEG-LL.dcm", 2048, 512, 262144),  # real JPEG lossless, 1024 x 256, header doubled
        ("RG1_J2KR.dcm", 1952, 1841, 3599155),  # real JPEG 2000 chest, 3 rows short
        ("MR_small_jpeg_ls_lossless.dcm", 128, 128, 4096),
    ],
)
def test_header_size_that_disagrees_with_compressed_data_is_named(
    tmp_path: Path, name: str, rows: int, cols: int, decoded: int
):
    path = rewrite_header(corpus(name), tmp_path / name, Rows=rows, Columns=cols)
    with pytest.raises(ImageReadError) as caught:
        read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS)
    reason = caught.value.reason
    assert f"header's image size (Rows x Columns {rows} x {cols}) does not match" in reason
    assert f"decodes to {decoded:,} values" in reason
    assert "broadcast" not in reason


def test_rle_header_smaller_than_its_data_is_a_reject_not_a_crash(tmp_path: Path):
    # pylibjpeg-rle panics (a BaseException from Rust) on this file: the shard must go on
    path = rewrite_header(corpus("MR_small_RLE.dcm"), tmp_path / "rle.dcm", Rows=61)
    with pytest.raises(ImageReadError, match="decoder crashed .*header image size \\(61 x 64\\)"):
        read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS)


def without_preamble(source: str, path: Path) -> Path:
    """The dataset of a real file written as before DICOM 3.0: no preamble, no 'DICM', no
    file meta group, implicit VR little endian."""
    ds = dcmread(source)
    del ds.file_meta
    ds.preamble = None
    ds.save_as(path, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    return path


def test_old_file_without_preamble_is_read(tmp_path: Path):
    path = without_preamble(corpus("MR_small.dcm"), tmp_path / "old.dcm")
    np.testing.assert_array_equal(read_dicom(path, max_frame_pixels=MAX_FRAME_PIXELS),
                                  read_dicom(corpus("MR_small.dcm"),
                                             max_frame_pixels=MAX_FRAME_PIXELS))
    # a real file of that kind from the corpus is read too (and rejected for being colour)
    with pytest.raises(ImageReadError, match="colour image .*PALETTE COLOR"):
        read_dicom(corpus("OT-PAL-8-face.dcm"), max_frame_pixels=MAX_FRAME_PIXELS)
