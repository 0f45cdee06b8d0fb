"""Report prose: MIMIC-CXR-style free-text reports that agree with the drawn findings.

Sections, headers and de-identification marks vary the way real reports do (inline or
block sections, CONCLUSION instead of IMPRESSION, addenda, reports without an impression).
"""

from __future__ import annotations

import textwrap

import numpy as np

from chexdino.demo.draws import pick
from chexdino.demo.findings import NAN, Findings, is_set
from chexdino.demo.phantom import LEFT, RIGHT

SIDE_WORD = {RIGHT: "right", LEFT: "left"}


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


def _label_sentences(rng: np.random.Generator, f: Findings) -> tuple[list, list, list]:
    """(findings sentences, impression sentences, negation sentences) for the label states."""
    st = f.state
    fnd: list[str] = []
    imp: list[str] = []
    neg: list[str] = []
    lungs_busy = any(is_set(st[k]) for k in (
        "Edema", "Atelectasis", "Lung Opacity", "Lung Lesion", "Consolidation"))

    # Support devices first, as radiologists do.
    if st["Support Devices"] == 1.0:
        long, short = _DEVICE[f.device]
        fnd.append(long.format(n=int(rng.integers(3, 6))))
        imp.append(short)

    # Consolidation (+ pneumonia).
    s = st["Consolidation"]
    lobe = pick(rng, _LOBE[(f.cons_side, f.cons_zone)])
    pn = st["Pneumonia"]
    if s == 1.0:
        fnd.append(pick(rng, [
            f"There is a focal consolidation in the {lobe}.",
            f"Dense airspace consolidation is present in the {lobe}.",
            f"New opacity in the {lobe} consistent with consolidation.",
        ]))
        tail = {1.0: ", consistent with pneumonia", -1.0: ", concerning for pneumonia"}.get(pn, "")
        if pn == -1.0 and rng.random() < 0.5:
            tail = "; pneumonia cannot be excluded"
        imp.append(pick(rng, [
            f"{_cap(lobe)} consolidation{tail}.",
            f"Airspace consolidation in the {lobe}{tail}.",
            f"Focal {lobe} consolidation{tail}.",
        ]))
    elif s == -1.0:
        fnd.append(pick(rng, [
            f"Hazy opacity in the {lobe}; cannot exclude early consolidation.",
            f"Subtle opacity in the {lobe} may represent consolidation.",
        ]))
        tail = ", possibly pneumonia" if pn == -1.0 else ""
        imp.append(pick(rng, [
            f"Possible early consolidation in the {lobe}{tail}.",
            f"Cannot exclude early consolidation in the {lobe}{tail}.",
            f"Opacity in the {lobe} may represent consolidation{tail}.",
        ]))
    if pn == 1.0:
        fnd.append("Findings are consistent with pneumonia.")
    elif pn == -1.0:
        fnd.append("Pneumonia cannot be excluded.")
    if s == 0.0:
        neg.append(pick(rng, ["No focal consolidation.", "There is no focal consolidation.",
                               "No consolidation is seen."]
                         + ([] if lungs_busy else ["The lungs are clear without consolidation."])))
    if pn == 0.0:
        neg.append("No evidence of pneumonia.")

    # Edema.
    s = st["Edema"]
    deg = f.edema_degree
    if s == 1.0:
        fnd.append(pick(rng, [
            f"There is {deg} pulmonary edema with perihilar haziness.",
            f"Increased interstitial markings and perihilar opacity consistent with {deg} "
            "interstitial edema.",
            "Pulmonary vascular congestion with perihilar haziness, consistent with pulmonary "
            "edema.",
        ]))
        imp.append(pick(rng, [
            f"{_cap(deg)} pulmonary edema.",
            "Pulmonary vascular congestion and interstitial edema.",
            f"Findings consistent with {deg} pulmonary edema.",
            f"{_cap(deg)} interstitial edema, likely fluid overload.",
        ]))
    elif s == -1.0:
        fnd.append(pick(rng, ["Perihilar haziness may represent mild pulmonary edema.",
                               "Possible mild interstitial edema."]))
        imp.append(pick(rng, ["Possible mild pulmonary edema.",
                               "Cannot exclude mild pulmonary edema.",
                               "Perihilar haziness may represent mild edema."]))
    elif s == 0.0:
        neg.append(pick(rng, ["No pulmonary edema.", "No pulmonary vascular congestion or edema.",
                               "There is no edema."]))

    # Atelectasis.
    s = st["Atelectasis"]
    where = "bibasilar" if len(f.atel_sides) == 2 else f"{SIDE_WORD[f.atel_sides[0]]} basilar"
    base = "bases" if len(f.atel_sides) == 2 else f"{SIDE_WORD[f.atel_sides[0]]} base"
    if s == 1.0:
        fnd.append(pick(rng, [
            f"Linear opacity at the {base} compatible with {where} atelectasis.",
            f"Plate-like atelectasis in the {where} lung with mild elevation of the "
            f"{'hemidiaphragms' if len(f.atel_sides) == 2 else 'hemidiaphragm'}.",
            f"{_cap(where)} atelectasis.",
        ]))
        imp.append(pick(rng, [f"{_cap(where)} atelectasis.",
                               f"Plate-like atelectasis at the {base}.",
                               f"Atelectasis at the {base}."]))
    elif s == -1.0:
        fnd.append(f"Streaky opacity at the {base} may represent atelectasis.")
        imp.append(pick(rng, [f"Possible {where} atelectasis.",
                               f"Streaky {where} opacity may represent atelectasis."]))
    elif s == 0.0:
        neg.append(pick(rng, ["No atelectasis.", "No evidence of atelectasis."]))

    # Lung opacity on its own, lung lesion.
    if st["Lung Opacity"] == 1.0 and not any(
            is_set(st[k]) for k in ("Consolidation", "Edema", "Atelectasis")):
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
        fnd.append(pick(rng, [
            (f"There are {size} bilateral pleural effusions." if plural
             else f"There is a {size} {side} pleural effusion."),
            f"{_cap(size)} {side} pleural effusion{plural} with layering fluid blunting the "
            f"costophrenic {angle}.",
            f"Blunting of the {side} costophrenic {angle} reflects {size} pleural "
            f"effusion{plural}.",
        ]))
        imp.append(pick(rng, [
            f"{_cap(size)} {side} pleural effusion{plural}.",
            f"{_cap(side)} layering fluid compatible with {size} pleural effusion{plural}.",
            f"{_cap(size)} {side} effusion{plural}.",
        ]))
    elif s == -1.0:
        fnd.append(pick(rng, [
            f"Blunting of the {side} costophrenic {angle} may represent a small effusion.",
            f"Possible small {side} pleural effusion{plural}.",
        ]))
        imp.append(pick(rng, [f"Possible small {side} pleural effusion{plural}.",
                               f"Cannot exclude a small {side} pleural effusion."]))
    elif s == 0.0:
        if ptx == 0.0 and rng.random() < 0.6:
            neg.append("No pleural effusion or pneumothorax.")
            ptx = NAN  # already said
        else:
            neg.append(pick(rng, ["No pleural effusion.", "There is no pleural effusion.",
                                   "No effusion is seen."]))
    if ptx == 1.0:
        fnd.append(f"Small {SIDE_WORD[f.ptx_side]} apical pneumothorax.")
        imp.append(f"Small {SIDE_WORD[f.ptx_side]} apical pneumothorax.")
    elif ptx == -1.0:
        fnd.append(f"Possible tiny {SIDE_WORD[f.ptx_side]} apical pneumothorax.")
        imp.append(f"Possible tiny {SIDE_WORD[f.ptx_side]} apical pneumothorax.")
    elif ptx == 0.0:
        neg.append(pick(rng, ["No pneumothorax.", "There is no pneumothorax."]))
    if st["Pleural Other"] == 1.0:
        fnd.append(f"Mild {SIDE_WORD[f.pleural_other_side]} apical pleural thickening.")
        imp.append(f"{SIDE_WORD[f.pleural_other_side].title()} apical pleural thickening.")

    # Heart and mediastinum.
    s = st["Cardiomegaly"]
    deg = f.card_degree
    adverb = {"mild": "mildly", "moderate": "moderately", "marked": "markedly"}[deg]
    if s == 1.0:
        fnd.append(pick(rng, [f"The heart is {adverb} enlarged.",
                               f"There is {deg} cardiomegaly.",
                               "The cardiac silhouette is enlarged."]))
        imp.append(pick(rng, [f"{_cap(deg)} cardiomegaly.",
                               "Enlarged cardiac silhouette, consistent with cardiomegaly.",
                               "Cardiomegaly.",
                               f"{_cap(adverb)} enlarged cardiac silhouette."]))
    elif s == -1.0:
        fnd.append(pick(rng, ["Possible mild cardiomegaly.",
                               "Cardiomegaly cannot be excluded given the AP technique."]))
        imp.append(pick(rng, ["Possible mild cardiomegaly.",
                               "Cannot exclude mild cardiomegaly."]))
    elif s == 0.0:
        neg.append(pick(rng, ["Heart size is normal.", "The heart is normal in size.",
                               "No cardiomegaly."]))
    s = st["Enlarged Cardiomediastinum"]
    if s == 1.0:
        fnd.append("The mediastinum is widened.")
        imp.append("Widened mediastinum; enlarged cardiomediastinal silhouette.")
    elif s == -1.0:
        fnd.append("Possible mediastinal widening, may represent vascular engorgement.")
        imp.append("Possible mediastinal widening.")
    elif s == 0.0:
        if is_set(st["Cardiomegaly"]):
            neg.append("The mediastinal contours are normal.")
        else:
            neg.append(pick(rng, ["The cardiomediastinal silhouette is normal.",
                                   "Normal cardiomediastinal silhouette.",
                                   "The mediastinal contours are normal."]))

    # Bones.
    s = st["Fracture"]
    if s == 1.0:
        n = pick(rng, ["fifth", "sixth", "seventh", "eighth"])
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


