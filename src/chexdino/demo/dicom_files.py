"""DICOM writing: a deliberate variety of encodings whose correct decode gives the film."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from chexdino.demo.draws import stratified

UID_EXPLICIT_LE = "1.2.840.10008.1.2.1"
UID_RLE = "1.2.840.10008.1.2.5"
UID_J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
_SOP_CLASSES = {
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}


def available_compressions() -> dict[str, tuple[str, str]]:
    """Which lossless syntaxes this install can encode: name -> (uid, plugin)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        from pydicom.pixels import get_encoder
    except ImportError:  # pragma: no cover - pydicom < 3
        return out
    for name, uid, prefer in (("rle", UID_RLE, ("pylibjpeg", "pydicom")),
                              ("j2k", UID_J2K_LOSSLESS, ("pylibjpeg",))):
        try:
            enc = get_encoder(uid)
        except Exception:
            continue
        if not enc.is_available:
            continue
        plugins = tuple(enc.available_plugins)
        plugin = next((p for p in prefer if p in plugins), plugins[0] if plugins else "")
        out[name] = (uid, plugin)
    return out


def draw_encodings(rng: np.random.Generator, n: int, compress: dict) -> list[dict]:
    """Per-image DICOM encoding choices, stratified so small runs still cover each variant."""
    phot = stratified(rng, n, ["MONOCHROME2", "MONOCHROME1"], [0.82, 0.18])
    bits = stratified(rng, n, [12, 15, 16], [0.6, 0.2, 0.2])
    signed = stratified(rng, n, [0, 1], [0.92, 0.08])
    rescale = stratified(rng, n, [None, (1.0, -1024.0), (0.5, 0.0)], [0.6, 0.25, 0.15])
    window = stratified(rng, n, [True, False], [0.85, 0.15])
    ts_names = ["none"] + [k for k in ("rle", "j2k") if k in compress]
    ts_probs = {"none": 0.85, "rle": 0.1, "j2k": 0.05}
    probs = [ts_probs[k] for k in ts_names]
    probs = [p / sum(probs) for p in probs]
    ts = stratified(rng, n, ts_names, probs)
    sop = stratified(rng, n, ["DX", "CR", "OT"], [0.5, 0.35, 0.15])
    out = []
    for i in range(n):
        b = bits[i]
        if signed[i]:
            full = 2 ** (b - 1)
            lo = -int(full * rng.uniform(0.85, 1.0))
            hi = int((full - 1) * rng.uniform(0.85, 1.0))
        else:
            top = 2**b - 1
            lo = int(top * rng.uniform(0.0, 0.08))
            hi = int(top * rng.uniform(0.85, 1.0))
        out.append({
            "photometric": phot[i], "bits_stored": b, "signed": signed[i],
            "rescale": rescale[i], "window": window[i], "ts": ts[i], "sop": sop[i],
            "lo": lo, "hi": hi,
        })
    return out


def draw_image_size(rng: np.random.Generator, long_side: tuple[int, int], orient: str):
    long = int(rng.integers(long_side[0], long_side[1] + 1))
    ratio = rng.uniform(0.75, 0.94) if orient == "portrait" else rng.uniform(1.06, 1.33)
    if orient == "square":
        ratio = rng.uniform(0.95, 1.05)
    if ratio < 1:
        return long, max(8, round(long * ratio))  # rows, cols
    return max(8, round(long / ratio)), long


def _ds_number(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def encode_dicom(disp: np.ndarray, meta: dict, enc: dict, compress: dict) -> tuple[bytes, str]:
    """DICOM bytes whose correct decode (rescale → window → MONOCHROME1 invert) gives ``disp``.

    Stored = lo + round(q·(hi−lo)) with q = disp (MONOCHROME2) or 1−disp (MONOCHROME1), so the
    stored values span exactly [lo, hi]; the window, when present, spans exactly the rescaled
    [lo, hi] under the DICOM linear-window formula.
    """
    from pydicom.dataset import Dataset, FileMetaDataset

    lo, hi = enc["lo"], enc["hi"]
    q = disp if enc["photometric"] == "MONOCHROME2" else np.float32(1.0) - disp
    stored = np.rint(q * np.float32(hi - lo))  # float32 is exact for these 16-bit integers
    stored += np.float32(lo)
    arr = stored.astype(np.int16 if enc["signed"] else np.uint16)

    fm = FileMetaDataset()
    sop_class = _SOP_CLASSES[enc["sop"]]
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = meta["sop_uid"]
    fm.TransferSyntaxUID = UID_EXPLICIT_LE
    ds = Dataset()
    ds.file_meta = fm
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta["sop_uid"]
    ds.StudyDate = meta["date"]
    ds.SeriesDate = meta["date"]
    ds.StudyTime = meta["time"]
    ds.Modality = enc["sop"]
    ds.Manufacturer = "chexdino demo"
    ds.PatientName = "___"
    ds.PatientID = str(meta["subject_id"])
    ds.StudyInstanceUID = meta["study_uid"]
    ds.SeriesInstanceUID = meta["series_uid"]
    ds.StudyID = str(meta["study_id"])
    ds.AccessionNumber = str(meta["study_id"])
    ds.SeriesNumber = 1
    ds.InstanceNumber = meta["instance"]
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = meta["view"]
    ds.PerformedProcedureStepDescription = meta["procedure"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = enc["photometric"]
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = 16
    ds.BitsStored = enc["bits_stored"]
    ds.HighBit = enc["bits_stored"] - 1
    ds.PixelRepresentation = enc["signed"]
    slope, intercept = enc["rescale"] or (1.0, 0.0)
    if enc["rescale"] is not None:
        ds.RescaleIntercept = _ds_number(intercept)
        ds.RescaleSlope = _ds_number(slope)
        ds.RescaleType = "US"
    if enc["window"]:
        m_lo, m_hi = lo * slope + intercept, hi * slope + intercept
        ds.WindowCenter = _ds_number((m_lo + m_hi) / 2 + 0.5)
        ds.WindowWidth = _ds_number(m_hi - m_lo + 1)
    ts = UID_EXPLICIT_LE
    if enc["ts"] != "none" and enc["ts"] in compress:
        uid, plugin = compress[enc["ts"]]
        try:
            ds.compress(uid, arr, encoding_plugin=plugin, generate_instance_uid=False)
            ts = uid
        except Exception:  # an encoder that refuses this image: keep it uncompressed
            ds.file_meta.TransferSyntaxUID = UID_EXPLICIT_LE
    if ts == UID_EXPLICIT_LE:
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OW"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), ts


def jpeg_bytes(disp: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.rint(disp * 255.0).astype(np.uint8), mode="L").save(
        buf, format="JPEG", quality=95)
    return buf.getvalue()
