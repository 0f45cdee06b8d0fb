"""Stage 2 throughput on one CPU core: MIMIC-sized films -> 320x320 uint8, chexdino vs CheXzero.

Writes MIMIC-sized inputs to a temporary folder: a 3056x2544 (rows x cols) 12-bit uncompressed
DICOM (~15.5 MB, window centre/width) in MONOCHROME2 and MONOCHROME1, and a greyscale JPG of
~1.5 MB (MIMIC-CXR-JPG's average), all of one synthetic chest film with film grain. Then times,
in this one process pinned to one core, ``images.load_cxr`` against a CheXzero-style baseline
(decode at full size, window in float, Lanczos resize of the whole frame, pad), plus the decode
floors, and checks that the fast DICOM path gives the same picture as the full-resolution one.

    python bench/preprocess.py [--json OUT.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL
import pydicom
from PIL import Image, features
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from chexdino.config import ImagesConfig
from chexdino.demo import StudySigns, render_frontal
from chexdino.dicom import read_dicom
from chexdino.images import load_cxr, resize_and_pad

ROWS, COLS = 3056, 2544  # MIMIC-CXR's most common portrait frame
IMAGES = ImagesConfig.from_section()  # config.yaml's images: section
SIZE = IMAGES.size
JPEG_QUALITY = 90  # gives ~1.5 MB for this film, the MIMIC-CXR-JPG average
STORED_LOW, STORED_SPAN = 200, 3600  # 12-bit stored values of the film
WINDOW = (2000.0, 3000.0)  # centre / width: clips a little at both ends, as real films do
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"


# --- inputs --------------------------------------------------------------------------------


def chest_film(seed: int = 0) -> np.ndarray:
    """A chest-like film (bright = dense) with film grain, float32 in [0, 1]."""
    return render_frontal(np.random.default_rng(seed), ROWS, COLS, StudySigns())


def write_dx(path: Path, stored: np.ndarray, photometric: str, center: float) -> Path:
    """An uncompressed 12-bit DX file with a window, like a MIMIC-CXR DICOM."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = center, WINDOW[1]
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def make_inputs(folder: Path) -> dict[str, Path]:
    """The three benchmark files of one film: JPG, MONOCHROME2 and MONOCHROME1 DICOM."""
    film = chest_film()
    jpg = folder / "film.jpg"
    Image.fromarray(np.rint(film * 255).astype(np.uint8)).save(jpg, quality=JPEG_QUALITY)
    stored = np.rint(STORED_LOW + film * STORED_SPAN).astype(np.uint16)
    mono2 = write_dx(folder / "mono2.dcm", stored, "MONOCHROME2", WINDOW[0])
    # the same picture with the value scale turned round, and the window with it
    mono1 = write_dx(folder / "mono1.dcm", 4095 - stored, "MONOCHROME1", 4095 - WINDOW[0] + 1)
    return {"jpg": jpg, "mono2": mono2, "mono1": mono1}


# --- the CheXzero-style baseline ------------------------------------------------------------


def chexzero_jpg(path: Path) -> np.ndarray:
    """Full decode, then CheXzero's preprocess (Lanczos on the whole film, pad)."""
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("L"))
    return resize_and_pad(pixels, SIZE)


def chexzero_dicom(path: Path) -> np.ndarray:
    """Full decode with pydicom, the DICOM linear window in float32 (in place), then the same
    Lanczos resize and pad as for JPGs."""
    ds = pydicom.dcmread(path)
    values = ds.pixel_array.astype(np.float32)
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    scale = 255 / (width - 1)  # PS3.3 C.11.2.1.2.1 LINEAR, written as one scale and offset
    offset = (0.5 - (center - 0.5) / (width - 1)) * 255
    if ds.PhotometricInterpretation == "MONOCHROME1":
        scale, offset = -scale, 255 - offset
    values *= np.float32(scale)
    values += np.float32(offset)
    np.clip(values, 0, 255, out=values)
    return resize_and_pad(np.rint(values, out=values).astype(np.uint8), SIZE)


# --- decode floors and chexdino's paths -----------------------------------------------------


def jpeg_draft_decode_only(path: Path) -> None:
    """libjpeg-turbo at 1/8 scale and nothing else: the entropy-decoding floor."""
    with Image.open(path) as picture:
        width, height = picture.size
        ratio = SIZE / max(width, height)
        picture.draft("L", (round(width * ratio), round(height * ratio)))
        picture.load()


def dicom_read_only(path: Path) -> None:
    """Parse the file and view its pixel bytes as an array: the I/O floor."""
    ds = pydicom.dcmread(path)
    np.frombuffer(ds.PixelData, np.uint16).reshape(ds.Rows, ds.Columns).max()


def chexdino_full_resolution(path: Path) -> np.ndarray:
    """Display image of the whole frame, then resize: the DICOM path before reduce-first."""
    return resize_and_pad(read_dicom(path, IMAGES.max_frame_pixels), SIZE)


def chexdino(path: Path) -> np.ndarray:
    return load_cxr(path, SIZE, IMAGES.max_frame_pixels)[0]


