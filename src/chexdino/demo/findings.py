"""Label states of a synthetic study, and the attributes its film and its report share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chexdino import COMPETITION_LABELS, LABELS
from chexdino.demo.draws import pick
from chexdino.demo.phantom import LEFT, RIGHT, StudySigns

NAN = float("nan")


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


def is_set(state: float) -> bool:
    return state == 1.0 or state == -1.0


@dataclass
class Findings:
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


def draw_findings(rng: np.random.Generator, competition_only_binary: bool = False) -> Findings:
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
    f = Findings(state=st)
    f.eff_sides = pick(rng, [(RIGHT,), (LEFT,), (RIGHT, LEFT), (RIGHT, LEFT)])
    f.eff_size = pick(rng, ["small", "small", "moderate", "large"])
    f.cons_side = pick(rng, [RIGHT, LEFT])
    f.cons_zone = pick(rng, ["upper", "mid"])
    f.atel_sides = pick(rng, [(RIGHT,), (LEFT,), (RIGHT, LEFT)])
    f.card_degree = pick(rng, ["mild", "mild", "moderate", "marked"])
    f.edema_degree = pick(rng, ["mild", "moderate", "moderate"])
    f.device = pick(rng, ["ett", "cvc", "ngt", "pacer"])
    f.ptx_side = pick(rng, [RIGHT, LEFT])
    f.nodule_side = pick(rng, [RIGHT, LEFT])
    f.nodule_mm = int(rng.integers(5, 19))
    f.pleural_other_side = pick(rng, [RIGHT, LEFT])
    f.opacity_side = pick(rng, [RIGHT, LEFT])
    f.fracture_side = pick(rng, [RIGHT, LEFT])
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


def signs_for(f: Findings, rng: np.random.Generator) -> StudySigns:
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


def with_no_finding(state: dict[str, float]) -> dict[str, float]:
    out = dict(state)
    others = [out[k] for k in LABELS if k != "No Finding"]
    out["No Finding"] = 1.0 if 1.0 not in others else NAN
    return out
