"""Zero-shot scoring (SPEC section 4): prompts, class embeddings and per-label probabilities.

Model-agnostic: callers pass an ``encode_text`` callable and image embeddings, so the same
functions score any CLIP-style model. The protocol follows CheXzero's ``run_softmax_eval``
(cosine similarity to a positive and a negative prompt, softmax over the pair, no
temperature) with its known bugs fixed: "No Finding" gets meaningful prompts and labels are
matched by name; :mod:`chexdino.metrics` scores blank labels as negatives and uncertain ones
by an explicit policy (AUROC, bootstrap CIs), :mod:`chexdino.scorecard` writes the files and
the text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "class_embeddings",
    "ensemble_probabilities",
    "prompt_pairs",
    "zero_shot_probabilities",
]


def prompt_pairs(
    labels: Sequence[str],
    positive: Sequence[str] = ("{}",),
    negative: Sequence[str] = ("no {}",),
    overrides: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
) -> dict[str, tuple[list[str], list[str]]]:
    """Return ``{label: (positive prompts, negative prompts)}``, lowercased.

    Templates are filled with the lowercased label. ``overrides`` (``evaluate.prompt_overrides``;
    none gives plain CheXzero behaviour) gives literal prompt lists for specific labels, matched
    case-insensitively, so a config can fix a label whose templated pair is meaningless:
    CheXzero's "no finding" / "no no finding" scored AUROC 0.07, the double negation ranking
    studies backwards; config.yaml describes a normal study as MIMIC-CXR impressions do.
    """
    overrides = overrides or {}
    if isinstance(positive, str) or isinstance(negative, str):
        raise TypeError("positive/negative must be sequences of templates, not a single string")
    for kind, templates in (("positive", positive), ("negative", negative)):
        if len(templates) == 0:
            raise ValueError(f"{kind} prompt templates are empty")
        for t in templates:
            if "{}" not in t:
                raise ValueError(
                    f"{kind} template {t!r} has no '{{}}' placeholder: every label would get "
                    "the same prompt"
                )
    by_key: dict[str, tuple[Sequence[str], Sequence[str]]] = {}
    for name, pair in overrides.items():
        key = name.strip().lower()
        if key in by_key:
            raise ValueError(f"prompt overrides name {name!r} twice (case-insensitively)")
        if len(pair) != 2:
            raise ValueError(f"prompt override for {name!r} must be (positive, negative) lists")
        pos, neg = pair
        if isinstance(pos, str) or isinstance(neg, str) or not pos or not neg:
            raise ValueError(
                f"prompt override for {name!r} needs non-empty lists of positive and negative "
                "prompts"
            )
        by_key[key] = pair

    out: dict[str, tuple[list[str], list[str]]] = {}
    for label in labels:
        if label in out:
            raise ValueError(f"label {label!r} appears twice")
        name = label.strip().lower()
        if name in by_key:
            pos, neg = by_key[name]
            out[label] = ([p.strip().lower() for p in pos], [n.strip().lower() for n in neg])
        else:
            out[label] = (
                [t.format(name).strip().lower() for t in positive],
                [t.format(name).strip().lower() for t in negative],
            )
    return out


def class_embeddings(
    encode_text: Callable[[list[str]], torch.Tensor],
    pairs: Mapping[str, tuple[Sequence[str], Sequence[str]]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed each label's prompts and return unit-norm ``pos`` and ``neg`` matrices (L, D).

    Every distinct prompt goes through ``encode_text`` exactly once (one call). Several
    templates for a label are averaged and re-normalised, as CheXzero's ``zeroshot_classifier``
    does, so a label's direction does not depend on how many templates it has. Rows follow the
    order of ``pairs``.
    """
    if len(pairs) == 0:
        raise ValueError("no labels to embed")
    unique: list[str] = []
    seen: dict[str, int] = {}
    for pos, neg in pairs.values():
        for p in (*pos, *neg):
            if p not in seen:
                seen[p] = len(unique)
                unique.append(p)
    with torch.no_grad():
        emb = encode_text(unique)
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != len(unique):
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ValueError(f"encode_text returned {shape} for {len(unique)} prompts; want (n, D)")
    emb = torch.nn.functional.normalize(emb.detach().float(), dim=-1)

    def mean_direction(prompts: Sequence[str]) -> torch.Tensor:
        rows = emb[[seen[p] for p in prompts]].mean(dim=0)
        return torch.nn.functional.normalize(rows, dim=-1)

    pos_rows = [mean_direction(pos) for pos, _ in pairs.values()]
    neg_rows = [mean_direction(neg) for _, neg in pairs.values()]
    return torch.stack(pos_rows), torch.stack(neg_rows)


def zero_shot_probabilities(
    image_emb: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> np.ndarray:
    """Per-label probability ``exp(s_pos) / (exp(s_pos) + exp(s_neg))``, float64 (N, L).

    ``s`` are cosine similarities (rows are normalised here, so non-unit inputs are still
    scored as cosines). This is CheXzero's ``run_softmax_eval``: softmax over the pair with no
    temperature, computed in float32 via ``torch.softmax`` so it never overflows. Runs on the
    device of ``image_emb``.
    """
    if image_emb.ndim != 2 or pos.ndim != 2 or neg.ndim != 2:
        raise ValueError("image_emb, pos and neg must be 2-D (rows, D)")
    if pos.shape != neg.shape or pos.shape[1] != image_emb.shape[1]:
        raise ValueError(
            f"shape mismatch: image_emb {tuple(image_emb.shape)}, pos {tuple(pos.shape)}, "
            f"neg {tuple(neg.shape)}"
        )
    device = image_emb.device
    with torch.no_grad():
        img = torch.nn.functional.normalize(image_emb.detach().float(), dim=-1)
        p = torch.nn.functional.normalize(pos.detach().to(device).float(), dim=-1)
        n = torch.nn.functional.normalize(neg.detach().to(device).float(), dim=-1)
        logits = torch.stack((img @ p.T, img @ n.T), dim=-1)  # (N, L, 2)
        prob = torch.softmax(logits, dim=-1)[..., 0]
    return prob.double().cpu().numpy()


def ensemble_probabilities(prob_list: Sequence[np.ndarray]) -> np.ndarray:
    """Average probabilities over checkpoints (CheXzero's top-k ensemble), float64."""
    if len(prob_list) == 0:
        raise ValueError("no probability arrays to ensemble")
    arrays = [np.asarray(p, dtype=np.float64) for p in prob_list]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"probability arrays differ in shape: {sorted(shapes)}")
    return np.mean(np.stack(arrays), axis=0)