# --- timing --------------------------------------------------------------------------------


def calls_per_round(func: Callable[[Path], object], path: Path, seconds: float) -> int:
    """How many calls make a timed round of about ``seconds``, after a warm-up call."""
    func(path)
    t0 = time.perf_counter()
    func(path)
    return max(3, round(seconds / max(time.perf_counter() - t0, 1e-4)))


def interleaved_rates(rows: list[tuple[Callable[[Path], object], Path]], seconds: float,
                      rounds: int = 5) -> list[float]:
    """Median img/s of each (function, file) over rounds that visit every row in turn, so a
    burst of load from another process slows all rows alike instead of one."""
    calls = [calls_per_round(func, path, seconds) for func, path in rows]
    rates: list[list[float]] = [[] for _ in rows]
    for _ in range(rounds):
        for i, (func, path) in enumerate(rows):
            t0 = time.perf_counter()
            for _ in range(calls[i]):
                func(path)
            rates[i].append(calls[i] / (time.perf_counter() - t0))
    return [statistics.median(r) for r in rates]


def pin_to_one_core() -> str:
    """Run on one core so 'per core' means it even if a library starts threads."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core}"


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "date": dt.date.today().isoformat(),
        "cpu": f"{cpu} ({os.cpu_count()} logical cores)",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "libjpeg-turbo": str(features.version("libjpeg_turbo")),
        "pydicom": pydicom.__version__,
    }


# --- the run -------------------------------------------------------------------------------

ROWS_TO_TIME = [
    # (name, input, function, baseline row it is compared with)
    ("JPG   CheXzero: full decode + Lanczos", "jpg", chexzero_jpg, None),
    ("JPG   decode at 1/8 only (floor)", "jpg", jpeg_draft_decode_only, "JPG   CheXzero"),
    ("JPG   chexdino load_cxr", "jpg", chexdino, "JPG   CheXzero"),
    ("DICOM CheXzero-style: float window + Lanczos", "mono2", chexzero_dicom, None),
    ("DICOM read + pixel view only (floor)", "mono2", dicom_read_only, "DICOM CheXzero"),
    ("DICOM chexdino full-resolution LUT + Lanczos", "mono2", chexdino_full_resolution,
     "DICOM CheXzero"),
    ("DICOM chexdino load_cxr (MONOCHROME2)", "mono2", chexdino, "DICOM CheXzero"),
    ("DICOM chexdino load_cxr (MONOCHROME1)", "mono1", chexdino, "DICOM CheXzero"),
]


def fidelity(paths: dict[str, Path]) -> dict[str, float]:
    """Mean / max absolute difference (grey levels) of load_cxr against reference paths."""
    out = {}
    for name in ("mono2", "mono1"):
        fast = chexdino(paths[name]).astype(np.int16)
        for ref_name, ref in (("full-res", chexdino_full_resolution),
                              ("chexzero", chexzero_dicom)):
            diff = np.abs(fast - ref(paths[name]))
            out[f"{name} vs {ref_name} mean"] = float(diff.mean())
            out[f"{name} vs {ref_name} max"] = float(diff.max())
    jpg_diff = np.abs(chexdino(paths["jpg"]).astype(np.int16) - chexzero_jpg(paths["jpg"]))
    out["jpg vs chexzero mean"] = float(jpg_diff.mean())
    out["jpg vs chexzero max"] = float(jpg_diff.max())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=1.0, help="length of one timed round")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per path (median)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    pinned = pin_to_one_core()
    info = machine() | {"pinning": pinned}
    with tempfile.TemporaryDirectory(prefix="chexdino-bench-") as tmp:
        paths = make_inputs(Path(tmp))
        sizes = {k: round(v.stat().st_size / 1e6, 2) for k, v in paths.items()}
        timed = interleaved_rates([(func, paths[key]) for _, key, func, _ in ROWS_TO_TIME],
                                  args.seconds, args.rounds)
        rates = {row[0]: rate for row, rate in zip(ROWS_TO_TIME, timed, strict=True)}
        quality = fidelity(paths)
    print(" | ".join(f"{k} {v}" for k, v in info.items()))
    print(f"inputs: {ROWS}x{COLS} film; file sizes (MB): {sizes}")
    print(f"\n| {'path':<46} | ms/img | img/s | x baseline |\n|{'-' * 48}|-------:|------:|"
          f"-----------:|")
    for name, _, _, base in ROWS_TO_TIME:
        baseline = next((v for k, v in rates.items() if base and k.startswith(base)), None)
        ratio = f"{rates[name] / baseline:.2f}" if baseline else "1.00"
        print(f"| {name:<46} | {1000 / rates[name]:6.1f} | {rates[name]:5.1f} | {ratio:>10} |")
    print("\nfidelity of load_cxr (grey levels, 320x320):")
    for name, value in quality.items():
        print(f"  {name:<28} {value:6.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "file_mb": sizes,
                                         "img_per_s": rates, "fidelity": quality}, indent=2))


if __name__ == "__main__":
    main()
