"""Phantom anatomy: chest-like frontal and lateral films with visible signs per finding.

Why: the demo's zero-shot scorecard must be able to move, so each competition label has a
clear, learnable sign on the film (a wide heart, a fluid meniscus, a lobar opacity, ...).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

RIGHT, LEFT = -1, 1  # patient's right lung is on the image's left (negative u)


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
    decoder (window or min-max) recover the same picture (see ``encode_dicom``).
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