def write_report(rng: np.random.Generator, f: Findings, procedure: str) -> str:
    """A report shaped like MIMIC-CXR's, mentioning every set label with varied wording."""
    fnd, imp, neg = _label_sentences(rng, f)
    order = rng.permutation(len(neg)).tolist()
    neg = [neg[i] for i in order]
    fillers = [pick(rng, _FILLERS) for _ in range(int(rng.integers(0, 3)))]
    findings_text = " ".join(fillers + fnd + neg) or "The lungs are well expanded."
    if not imp:
        imp = [pick(rng, _NORMAL_IMPRESSIONS)]
    comp_negs = [s for s in neg if any(w in s.lower() for w in (
        "effusion", "consolidation", "edema", "atelectasis", "cardiomegaly", "heart size"))]
    if comp_negs and rng.random() < 0.35:
        imp = imp + comp_negs[:2]
    fmt = pick(rng, ["standard"] * 11 + ["impression_first"] + ["findings_only"] * 3
                + ["combined"] * 2 + ["impression_only"] * 2 + ["no_headers"])
    if fmt == "impression_only":  # the only section must carry every negation too
        imp = imp + [n for n in neg if n not in imp]
    impression_text = " ".join(imp)
    lines = [" " * 33 + "FINAL REPORT"]
    if fmt == "no_headers":
        lines += [*_wrap(f"{procedure.title()} radiograph. " + pick(rng, _INDICATIONS)), " "]
        lines += [*_wrap(findings_text), " "]
        lines += _wrap(impression_text)
        return "\n".join(lines) + "\n"
    lines += _section("EXAMINATION", procedure, rng)
    lines += _section(pick(rng, ["INDICATION", "INDICATION", "HISTORY"]),
                      pick(rng, _INDICATIONS), rng)
    if rng.random() < 0.5:
        portable = "PORTABLE" in procedure
        lines += _section("TECHNIQUE", pick(rng, [
            "Portable AP chest radiograph", "Single frontal view of the chest"] if portable else [
            "Chest PA and lateral", "PA and lateral views of the chest"]), rng)
    lines += _section("COMPARISON", pick(rng, ["___", "___.", "None.",
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
        lines += _section("ADDENDUM", pick(rng, [
            "Findings were discussed with Dr. ___ by telephone at ___ on ___.",
            "The study was reviewed with the attending radiologist, Dr. ___.",
        ]), rng)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n"


EMPTY_REPORT = " " * 33 + "FINAL REPORT\n ___\n \n ___ ___\n \n ___\n"
