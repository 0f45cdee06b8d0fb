"""Seeded synthetic MIMIC-CXR (and a CheXpert-test-shaped eval set) in the real files' shapes.

Why: the same pipeline code must run on a laptop without credentialed data, and the demo's
zero-shot scorecard must be able to move. So the generator writes the real layout (DICOM + JPG
twins, reports, the three official CSVs), a deliberate variety of DICOM encodings and a few
broken records, and draws chest-like films whose five competition labels have clearly visible,
learnable signs that agree with the report text.

Everything is a pure function of ``seed``: no timestamps, UIDs derived from the seed, fixed
dates, gzip headers without mtime, so a rerun is byte-identical.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
import os
import textwrap
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from chexdino import COMPETITION_LABELS, LABELS

__all__ = ["StudySigns", "make_demo_dataset", "render_frontal", "render_lateral"]

NAN = float("nan")
RIGHT, LEFT = -1, 1  # patient's right lung is on the image's left (negative u)
SIDE_WORD = {RIGHT: "right", LEFT: "left"}

SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
CHEXPERT_COLUMNS = ("subject_id", "study_id", *LABELS)
GROUNDTRUTH_COLUMNS = ("Study", *LABELS)
BAD_KINDS = ("truncated_dicom", "not_dicom", "missing_report", "empty_report")

_UID_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_UID_RLE = "1.2.840.10008.1.2.5"
_UID_J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
_SOP_CLASSES = {
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}


# --------------------------------------------------------------------------------------------
# Visual signs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySigns:
    """What to draw on a frontal film; strengths are 1.0 (positive), 0.5 (uncertain) or 0.

    Sides use the patient's convention: ``RIGHT`` (-1) is drawn on the image's left.
    """

    cardiomegaly: float = 0.0
    ctr: float = 0.0  # cardiothoracic ratio when cardiomegaly > 0 (0 = draw a normal heart)
    effusion: float = 0.0
    effusion_sides: tuple[int, ...] = ()
    effusion_fraction: float = 0.22
    consolidation: float = 0.0
    consolidation_side: int = RIGHT
    consolidation_zone: str = "upper"
    edema: float = 0.0
    atelectasis: float = 0.0
    atelectasis_sides: tuple[int, ...] = ()
    devices: tuple[str, ...] = ()
    pneumothorax: float = 0.0
    pneumothorax_side: int = RIGHT
    widened_mediastinum: float = 0.0
    nodule: float = 0.0
    nodule_side: int = RIGHT
    pleural_other: float = 0.0
    pleural_other_side: int = RIGHT
    opacity: float = 0.0
    opacity_side: int = RIGHT


def _soft(x: np.ndarray, width: float) -> np.ndarray:
    """Linear ramp 0→1 over ``width`` around x = 0: anti-aliased edges without a blur pass."""
    return np.clip(x * (1.0 / width) + 0.5, 0.0, 1.0)


class _Canvas:
    """A float picture plus chest coordinates: u grows to the image's right, v downwards."""

    def __init__(self, h: int, w: int, cx: float, cy: float, scale: float, fill: float):
        self.h, self.w, self.scale = h, w, scale
        self.seed = 0
        self.gamma = np.float32(1.0)
        self.grain_at = (0.0, 0.0)
        self.cx, self.cy = cx, cy
        self.img = np.full((h, w), fill, dtype=np.float32)
        self.u = ((np.arange(w, dtype=np.float32) + 0.5 - cx) / scale)[None, :]
        self.v = ((np.arange(h, dtype=np.float32) + 0.5 - cy) / scale)[:, None]

    def box(
        self, u0: float, u1: float, v0: float, v1: float
    ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        """Pixel window of a chest-coordinate box, so local shapes cost only their area."""
        x0 = max(0, math.floor(self.cx + u0 * self.scale))
        x1 = min(self.w, math.ceil(self.cx + u1 * self.scale) + 1)
        y0 = max(0, math.floor(self.cy + v0 * self.scale))
        y1 = min(self.h, math.ceil(self.cy + v1 * self.scale) + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        sl = (slice(y0, y1), slice(x0, x1))
        return sl, self.u[:, x0:x1], self.v[y0:y1, :]

    def blend(self, sl: tuple[slice, slice] | None, value, alpha: np.ndarray) -> None:
        """Alpha-composite ``value`` (scalar or array) over the picture inside ``sl``."""
        target = self.img if sl is None else self.img[sl]
        target += alpha * (value - target)


def _ellipse(u, v, cu, cv, ru, rv, edge):
    r = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return _soft((1.0 - r) * (0.5 * (ru + rv)), edge)


def _segment(u, v, p0, p1, half_thick, edge):
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    d = np.sqrt((u - (x0 + t * dx)) ** 2 + (v - (y0 + t * dy)) ** 2)
    return _soft(half_thick - d, edge)


def _polyline(cv: _Canvas, pts, half_thick, value, edge=0.006):
    for p0, p1 in itertools.pairwise(pts):
        pad = half_thick + edge
        b = cv.box(min(p0[0], p1[0]) - pad, max(p0[0], p1[0]) + pad,
                   min(p0[1], p1[1]) - pad, max(p0[1], p1[1]) + pad)
        if b is not None:
            sl, u, v = b
            cv.blend(sl, value, _segment(u, v, p0, p1, half_thick, edge))


def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in [-1, 1]-ish: cheap lung-marking / mottling texture."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


_NOISE_TILE: dict[int, np.ndarray] = {}
_NOISE_SIZE = 1024


def _grain(cv: _Canvas, h: int, w: int) -> np.ndarray:
    """Film grain: a random crop of one per-seed noise tile (drawing fresh noise per image
    was a fifth of the run time); falls back to fresh noise for very large images."""
    seed = cv.seed
    if h > _NOISE_SIZE or w > _NOISE_SIZE:
        return np.random.default_rng([seed, 98, h, w]).standard_normal((h, w), dtype=np.float32)
    tile = _NOISE_TILE.get(seed)
    if tile is None:
        tile = np.random.default_rng([seed, 99]).standard_normal(
            (_NOISE_SIZE, _NOISE_SIZE), dtype=np.float32)
        _NOISE_TILE.clear()
        _NOISE_TILE[seed] = tile
    y = int(cv.grain_at[0] * (_NOISE_SIZE - h + 1))
    x = int(cv.grain_at[1] * (_NOISE_SIZE - w + 1))
    return tile[y : y + h, x : x + w]


def _finish(cv: _Canvas, h: int, w: int, noise: float) -> np.ndarray:
    """Upsample to (h, w), add film grain and random contrast, stretch exactly onto [0, 1].

    Shapes are drawn at <= 256 px because they are smooth (downstream stores 320 px and
    trains at 96 px); only the grain is drawn at full size. The exact [0, 1] span lets any
    decoder (window or min-max) recover the same picture (see ``_encode_dicom``).
    """
    small = np.clip(cv.img, 0.0, 1.0) ** cv.gamma
    if small.shape != (h, w):
        img = np.asarray(Image.fromarray(small, mode="F").resize(
            (w, h), Image.Resampling.BILINEAR), dtype=np.float32).copy()
    else:
        img = small
    img += _grain(cv, h, w) * np.float32(noise)
    lo, hi = float(img.min()), float(img.max())
    img -= np.float32(lo)
    img *= np.float32(1.0 / max(hi - lo, 1e-6))
    return img


def _frame(rng: np.random.Generator, h: int, w: int, lateral: bool, seed: int) -> _Canvas:
    """A canvas at <= 256 px on the long side, with a jittered chest position and size."""
    f = min(1.0, 256.0 / max(h, w))
    h, w = max(8, round(h * f)), max(8, round(w * f))
    scale = min(w * 0.46, h * 0.41) * rng.uniform(0.9, 1.04)
    if lateral:
        scale *= 0.95
    cx = w * 0.5 + rng.uniform(-0.04, 0.04) * w
    cy = h * 0.47 + rng.uniform(-0.03, 0.03) * h
    cv = _Canvas(h, w, cx, cy, scale, fill=np.float32(rng.uniform(0.02, 0.07)))
    # Drawn up front so a sign changes only its own pixels (same rng → same film otherwise).
    cv.seed = seed
    cv.gamma = np.float32(rng.uniform(0.8, 1.25))
    cv.grain_at = (float(rng.random()), float(rng.random()))
    return cv


def render_frontal(
    rng: np.random.Generator, h: int, w: int, signs: StudySigns, grain_seed: int = 0
) -> np.ndarray:
    """Draw a PA/AP-like film (bright = dense) with the requested signs; float32 in [0, 1].

    The five competition signs are large, laterality-free and visible at 96 px, because a
    tiny model trained from scratch for minutes must learn them.
    """
    cv = _frame(rng, h, w, False, grain_seed)
    u, v = cv.u, cv.v
    jit = rng.uniform

    # Body (a rounded box, not an egg), neck, abdomen below the diaphragm.
    bru, brv = 0.97 + jit(-0.03, 0.03), 1.25
    r = (np.abs(u / bru) ** 3 + np.abs((v - 0.22) / brv) ** 3) ** (1.0 / 3.0)
    body = _soft((1.0 - r) * 0.5 * (bru + brv), 0.04)
    body = np.maximum(body, _soft(0.22 - np.abs(u), 0.04) * _soft(-0.6 - v, 0.05))
    cv.blend(None, np.float32(jit(0.42, 0.52)), body)

    lungs = {}
    lung_uc = {RIGHT: -0.43 + jit(-0.02, 0.02), LEFT: 0.43 + jit(-0.02, 0.02)}
    lung_ru = 0.33 + jit(-0.015, 0.015)
    apex = -0.8 + jit(-0.03, 0.03)
    dome_top = {RIGHT: 0.5 + jit(-0.03, 0.03), LEFT: 0.55 + jit(-0.03, 0.03)}
    for side in signs.atelectasis_sides:
        dome_top[side] -= 0.1 * signs.atelectasis
    dome_k = 0.2

    # Abdomen: denser than chest soft tissue below each dome.
    dome_col = np.where(
        u < 0,
        dome_top[RIGHT] + dome_k * np.minimum(((u - lung_uc[RIGHT]) / lung_ru) ** 2, 1.5),
        dome_top[LEFT] + dome_k * np.minimum(((u - lung_uc[LEFT]) / lung_ru) ** 2, 1.5),
    )
    cv.blend(None, np.float32(0.6), body * _soft(v - dome_col, 0.03))

    texture = _lowfreq(rng, cv.h, cv.w, 14) * 0.035 + _lowfreq(rng, cv.h, cv.w, 40) * 0.02
    phase = (v - 0.3 * (np.abs(u) - 0.15) ** 2 + jit(0, 0.17)) * (2 * math.pi / 0.17)
    ribs = 0.06 * _soft(np.cos(phase) - 0.35, 0.5)
    lung_value = np.float32(jit(0.1, 0.15)) + texture + ribs
    cv_top = -0.25
    for side in (RIGHT, LEFT):
        du = u - lung_uc[side]
        dv = np.minimum(v - cv_top, 0.0)
        # Lateral border widens a little towards the base; apex is a half-ellipse.
        ru = lung_ru + 0.04 * np.clip(v - cv_top, 0.0, 0.8)
        r = np.sqrt((du / ru) ** 2 + (dv / (cv_top - apex)) ** 2)
        dome = dome_top[side] + dome_k * (du / lung_ru) ** 2
        lungs[side] = _soft((1.0 - r) * lung_ru, 0.03) * _soft(dome - v, 0.03)
        cv.blend(None, lung_value, lungs[side])

    # Mediastinum, spine, aortic knob.
    med_half = 0.12 + jit(-0.01, 0.01) + 0.09 * signs.widened_mediastinum
    b = cv.box(-0.4, 0.4, -1.3, 0.8)
    if b is not None:
        sl, bu, bv = b
        cv.blend(sl, np.float32(0.62), _soft(med_half - np.abs(bu), 0.03) * _soft(0.7 - bv, 0.05)
                 * _soft(bv + 0.85, 0.1))
        cv.blend(sl, np.float32(0.72), _soft(0.05 - np.abs(bu), 0.015) * 0.8)
    b = cv.box(0.0, 0.3, -0.6, -0.2)
    if b is not None:
        sl, bu, bv = b
        cv.blend(sl, np.float32(0.62), _ellipse(bu, bv, 0.12, -0.42, 0.08, 0.07, 0.02))

    # Heart: width from the cardiothoracic ratio over the outer lung borders; it sits on the
    # diaphragm, two thirds of it on the patient's left (image right).
    thorax = (lung_uc[LEFT] + lung_ru) - (lung_uc[RIGHT] - lung_ru)
    normal_ctr = jit(0.38, 0.46)
    ctr = signs.ctr if signs.cardiomegaly > 0 and signs.ctr > 0 else normal_ctr
    hru = 0.5 * ctr * thorax
    hx = 0.1 + 0.35 * (hru - 0.31) + jit(-0.015, 0.015)
    hrv = 0.24 + 0.2 * (hru - 0.31)
    hy = dome_top[LEFT] + 0.02 - hrv + jit(-0.02, 0.02)
    b = cv.box(hx - hru - 0.05, hx + hru + 0.05, hy - hrv - 0.05, hy + hrv + 0.05)
    if b is not None:
        sl, bu, bv = b
        cv.blend(sl, np.float32(0.64), _ellipse(bu, bv, hx, hy, hru, hrv, 0.03))

    # Clavicles.
    for s in (-1, 1):
        y0 = -0.72 + jit(-0.03, 0.03)
        _polyline(cv, [(s * 0.07, y0), (s * 0.58, y0 - 0.12)], 0.022, np.float32(0.72), 0.02)

    _draw_signs(rng, cv, signs, body, lungs, lung_uc, lung_ru, dome_top, dome_k,
                (hx, hy, hru, hrv))
    return _finish(cv, h, w, noise=0.012)


def _draw_signs(rng, cv, signs, body, lungs, lung_uc, lung_ru, dome_top, dome_k, heart):
    u, v = cv.u, cv.v
    jit = rng.uniform
    hx, hy, hru, hrv = heart

    if signs.edema > 0:
        # Bilateral perihilar ("bat-wing") haze: obvious on purpose, subtle haze learns slowly.
        amp = 0.8 * signs.edema
        haze = np.zeros_like(cv.img)
        for side in (RIGHT, LEFT):
            hu = side * (0.22 + jit(-0.02, 0.02))
            g = np.exp(-0.5 * (((u - hu) / 0.24) ** 2 + ((v - 0.05) / 0.4) ** 2))
            haze += g * lungs[side]
        mottle = 1.0 + 0.3 * _lowfreq(rng, cv.h, cv.w, 30)
        cv.blend(None, np.float32(0.66), np.clip(amp * haze * mottle, 0.0, 0.9))

    if signs.effusion > 0:
        full = signs.effusion >= 1
        for side in signs.effusion_sides:
            frac = signs.effusion_fraction * (1.0 if full else 0.55)
            height = frac * (dome_top[side] - (-0.8))
            du = u - lung_uc[side]
            lat = np.clip(du * side / lung_ru + 0.3, 0.0, 1.3)  # grows towards the chest wall
            level = dome_top[side] + 0.03 - height - 0.12 * lat**2  # meniscus
            dome = dome_top[side] + dome_k * (du / lung_ru) ** 2
            # Fluid fills the lung base and hides the dome and the costophrenic angle.
            strip = _soft(lung_ru + 0.03 - np.abs(du), 0.03) * _soft(dome + 0.05 - v, 0.05)
            fluid = np.maximum(lungs[side], strip * body) * _soft(v - level, 0.035)
            cv.blend(None, np.float32(0.62), fluid * (0.95 if full else 0.7))

    if signs.atelectasis > 0:
        for side in signs.atelectasis_sides:
            cu = lung_uc[side] + side * jit(-0.02, 0.06)
            cvv = dome_top[side] - jit(0.2, 0.3)
            half = jit(0.17, 0.22)
            tilt = jit(0.04, 0.1)  # lateral end lower: plate-like
            p0 = (cu - side * half, cvv - tilt / 2)
            p1 = (cu + side * half, cvv + tilt / 2)
            thick = jit(0.05, 0.065) * cv.h / cv.scale  # >= 4 % of image height everywhere
            strength = 0.9 if signs.atelectasis >= 1 else 0.6
            b = cv.box(cu - half - 0.1, cu + half + 0.1, cvv - 0.2, cvv + 0.2)
            if b is not None:
                sl, bu, bv = b
                # A wedge: thicker medially (t = 0), tapering laterally.
                (x0, y0), (x1, y1) = p0, p1
                dx, dy = x1 - x0, y1 - y0
                t = np.clip(((bu - x0) * dx + (bv - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
                d = np.sqrt((bu - (x0 + t * dx)) ** 2 + (bv - (y0 + t * dy)) ** 2)
                band = _soft(thick * (0.62 - 0.2 * t) - d, 0.02)
                cv.blend(sl, np.float32(0.7), band * lungs[side][sl] * strength)

    if signs.consolidation > 0:
        side = signs.consolidation_side
        lat_w = 2 * lung_ru
        rad = jit(0.24, 0.30) * lat_w  # lobar, several times a nodule: the two must differ
        lo, hi = (-0.5, -0.28) if signs.consolidation_zone == "upper" else (-0.26, -0.06)
        cu, cvv = lung_uc[side], 0.5 * (lo + hi)
        for _ in range(64):
            cu = lung_uc[side] + jit(-0.12, 0.12)
            cvv = jit(lo, hi)
            inside = abs(cu - lung_uc[side]) + rad < lung_ru - 0.04
            off_heart = ((cu - hx) / (hru + rad + 0.04)) ** 2 + (
                (cvv - hy) / (hrv + rad + 0.04)) ** 2 > 1.0
            # Stay above the highest fluid level a large effusion could reach there.
            lat = min(max((cu + side * rad - lung_uc[side]) * side / lung_ru + 0.3, 0.0), 1.3)
            fluid_top = dome_top[side] + 0.03 - 0.28 * (dome_top[side] + 0.8) - 0.12 * lat**2
            if inside and off_heart and cvv + rad < fluid_top - 0.03:
                break
        alpha = 0.92 if signs.consolidation >= 1 else 0.6
        b = cv.box(cu - 2 * rad, cu + 2 * rad, cvv - 2 * rad, cvv + 2 * rad)
        if b is not None:
            sl, bu, bv = b
            blob = _ellipse(bu, bv, cu, cvv, rad, rad * jit(0.8, 1.1), 0.03)
            for _ in range(3):
                a = jit(0, 2 * math.pi)
                blob = np.maximum(blob, _ellipse(
                    bu, bv, cu + 0.6 * rad * math.cos(a), cvv + 0.6 * rad * math.sin(a),
                    0.55 * rad, 0.55 * rad, 0.03))
            cv.blend(sl, np.float32(0.74), blob * alpha * lungs[side][sl])

    if signs.opacity > 0:
        side = signs.opacity_side
        b = cv.box(lung_uc[side] - 0.25, lung_uc[side] + 0.25, -0.3, 0.3)
        if b is not None:
            sl, bu, bv = b
            patch = _ellipse(bu, bv, lung_uc[side], jit(-0.1, 0.1), 0.14, 0.12, 0.08)
            cv.blend(sl, np.float32(0.45), patch * 0.5 * signs.opacity * lungs[side][sl])

    if signs.nodule > 0:
        side = signs.nodule_side
        cu, cvv = lung_uc[side] + jit(-0.12, 0.12), jit(-0.5, -0.1)
        b = cv.box(cu - 0.06, cu + 0.06, cvv - 0.06, cvv + 0.06)
        if b is not None:
            sl, bu, bv = b
            cv.blend(sl, np.float32(0.7), _ellipse(bu, bv, cu, cvv, 0.035, 0.035, 0.015)
                     * signs.nodule * lungs[side][sl])

    if signs.pleural_other > 0:
        side = signs.pleural_other_side
        cap = lungs[side] * _soft(-0.58 - v, 0.04)
        cv.blend(None, np.float32(0.5), cap * 0.7 * signs.pleural_other)

    if signs.pneumothorax > 0:
        # A dark lucent rim at the apex/lateral edge without lung markings.
        side = signs.pneumothorax_side
        du = u - lung_uc[side]
        dv = np.minimum(v + 0.2, 0.0)
        r = np.sqrt((du / lung_ru) ** 2 + (dv / 0.58) ** 2)
        rim = lungs[side] * _soft(r - 0.8, 0.03) * _soft(0.05 - v, 0.1)
        cv.blend(None, np.float32(0.02), rim * 0.9 * signs.pneumothorax)
        ring = lungs[side] * _soft(0.012 - np.abs(r - 0.8) * lung_ru, 0.006) * _soft(-v, 0.1)
        cv.blend(None, np.float32(0.45), ring * signs.pneumothorax)

    for dev in signs.devices:
        tube = np.float32(0.95)
        if dev == "ett":
            x = jit(-0.02, 0.02)
            _polyline(cv, [(x, -1.6), (x, -1.0), (x + 0.01, -0.42)], 0.012, tube)
        elif dev == "cvc":
            _polyline(cv, [(-0.5, -1.1), (-0.2, -0.82), (-0.07, -0.62), (-0.05, -0.3)],
                      0.008, tube)
        elif dev == "ngt":
            _polyline(cv, [(0.01, -1.6), (0.03, -0.2), (0.12, 0.6), (0.3, 0.75)], 0.01, tube)
        elif dev == "pacer":
            b = cv.box(0.45, 0.7, -0.85, -0.65)
            if b is not None:
                sl, bu, bv = b
                box = _soft(0.08 - np.abs(bu - 0.57), 0.01) * _soft(0.055 - np.abs(bv + 0.75),
                                                                     0.01)
                cv.blend(sl, np.float32(0.98), box)
            _polyline(cv, [(0.5, -0.72), (0.15, -0.55), (-0.05, -0.1), (0.1, 0.3)], 0.007, tube)


def render_lateral(rng: np.random.Generator, h: int, w: int, grain_seed: int = 0) -> np.ndarray:
    """A simpler lateral film (filtered out downstream, but it must decode like a real one)."""
    cv = _frame(rng, h, w, True, grain_seed)
    u, v = cv.u, cv.v
    jit = rng.uniform
    body = _ellipse(u, v, 0.0, 0.15, 0.78 + jit(-0.04, 0.04), 1.3, 0.04)
    cv.blend(None, np.float32(jit(0.45, 0.55)), body)
    lung = _ellipse(u, v, 0.02, -0.08, 0.55, 0.72, 0.04) * _soft(0.45 - v + 0.2 * u, 0.04)
    cv.blend(None, np.float32(0.2) + _lowfreq(rng, cv.h, cv.w, 14) * 0.03, lung)
    heart = _ellipse(u, v, -0.28, 0.3, 0.3, 0.28, 0.04)
    cv.blend(None, np.float32(0.55), heart * 0.8)
    spine = _soft(0.08 - np.abs(u - 0.58), 0.02)
    discs = 0.15 * _soft(np.cos((v + jit(0, 0.1)) * (2 * math.pi / 0.14)) - 0.6, 0.3)
    cv.blend(None, np.float32(0.8) - discs, spine)
    cv.blend(None, np.float32(0.75), _soft(0.02 - np.abs(u + 0.66 + 0.05 * v), 0.01)
             * _soft(0.5 - np.abs(v + 0.2), 0.05))
    return _finish(cv, h, w, noise=0.012)


# --------------------------------------------------------------------------------------------
# Study plans and labels
# --------------------------------------------------------------------------------------------


@dataclass
class _Study:
    subject_id: int
    study_id: int
    split: str
    labels: dict[str, float]
    signs: StudySigns
    report: str | None
    date: str
    time: str
    procedure: str
    bad: str | None = None
    images: list[_Image] = field(default_factory=list)
    uids: tuple = ()  # (study uid, series uid, [sop uid per image])


@dataclass
class _Image:
    key: tuple[int, ...]  # rendering rng key: independent of processing order
    dicom_id: str
    view: str  # "PA", "AP", "LATERAL" or "" (missing ViewPosition)
    frontal: bool
    rows: int
    cols: int
    path: Path  # without suffix
    signs: StudySigns | None
    encoding: dict
    bad: str | None = None


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _stratified(rng: np.random.Generator, n: int, choices: Sequence, probs: Sequence[float]):
    """Choices in the given proportions, each present at least once when n allows, shuffled.

    Why: a 30-study test run must still cover every encoding variant, whatever the seed.
    """
    counts = [math.floor(p * n) for p in probs]
    if n >= len(choices):
        counts = [max(1, c) for c in counts]
    order = np.argsort(-np.asarray(probs), kind="stable")
    i = 0
    while sum(counts) < n:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > n:
        j = order[i % len(order)]
        if counts[j] > 1:
            counts[j] -= 1
        i += 1
    out = [c for c, k in zip(choices, counts, strict=True) for _ in range(k)]
    perm = rng.permutation(n)
    return [out[k] for k in perm]


def _unique_ints(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[int]:
    out: set[int] = set()
    while len(out) < n:
        out.update(int(x) for x in rng.integers(lo, hi, size=2 * (n - len(out)) + 4))
    return sorted(rng.permutation(sorted(out))[:n].tolist())


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, size=5, dtype=np.uint64))


def _uid(rng: np.random.Generator) -> str:
    """A '2.25.' UUID-derived UID drawn from the seeded rng (no clock, no host id)."""
    parts = rng.integers(0, 2**32, size=4, dtype=np.uint64)
    value = 0
    for p in parts:
        value = (value << 32) | int(p)
    return f"2.25.{value | 1 << 120}"


def _draw_state(rng: np.random.Generator, p_pos: float, p_unc: float, p_neg: float) -> float:
    x = rng.random()
    if x < p_pos:
        return 1.0
    if x < p_pos + p_unc:
        return -1.0
    if x < p_pos + p_unc + p_neg:
        return 0.0
    return NAN


def _strength(state: float) -> float:
    return 1.0 if state == 1.0 else 0.5 if state == -1.0 else 0.0


def _is_set(state: float) -> bool:
    return state == 1.0 or state == -1.0


@dataclass
class _Findings:
    """Label states plus the attributes that both the text and the picture must agree on."""

    state: dict[str, float]
    eff_sides: tuple[int, ...] = (RIGHT,)
    eff_size: str = "small"
    cons_side: int = RIGHT
    cons_zone: str = "upper"
    atel_sides: tuple[int, ...] = (RIGHT,)
    card_degree: str = "mild"
    edema_degree: str = "mild"
    device: str = "ett"
    ptx_side: int = RIGHT
    nodule_side: int = RIGHT
    nodule_mm: int = 8
    pleural_other_side: int = RIGHT
    opacity_side: int = RIGHT
    fracture_side: int = RIGHT
    pneumonia_with_cons: bool = False


def _draw_findings(rng: np.random.Generator, competition_only_binary: bool = False) -> _Findings:
    """Independent label states (~30 % positive for each competition label)."""
    if competition_only_binary:
        probs = {name: (0.3, 0.0, 0.7) for name in COMPETITION_LABELS}
        other = (1.0, 0.0)
    else:
        probs = {name: (0.28, 0.05, 0.33) for name in COMPETITION_LABELS}
        other = (1.0, 1.0)
    st: dict[str, float] = {name: NAN for name in LABELS}
    for name, (pp, pu, pn) in probs.items():
        st[name] = _draw_state(rng, pp, pu, pn)
    st["Enlarged Cardiomediastinum"] = _draw_state(rng, 0.05, 0.01 * other[1], 0.2 * other[1])
    st["Fracture"] = _draw_state(rng, 0.03, 0.0, 0.08 * other[1])
    st["Lung Lesion"] = _draw_state(rng, 0.04, 0.01 * other[1], 0.05 * other[1])
    st["Pleural Other"] = _draw_state(rng, 0.02, 0.0, 0.0)
    st["Pneumothorax"] = _draw_state(rng, 0.03, 0.01 * other[1], 0.35 * other[1])
    st["Support Devices"] = _draw_state(rng, 0.18, 0.0, 0.0)
    f = _Findings(state=st)
    f.eff_sides = _pick(rng, [(RIGHT,), (LEFT,), (RIGHT, LEFT), (RIGHT, LEFT)])
    f.eff_size = _pick(rng, ["small", "small", "moderate", "large"])
    f.cons_side = _pick(rng, [RIGHT, LEFT])
    f.cons_zone = _pick(rng, ["upper", "mid"])
    f.atel_sides = _pick(rng, [(RIGHT,), (LEFT,), (RIGHT, LEFT)])
    f.card_degree = _pick(rng, ["mild", "mild", "moderate", "marked"])
    f.edema_degree = _pick(rng, ["mild", "moderate", "moderate"])
    f.device = _pick(rng, ["ett", "cvc", "ngt", "pacer"])
    f.ptx_side = _pick(rng, [RIGHT, LEFT])
    f.nodule_side = _pick(rng, [RIGHT, LEFT])
    f.nodule_mm = int(rng.integers(5, 19))
    f.pleural_other_side = _pick(rng, [RIGHT, LEFT])
    f.opacity_side = _pick(rng, [RIGHT, LEFT])
    f.fracture_side = _pick(rng, [RIGHT, LEFT])
    # Hierarchy: lung opacity follows its children; pneumonia often rides with consolidation.
    kids = [st["Consolidation"], st["Edema"], st["Atelectasis"]]
    if 1.0 in kids:
        st["Lung Opacity"] = 1.0
    elif -1.0 in kids:
        st["Lung Opacity"] = -1.0
    else:
        st["Lung Opacity"] = _draw_state(rng, 0.05, 0.0, 0.0)
    if st["Consolidation"] == 1.0:
        st["Pneumonia"] = _draw_state(rng, 0.45, 0.25 * other[1], 0.0)
        f.pneumonia_with_cons = True
    elif st["Consolidation"] == -1.0:
        st["Pneumonia"] = _draw_state(rng, 0.0, 0.3 * other[1], 0.0)
        f.pneumonia_with_cons = True
    else:
        st["Pneumonia"] = _draw_state(rng, 0.0, 0.0, 0.05 * other[1])
    return f


def _signs_for(f: _Findings, rng: np.random.Generator) -> StudySigns:
    st = f.state
    ctr = {"mild": 0.6, "moderate": 0.65, "marked": 0.69}[f.card_degree] + rng.uniform(-0.02, 0.02)
    if st["Cardiomegaly"] == -1.0:
        ctr = 0.53 + rng.uniform(-0.02, 0.02)
    frac = {"small": 0.19, "moderate": 0.23, "large": 0.28}[f.eff_size]
    opacity_alone = st["Lung Opacity"] == 1.0 and not any(
        st[k] == 1.0 for k in ("Consolidation", "Edema", "Atelectasis"))
    return StudySigns(
        cardiomegaly=_strength(st["Cardiomegaly"]),
        ctr=ctr,
        effusion=_strength(st["Pleural Effusion"]),
        effusion_sides=f.eff_sides,
        effusion_fraction=frac,
        consolidation=_strength(st["Consolidation"]),
        consolidation_side=f.cons_side,
        consolidation_zone=f.cons_zone,
        edema=_strength(st["Edema"]) * (1.0 if f.edema_degree == "moderate" else 0.85),
        atelectasis=_strength(st["Atelectasis"]),
        atelectasis_sides=f.atel_sides,
        devices=(f.device,) if st["Support Devices"] == 1.0 else (),
        pneumothorax=_strength(st["Pneumothorax"]),
        pneumothorax_side=f.ptx_side,
        widened_mediastinum=_strength(st["Enlarged Cardiomediastinum"]),
        nodule=_strength(st["Lung Lesion"]),
        nodule_side=f.nodule_side,
        pleural_other=_strength(st["Pleural Other"]),
        pleural_other_side=f.pleural_other_side,
        opacity=1.0 if opacity_alone else 0.0,
        opacity_side=f.opacity_side,
    )


def _with_no_finding(state: dict[str, float]) -> dict[str, float]:
    out = dict(state)
    others = [out[k] for k in LABELS if k != "No Finding"]
    out["No Finding"] = 1.0 if 1.0 not in others else NAN
    return out


# --------------------------------------------------------------------------------------------
# Report text
# --------------------------------------------------------------------------------------------


def _sides_word(sides: tuple[int, ...]) -> str:
    return "bilateral" if len(sides) == 2 else SIDE_WORD[sides[0]]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


_LOBE = {
    (RIGHT, "upper"): ["right upper lobe", "right upper lung", "right apex"],
    (LEFT, "upper"): ["left upper lobe", "left upper lung", "left apical region"],
    (RIGHT, "mid"): ["right middle lobe", "right mid lung", "right perihilar region"],
    (LEFT, "mid"): ["left mid lung", "left perihilar region", "left mid lung zone"],
}
_DEVICE = {
    "ett": ("Endotracheal tube tip terminates approximately {n} cm above the carina.",
            "Endotracheal tube in standard position."),
    "cvc": ("Right internal jugular central venous catheter terminates in the mid SVC.",
            "Right IJ line tip in the SVC."),
    "ngt": ("Enteric tube courses below the diaphragm with the tip in the stomach.",
            "Enteric tube in appropriate position."),
    "pacer": ("Left chest wall pacemaker with leads in the right atrium and right ventricle.",
              "Stable position of pacemaker leads."),
}


def _label_sentences(rng: np.random.Generator, f: _Findings) -> tuple[list, list, list]:
    """(findings sentences, impression sentences, negation sentences) for the label states."""
    st = f.state
    fnd: list[str] = []
    imp: list[str] = []
    neg: list[str] = []
    lungs_busy = any(_is_set(st[k]) for k in (
        "Edema", "Atelectasis", "Lung Opacity", "Lung Lesion", "Consolidation"))

    # Support devices first, as radiologists do.
    if st["Support Devices"] == 1.0:
        long, short = _DEVICE[f.device]
        fnd.append(long.format(n=int(rng.integers(3, 6))))
        imp.append(short)

    # Consolidation (+ pneumonia).
    s = st["Consolidation"]
    lobe = _pick(rng, _LOBE[(f.cons_side, f.cons_zone)])
    pn = st["Pneumonia"]
    if s == 1.0:
        fnd.append(_pick(rng, [
            f"There is a focal consolidation in the {lobe}.",
            f"Dense airspace consolidation is present in the {lobe}.",
            f"New opacity in the {lobe} consistent with consolidation.",
        ]))
        tail = {1.0: ", consistent with pneumonia", -1.0: ", concerning for pneumonia"}.get(pn, "")
        if pn == -1.0 and rng.random() < 0.5:
            tail = "; pneumonia cannot be excluded"
        imp.append(_pick(rng, [
            f"{_cap(lobe)} consolidation{tail}.",
            f"Airspace consolidation in the {lobe}{tail}.",
            f"Focal {lobe} consolidation{tail}.",
        ]))
    elif s == -1.0:
        fnd.append(_pick(rng, [
            f"Hazy opacity in the {lobe}; cannot exclude early consolidation.",
            f"Subtle opacity in the {lobe} may represent consolidation.",
        ]))
        tail = ", possibly pneumonia" if pn == -1.0 else ""
        imp.append(_pick(rng, [
            f"Possible early consolidation in the {lobe}{tail}.",
            f"Cannot exclude early consolidation in the {lobe}{tail}.",
            f"Opacity in the {lobe} may represent consolidation{tail}.",
        ]))
    if pn == 1.0:
        fnd.append("Findings are consistent with pneumonia.")
    elif pn == -1.0:
        fnd.append("Pneumonia cannot be excluded.")
    if s == 0.0:
        neg.append(_pick(rng, ["No focal consolidation.", "There is no focal consolidation.",
                               "No consolidation is seen."]
                         + ([] if lungs_busy else ["The lungs are clear without consolidation."])))
    if pn == 0.0:
        neg.append("No evidence of pneumonia.")

    # Edema.
    s = st["Edema"]
    deg = f.edema_degree
    if s == 1.0:
        fnd.append(_pick(rng, [
            f"There is {deg} pulmonary edema with perihilar haziness.",
            f"Increased interstitial markings and perihilar opacity consistent with {deg} "
            "interstitial edema.",
            "Pulmonary vascular congestion with perihilar haziness, consistent with pulmonary "
            "edema.",
        ]))
        imp.append(_pick(rng, [
            f"{_cap(deg)} pulmonary edema.",
            "Pulmonary vascular congestion and interstitial edema.",
            f"Findings consistent with {deg} pulmonary edema.",
            f"{_cap(deg)} interstitial edema, likely fluid overload.",
        ]))
    elif s == -1.0:
        fnd.append(_pick(rng, ["Perihilar haziness may represent mild pulmonary edema.",
                               "Possible mild interstitial edema."]))
        imp.append(_pick(rng, ["Possible mild pulmonary edema.",
                               "Cannot exclude mild pulmonary edema.",
                               "Perihilar haziness may represent mild edema."]))
    elif s == 0.0:
        neg.append(_pick(rng, ["No pulmonary edema.", "No pulmonary vascular congestion or edema.",
                               "There is no edema."]))

    # Atelectasis.
    s = st["Atelectasis"]
    where = "bibasilar" if len(f.atel_sides) == 2 else f"{SIDE_WORD[f.atel_sides[0]]} basilar"
    base = "bases" if len(f.atel_sides) == 2 else f"{SIDE_WORD[f.atel_sides[0]]} base"
    if s == 1.0:
        fnd.append(_pick(rng, [
            f"Linear opacity at the {base} compatible with {where} atelectasis.",
            f"Plate-like atelectasis in the {where} lung with mild elevation of the "
            f"{'hemidiaphragms' if len(f.atel_sides) == 2 else 'hemidiaphragm'}.",
            f"{_cap(where)} atelectasis.",
        ]))
        imp.append(_pick(rng, [f"{_cap(where)} atelectasis.",
                               f"Plate-like atelectasis at the {base}.",
                               f"Atelectasis at the {base}."]))
    elif s == -1.0:
        fnd.append(f"Streaky opacity at the {base} may represent atelectasis.")
        imp.append(_pick(rng, [f"Possible {where} atelectasis.",
                               f"Streaky {where} opacity may represent atelectasis."]))
    elif s == 0.0:
        neg.append(_pick(rng, ["No atelectasis.", "No evidence of atelectasis."]))

    # Lung opacity on its own, lung lesion.
    if st["Lung Opacity"] == 1.0 and not any(
            _is_set(st[k]) for k in ("Consolidation", "Edema", "Atelectasis")):
        where = SIDE_WORD[f.opacity_side]
        fnd.append(f"Patchy opacity in the {where} mid lung.")
        imp.append(f"Patchy {where} mid lung opacity.")
    s = st["Lung Lesion"]
    if s == 1.0:
        fnd.append(f"A {f.nodule_mm} mm nodule projects over the {SIDE_WORD[f.nodule_side]} "
                   "upper lung.")
        imp.append(f"{f.nodule_mm} mm {SIDE_WORD[f.nodule_side]} pulmonary nodule; recommend "
                   "CT for further evaluation.")
    elif s == -1.0:
        fnd.append(f"Possible nodule in the {SIDE_WORD[f.nodule_side]} upper lung.")
        imp.append("Possible pulmonary nodule; recommend CT for further evaluation.")
    elif s == 0.0:
        neg.append("No suspicious pulmonary nodule.")

    # Pleura: effusion, pneumothorax, other.
    s = st["Pleural Effusion"]
    side = _sides_word(f.eff_sides)
    size = f.eff_size
    plural = "s" if len(f.eff_sides) == 2 else ""
    angle = "angles" if plural else "angle"
    ptx = st["Pneumothorax"]
    if s == 1.0:
        fnd.append(_pick(rng, [
            (f"There are {size} bilateral pleural effusions." if plural
             else f"There is a {size} {side} pleural effusion."),
            f"{_cap(size)} {side} pleural effusion{plural} with layering fluid blunting the "
            f"costophrenic {angle}.",
            f"Blunting of the {side} costophrenic {angle} reflects {size} pleural "
            f"effusion{plural}.",
        ]))
        imp.append(_pick(rng, [
            f"{_cap(size)} {side} pleural effusion{plural}.",
            f"{_cap(side)} layering fluid compatible with {size} pleural effusion{plural}.",
            f"{_cap(size)} {side} effusion{plural}.",
        ]))
    elif s == -1.0:
        fnd.append(_pick(rng, [
            f"Blunting of the {side} costophrenic {angle} may represent a small effusion.",
            f"Possible small {side} pleural effusion{plural}.",
        ]))
        imp.append(_pick(rng, [f"Possible small {side} pleural effusion{plural}.",
                               f"Cannot exclude a small {side} pleural effusion."]))
    elif s == 0.0:
        if ptx == 0.0 and rng.random() < 0.6:
            neg.append("No pleural effusion or pneumothorax.")
            ptx = NAN  # already said
        else:
            neg.append(_pick(rng, ["No pleural effusion.", "There is no pleural effusion.",
                                   "No effusion is seen."]))
    if ptx == 1.0:
        fnd.append(f"Small {SIDE_WORD[f.ptx_side]} apical pneumothorax.")
        imp.append(f"Small {SIDE_WORD[f.ptx_side]} apical pneumothorax.")
    elif ptx == -1.0:
        fnd.append(f"Possible tiny {SIDE_WORD[f.ptx_side]} apical pneumothorax.")
        imp.append(f"Possible tiny {SIDE_WORD[f.ptx_side]} apical pneumothorax.")
    elif ptx == 0.0:
        neg.append(_pick(rng, ["No pneumothorax.", "There is no pneumothorax."]))
    if st["Pleural Other"] == 1.0:
        fnd.append(f"Mild {SIDE_WORD[f.pleural_other_side]} apical pleural thickening.")
        imp.append(f"{SIDE_WORD[f.pleural_other_side].title()} apical pleural thickening.")

    # Heart and mediastinum.
    s = st["Cardiomegaly"]
    deg = f.card_degree
    adverb = {"mild": "mildly", "moderate": "moderately", "marked": "markedly"}[deg]
    if s == 1.0:
        fnd.append(_pick(rng, [f"The heart is {adverb} enlarged.",
                               f"There is {deg} cardiomegaly.",
                               "The cardiac silhouette is enlarged."]))
        imp.append(_pick(rng, [f"{_cap(deg)} cardiomegaly.",
                               "Enlarged cardiac silhouette, consistent with cardiomegaly.",
                               "Cardiomegaly.",
                               f"{_cap(adverb)} enlarged cardiac silhouette."]))
    elif s == -1.0:
        fnd.append(_pick(rng, ["Possible mild cardiomegaly.",
                               "Cardiomegaly cannot be excluded given the AP technique."]))
        imp.append(_pick(rng, ["Possible mild cardiomegaly.",
                               "Cannot exclude mild cardiomegaly."]))
    elif s == 0.0:
        neg.append(_pick(rng, ["Heart size is normal.", "The heart is normal in size.",
                               "No cardiomegaly."]))
    s = st["Enlarged Cardiomediastinum"]
    if s == 1.0:
        fnd.append("The mediastinum is widened.")
        imp.append("Widened mediastinum; enlarged cardiomediastinal silhouette.")
    elif s == -1.0:
        fnd.append("Possible mediastinal widening, may represent vascular engorgement.")
        imp.append("Possible mediastinal widening.")
    elif s == 0.0:
        if _is_set(st["Cardiomegaly"]):
            neg.append("The mediastinal contours are normal.")
        else:
            neg.append(_pick(rng, ["The cardiomediastinal silhouette is normal.",
                                   "Normal cardiomediastinal silhouette.",
                                   "The mediastinal contours are normal."]))

    # Bones.
    s = st["Fracture"]
    if s == 1.0:
        n = _pick(rng, ["fifth", "sixth", "seventh", "eighth"])
        fnd.append(f"Healing fracture of the {SIDE_WORD[f.fracture_side]} {n} rib.")
        imp.append(f"Healing {SIDE_WORD[f.fracture_side]} {n} rib fracture.")
    elif s == 0.0:
        neg.append("No displaced rib fracture.")
    return fnd, imp, neg


_INDICATIONS = [
    "___ year old woman with cough  // eval for acute process",
    "___ year old man with shortness of breath  // eval",
    "___ with fever and cough.",
    "___-year-old female with chest pain.",
    "___ year old woman with hypoxia  // interval change",
    "Preoperative evaluation.",
    "___M with dyspnea on exertion.",
    "___F s/p fall, chest pain.",
]
_FILLERS = [
    "Lung volumes are low.",
    "Degenerative changes are noted in the thoracic spine.",
    "The hila are unremarkable.",
    "Surgical clips project over the upper abdomen.",
    "Lung volumes are normal.",
    "The visualized upper abdomen is unremarkable.",
]
_NORMAL_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
]


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, width=76, initial_indent=" ", subsequent_indent=" ") or [" "]


_INLINE_SECTIONS = ("EXAMINATION", "INDICATION", "HISTORY", "TECHNIQUE", "COMPARISON")


def _section(name: str, text: str, rng: np.random.Generator) -> list[str]:
    """One section: short header sections mostly inline, findings/impression mostly blocks."""
    p_inline = 0.85 if name in _INLINE_SECTIONS else (0.25 if len(text) < 100 else 0.0)
    if rng.random() < p_inline:
        return [*_wrap(f"{name}:  {text}"), " "]
    return [f" {name}: ", " ", *_wrap(text), " "]


def _write_report(rng: np.random.Generator, f: _Findings, procedure: str) -> str:
    """A report shaped like MIMIC-CXR's, mentioning every set label with varied wording."""
    fnd, imp, neg = _label_sentences(rng, f)
    order = rng.permutation(len(neg)).tolist()
    neg = [neg[i] for i in order]
    fillers = [_pick(rng, _FILLERS) for _ in range(int(rng.integers(0, 3)))]
    findings_text = " ".join(fillers + fnd + neg) or "The lungs are well expanded."
    if not imp:
        imp = [_pick(rng, _NORMAL_IMPRESSIONS)]
    comp_negs = [s for s in neg if any(w in s.lower() for w in (
        "effusion", "consolidation", "edema", "atelectasis", "cardiomegaly", "heart size"))]
    if comp_negs and rng.random() < 0.35:
        imp = imp + comp_negs[:2]
    fmt = _pick(rng, ["standard"] * 11 + ["impression_first"] + ["findings_only"] * 3
                + ["combined"] * 2 + ["impression_only"] * 2 + ["no_headers"])
    if fmt == "impression_only":  # the only section must carry every negation too
        imp = imp + [n for n in neg if n not in imp]
    impression_text = " ".join(imp)
    lines = [" " * 33 + "FINAL REPORT"]
    if fmt == "no_headers":
        lines += [*_wrap(f"{procedure.title()} radiograph. " + _pick(rng, _INDICATIONS)), " "]
        lines += [*_wrap(findings_text), " "]
        lines += _wrap(impression_text)
        return "\n".join(lines) + "\n"
    lines += _section("EXAMINATION", procedure, rng)
    lines += _section(_pick(rng, ["INDICATION", "INDICATION", "HISTORY"]),
                      _pick(rng, _INDICATIONS), rng)
    if rng.random() < 0.5:
        portable = "PORTABLE" in procedure
        lines += _section("TECHNIQUE", _pick(rng, [
            "Portable AP chest radiograph", "Single frontal view of the chest"] if portable else [
            "Chest PA and lateral", "PA and lateral views of the chest"]), rng)
    lines += _section("COMPARISON", _pick(rng, ["___", "___.", "None.",
                                                "Chest radiograph from ___."]), rng)
    impression_name = "CONCLUSION" if rng.random() < 0.1 else "IMPRESSION"
    if fmt == "standard":
        lines += _section("FINDINGS", findings_text, rng)
        lines += _section(impression_name, impression_text, rng)
    elif fmt == "impression_first":
        lines += _section(impression_name, impression_text, rng)
        lines += _section("FINDINGS", findings_text, rng)
    elif fmt == "findings_only":
        lines += _section("FINDINGS", findings_text, rng)
    elif fmt == "combined":
        lines += _section("FINDINGS AND IMPRESSION", f"{findings_text} {impression_text}", rng)
    else:
        lines += _section(impression_name, impression_text, rng)
    if fmt != "findings_only" and rng.random() < 0.08:
        lines += _section("ADDENDUM", _pick(rng, [
            "Findings were discussed with Dr. ___ by telephone at ___ on ___.",
            "The study was reviewed with the attending radiologist, Dr. ___.",
        ]), rng)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n"


_EMPTY_REPORT = " " * 33 + "FINAL REPORT\n ___\n \n ___ ___\n \n ___\n"


# --------------------------------------------------------------------------------------------
# Encodings and file writing
# --------------------------------------------------------------------------------------------


def _available_compressions() -> dict[str, tuple[str, str]]:
    """Which lossless syntaxes this install can encode: name -> (uid, plugin)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        from pydicom.pixels import get_encoder
    except ImportError:  # pragma: no cover - pydicom < 3
        return out
    for name, uid, prefer in (("rle", _UID_RLE, ("pylibjpeg", "pydicom")),
                              ("j2k", _UID_J2K_LOSSLESS, ("pylibjpeg",))):
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


def _draw_encodings(rng: np.random.Generator, n: int, compress: dict) -> list[dict]:
    """Per-image DICOM encoding choices, stratified so small runs still cover each variant."""
    phot = _stratified(rng, n, ["MONOCHROME2", "MONOCHROME1"], [0.82, 0.18])
    bits = _stratified(rng, n, [12, 15, 16], [0.6, 0.2, 0.2])
    signed = _stratified(rng, n, [0, 1], [0.92, 0.08])
    rescale = _stratified(rng, n, [None, (1.0, -1024.0), (0.5, 0.0)], [0.6, 0.25, 0.15])
    window = _stratified(rng, n, [True, False], [0.85, 0.15])
    ts_names = ["none"] + [k for k in ("rle", "j2k") if k in compress]
    ts_probs = {"none": 0.85, "rle": 0.1, "j2k": 0.05}
    probs = [ts_probs[k] for k in ts_names]
    probs = [p / sum(probs) for p in probs]
    ts = _stratified(rng, n, ts_names, probs)
    sop = _stratified(rng, n, ["DX", "CR", "OT"], [0.5, 0.35, 0.15])
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


def _image_size(rng: np.random.Generator, long_side: tuple[int, int], orient: str):
    long = int(rng.integers(long_side[0], long_side[1] + 1))
    ratio = rng.uniform(0.75, 0.94) if orient == "portrait" else rng.uniform(1.06, 1.33)
    if orient == "square":
        ratio = rng.uniform(0.95, 1.05)
    if ratio < 1:
        return long, max(8, round(long * ratio))  # rows, cols
    return max(8, round(long / ratio)), long


def _ds_number(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _encode_dicom(disp: np.ndarray, meta: dict, enc: dict, compress: dict) -> tuple[bytes, str]:
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
    fm.TransferSyntaxUID = _UID_EXPLICIT_LE
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
    ts = _UID_EXPLICIT_LE
    if enc["ts"] != "none" and enc["ts"] in compress:
        uid, plugin = compress[enc["ts"]]
        try:
            ds.compress(uid, arr, encoding_plugin=plugin, generate_instance_uid=False)
            ts = uid
        except Exception:  # an encoder that refuses this image: keep it uncompressed
            ds.file_meta.TransferSyntaxUID = _UID_EXPLICIT_LE
    if ts == _UID_EXPLICIT_LE:
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OW"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), ts


def _jpeg_bytes(disp: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.rint(disp * 255.0).astype(np.uint8), mode="L").save(
        buf, format="JPEG", quality=95)
    return buf.getvalue()


def _render_image(seed: int, img: _Image) -> np.ndarray:
    rng = np.random.default_rng([seed, *img.key])
    if img.frontal:
        return render_frontal(rng, img.rows, img.cols, img.signs or StudySigns(), seed)
    return render_lateral(rng, img.rows, img.cols, seed)


def _write_mimic_image(task: tuple) -> tuple[str, str]:
    """Render one image, write its DICOM and JPG twin (or its deliberate breakage)."""
    seed, img, meta, compress = task
    path: Path = img.path
    if img.bad == "not_dicom":
        path.with_suffix(".dcm").write_bytes(
            b"This is not a DICOM file: the transfer from the PACS failed.\n" * 4)
        path.with_suffix(".jpg").write_bytes(b"<html><body>404 Not Found</body></html>\n")
        return img.dicom_id, "not_dicom"
    disp = _render_image(seed, img)
    dcm, ts = _encode_dicom(disp, meta, img.encoding, compress)
    jpg = _jpeg_bytes(disp)
    if img.bad == "truncated_dicom":
        pixel_bytes = img.rows * img.cols * 2
        dcm = dcm[: len(dcm) - pixel_bytes + int(pixel_bytes * 0.4)]
        jpg = jpg[: int(len(jpg) * 0.4)]
    path.with_suffix(".dcm").write_bytes(dcm)
    path.with_suffix(".jpg").write_bytes(jpg)
    return img.dicom_id, ts


def _write_chexpert_image(task: tuple) -> tuple[str, str]:
    seed, key, rows, cols, signs, path = task
    rng = np.random.default_rng([seed, *key])
    disp = render_frontal(rng, rows, cols, signs, seed)
    path.write_bytes(_jpeg_bytes(disp))
    return str(path), "jpg"


def _write_gz_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """gzip without name or mtime in its header, so reruns are byte-identical."""
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow(["" if isinstance(x, float) and math.isnan(x) else x for x in row])
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                               mtime=0) as gz:
        gz.write(text.getvalue().encode("utf-8"))


def _progress(it: Iterable, total: int, desc: str) -> Iterator:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        yield from it
        return
    yield from tqdm(it, total=total, desc=desc, unit="img", leave=False)


def _run_tasks(func, tasks: list, desc: str, workers: int) -> list:
    """Map ``func`` over tasks, in worker processes for big runs; output is order-free."""
    if workers <= 1 or len(tasks) < 64:
        return list(_progress(map(func, tasks), len(tasks), desc))
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(_progress(pool.map(func, tasks, chunksize=8), len(tasks), desc))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, 8))


def _plan_mimic(rng: np.random.Generator, outdir: Path, n_studies: int,
                long_side: tuple[int, int], compress: dict) -> list[_Study]:
    """Subjects, studies, labels, reports, images and encodings: everything but the pixels."""
    n_subjects = max(3, round(n_studies / 2.2))
    subject_ids = _unique_ints(rng, n_subjects, 10_000_000, 20_000_000)
    # Split by subject, so a subject never spans splits.
    subject_split = dict(zip(subject_ids, _stratified(
        rng, n_subjects, ["train", "validate", "test"], [0.8, 0.1, 0.1]), strict=True))
    owners = list(subject_ids) + [
        subject_ids[int(i)] for i in rng.integers(0, n_subjects, n_studies - n_subjects)]
    owners = [owners[i] for i in rng.permutation(len(owners))]
    study_ids = _unique_ints(rng, n_studies, 50_000_000, 60_000_000)
    train_idx = [i for i, s in enumerate(owners) if subject_split[s] == "train"]
    if len(train_idx) < len(BAD_KINDS):
        raise ValueError("too few train studies for the bad records; raise n_studies")
    bad_study = {int(i): kind for i, kind in zip(
        rng.choice(train_idx, size=len(BAD_KINDS), replace=False), BAD_KINDS, strict=True)}

    studies: list[_Study] = []
    for i in range(n_studies):
        subject, study_id = owners[i], study_ids[i]
        kind = bad_study.get(i)
        f = _draw_findings(rng)
        # Bad records are plain single-frontal studies, so they reach the selected rows.
        n_frontal = 1 if kind else (2 if rng.random() < 0.05 else 1)
        lateral = (not kind) and rng.random() < 0.25
        date = (f"{int(rng.integers(2110, 2210))}{int(rng.integers(1, 13)):02d}"
                f"{int(rng.integers(1, 29)):02d}")
        time = (f"{int(rng.integers(0, 24)):02d}{int(rng.integers(0, 60)):02d}"
                f"{int(rng.integers(0, 60)):02d}.{int(rng.integers(0, 1000)):03d}")
        portable = rng.random() < 0.45
        procedure = "CHEST (PORTABLE AP)" if portable else (
            "CHEST (PA AND LAT)" if lateral or rng.random() < 0.8 else "CHEST (PRE-OP PA AND LAT)")
        if kind == "empty_report":
            f.state = {name: NAN for name in LABELS}
        report = _EMPTY_REPORT if kind == "empty_report" else _write_report(rng, f, procedure)
        signs = _signs_for(f, rng)
        st = _Study(subject, study_id, subject_split[subject], _with_no_finding(f.state), signs,
                    None if kind == "missing_report" else report, date, time, procedure,
                    bad=kind)
        base = outdir / "mimic" / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study_id}"
        for j in range(n_frontal + int(lateral)):
            is_front = j < n_frontal
            did = _dicom_id(rng)
            view = ("AP" if portable else "PA") if is_front else "LATERAL"
            st.images.append(_Image(
                key=(1, i, j), dicom_id=did, view=view, frontal=is_front, rows=0, cols=0,
                path=base / did, signs=signs if is_front else None, encoding={}, bad=None))
        if kind in ("truncated_dicom", "not_dicom"):
            st.images[0].bad = kind
        studies.append(st)

    images = [im for st in studies for im in st.images]
    # Blank ViewPosition on ~3 % of ordinary frontal images (as in real MIMIC-CXR).
    frontal_ok = [im for im in images if im.frontal and im.key[1] not in bad_study]
    blanks = _stratified(rng, len(frontal_ok), [False, True], [0.97, 0.03])
    for im, blank in zip(frontal_ok, blanks, strict=True):
        if blank:
            im.view = ""
    orients = _stratified(rng, len(images), ["portrait", "landscape", "square"], [0.6, 0.3, 0.1])
    encodings = _draw_encodings(rng, len(images), compress)
    for im, orient, enc in zip(images, orients, encodings, strict=True):
        im.rows, im.cols = _image_size(rng, long_side, orient)
        im.encoding = {**enc, "ts": "none"} if im.bad == "truncated_dicom" else enc
    for st in studies:
        st.uids = (_uid(rng), _uid(rng), [_uid(rng) for _ in st.images])
    return studies


def _write_mimic(studies: list[_Study], outdir: Path, seed: int, compress: dict,
                 workers: int) -> Counter:
    """Reports, images (DICOM + JPG twins) and the three gzipped CSVs; returns syntax counts."""
    tasks = []
    for st in studies:
        study_uid, series_uid, sop_uids = st.uids
        st.images[0].path.parent.mkdir(parents=True, exist_ok=True)
        if st.report is not None:
            st.images[0].path.parent.with_suffix(".txt").write_text(st.report, encoding="utf-8")
        for n, (im, sop_uid) in enumerate(zip(st.images, sop_uids, strict=True), start=1):
            meta = {"sop_uid": sop_uid, "study_uid": study_uid, "series_uid": series_uid,
                    "subject_id": st.subject_id, "study_id": st.study_id, "date": st.date,
                    "time": st.time, "view": im.view, "procedure": st.procedure,
                    "instance": n}
            tasks.append((seed, im, meta, compress))
    results = _run_tasks(_write_mimic_image, tasks, "demo MIMIC images", workers)

    split_rows, meta_rows, label_rows = [], [], []
    for st in sorted(studies, key=lambda s: (s.subject_id, s.study_id)):
        label_rows.append([st.subject_id, st.study_id, *[st.labels[k] for k in LABELS]])
        for im in sorted(st.images, key=lambda x: x.dicom_id):
            split_rows.append([im.dicom_id, st.study_id, st.subject_id, st.split])
            view_meaning = {"PA": "postero-anterior", "AP": "antero-posterior",
                            "LATERAL": "lateral", "": ""}[im.view]
            orient = "" if im.view == "" else ("Recumbent" if im.view == "AP" else "Erect")
            # The real table stores StudyTime as a float (no leading zeros).
            meta_rows.append([im.dicom_id, st.subject_id, st.study_id, st.procedure, im.view,
                              im.rows, im.cols, st.date, repr(float(st.time)), st.procedure,
                              view_meaning, orient])
    mimic = outdir / "mimic"
    _write_gz_csv(mimic / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_COLUMNS, split_rows)
    _write_gz_csv(mimic / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_COLUMNS, meta_rows)
    _write_gz_csv(mimic / "mimic-cxr-2.0.0-chexpert.csv.gz", CHEXPERT_COLUMNS, label_rows)
    return Counter(ts for _, ts in results)


def _write_chexpert(outdir: Path, n: int, seed: int, long_side: tuple[int, int],
                    workers: int) -> None:
    """CheXpert-test-shaped eval set: independent 0/1 labels, same image generator, JPG only."""
    crng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    patients = _unique_ints(crng, n, 64541, 64541 + max(1000, 3 * n))
    rows_out, tasks = [], []
    for k, patient in enumerate(patients):
        f = _draw_findings(crng, competition_only_binary=True)
        f.state = {name: (1.0 if f.state[name] == 1.0 else NAN) for name in LABELS}
        labels = _with_no_finding(f.state)
        study = f"test/patient{patient}/study1"
        rows, cols = _image_size(crng, long_side,
                                 _pick(crng, ["portrait", "portrait", "landscape", "square"]))
        path = outdir / "chexpert" / "CheXpert-v1.0" / study / "view1_frontal.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows_out.append([study, *[int(labels[name] == 1.0) for name in LABELS]])
        tasks.append((seed, (3, k), rows, cols, _signs_for(f, crng), path))
    _run_tasks(_write_chexpert_image, tasks, "demo CheXpert images", workers)
    gt = outdir / "chexpert" / "groundtruth.csv"
    gt.parent.mkdir(parents=True, exist_ok=True)
    with gt.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(GROUNDTRUTH_COLUMNS)
        w.writerows(rows_out)


def make_demo_dataset(
    outdir: Path,
    n_studies: int = 2000,
    n_chexpert: int = 300,
    seed: int = 0,
    image_long_side: tuple[int, int] = (384, 640),
    workers: int | None = None,
) -> dict:
    """Write a synthetic MIMIC-CXR + CheXpert-test set under ``outdir``; return a summary.

    Why: the pipeline's demo and tests run the real code paths (DICOM variety, broken files,
    report sections) on data anyone may have, with labels a tiny model can actually learn.
    Writes ``outdir/mimic/`` (files tree, split/metadata/chexpert ``.csv.gz``) and
    ``outdir/chexpert/`` (``groundtruth.csv``, ``CheXpert-v1.0/test/...``). ``workers``
    (default: usable CPUs, at most 8) changes speed only, never bytes: every image has its
    own seeded rng. Worker processes are spawned, so a calling script needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    if n_studies < 10:
        raise ValueError(f"n_studies must be >= 10 (got {n_studies}): the bad records need room")
    if n_chexpert < 0:
        raise ValueError(f"n_chexpert must be >= 0 (got {n_chexpert})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (got {seed})")
    lo_side, hi_side = int(image_long_side[0]), int(image_long_side[1])
    if not 16 <= lo_side <= hi_side:
        raise ValueError(f"image_long_side must be (min, max) with 16 <= min <= max, "
                         f"got {image_long_side}")
    outdir = Path(outdir)
    workers = _default_workers() if workers is None else workers
    compress = _available_compressions()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))

    studies = _plan_mimic(rng, outdir, n_studies, (lo_side, hi_side), compress)
    ts_counts = _write_mimic(studies, outdir, seed, compress, workers)
    _write_chexpert(outdir, n_chexpert, seed, (lo_side, hi_side), workers)

    images = [im for st in studies for im in st.images]
    bad: dict[str, list[str]] = {k: [] for k in BAD_KINDS}
    for st in sorted(studies, key=lambda s: (s.subject_id, s.study_id)):
        if st.bad in ("truncated_dicom", "not_dicom"):
            bad[st.bad].append(st.images[0].dicom_id)
        elif st.bad:
            bad[st.bad].append(str(st.study_id))
    ts_names = {_UID_EXPLICIT_LE: "ExplicitVRLittleEndian", _UID_RLE: "RLELossless",
                _UID_J2K_LOSSLESS: "JPEG2000Lossless", "not_dicom": "not_dicom"}
    return {
        "outdir": str(outdir),
        "seed": seed,
        "subjects": len({st.subject_id for st in studies}),
        "studies": n_studies,
        "reports": sum(st.report is not None for st in studies),
        "images": len(images),
        "frontal_images": sum(im.frontal for im in images),
        "lateral_images": sum(not im.frontal for im in images),
        "blank_view_images": sum(im.view == "" for im in images),
        "splits": dict(sorted(Counter(st.split for st in studies).items())),
        "transfer_syntaxes": {ts_names.get(k, k): v for k, v in sorted(ts_counts.items())},
        "chexpert_studies": n_chexpert,
        "bad_records": {k: len(v) for k, v in bad.items()},
        "bad_ids": bad,
    }
