"""Running a model: image and text embeddings, zero-shot probabilities, validation AUROC.

Every stage that runs a model (training's validation, evaluate, retrieval, predict) embeds
through these functions, so a film gets the same numbers wherever it is scored. Where a
model comes from is :mod:`chexdino.model_files`; this module only runs what it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from chexdino import COMPETITION_LABELS, metrics, zeroshot
from chexdino.config import PromptConfig
from chexdino.device import autocast
from chexdino.model import ChexDino
from chexdino.tokens import tokenize
from chexdino.transforms import eval_transform


def model_normalization(model: torch.nn.Module) -> str:
    """The image normalisation a loaded model expects (``clip`` unless it records another)."""
    return str(getattr(model, "normalize", "clip"))


@torch.no_grad()
def embed_images(
    model: ChexDino, images: np.ndarray | torch.Tensor, input_size: int, device: torch.device,
    batch_size: int, precision: str, normalize: str | None = None,
) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, D) float32 unit image embeddings, batched on ``device``;
    ``normalize`` is the model's training normalisation (by default the one a loaded model
    records, else ``clip``)."""
    normalize = normalize or model_normalization(model)
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if not isinstance(chunk, torch.Tensor):
            chunk = torch.from_numpy(np.ascontiguousarray(chunk))
        x = eval_transform(chunk.to(device, non_blocking=True), input_size, normalize)
        with autocast(device, precision):
            out.append(model.encode_image(x).float())
    if not out:
        return torch.empty(0, model.cfg.embed_dim, device=device)
    return torch.cat(out)


@torch.no_grad()
def embed_tokens(model, tokens: np.ndarray, device: torch.device, precision: str,
                 batch_size: int) -> torch.Tensor:
    """(N, context) CLIP BPE tokens -> (N, D) unit text embeddings, batched."""
    model.eval()
    out = []
    for start in range(0, len(tokens), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(tokens[start:start + batch_size]))
        with autocast(device, precision):
            out.append(model.encode_text(chunk.long().to(device)).float())
    return torch.cat(out) if out else torch.zeros(0, model.cfg.embed_dim)


@torch.no_grad()
def text_encoder(model: ChexDino, device: torch.device, precision: str):
    """A callable list[str] -> (N, D) unit text embeddings, for prompt embedding."""

    def encode(texts: list[str]) -> torch.Tensor:
        model.eval()
        tokens = tokenize(texts, model.context_length).to(device)
        with autocast(device, precision):
            return model.encode_text(tokens).float()

    return encode


def prompt_settings(prompts: PromptConfig) -> dict[str, Any]:
    """The prompt templates and per-label overrides as :func:`zeroshot.prompt_pairs` takes them."""
    return {"positive": tuple(prompts.positive_templates),
            "negative": tuple(prompts.negative_templates),
            "overrides": prompts.overrides()}


@torch.no_grad()
def class_embeddings(model: ChexDino, labels: Sequence[str], prompts: PromptConfig,
                     device: torch.device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, D) positive and negative prompt embeddings of ``labels``."""
    pairs = zeroshot.prompt_pairs(labels, **prompt_settings(prompts))
    return zeroshot.class_embeddings(text_encoder(model, device, precision), pairs)


@torch.no_grad()
def zero_shot_probs(
    model: ChexDino, image_emb: torch.Tensor, labels: Sequence[str], prompts: PromptConfig,
    device: torch.device, precision: str,
) -> np.ndarray:
    """(N, L) CheXzero probabilities for ``labels`` given image embeddings."""
    pos, neg = class_embeddings(model, labels, prompts, device, precision)
    return zeroshot.zero_shot_probabilities(image_emb.to(pos.device), pos, neg)


def validation_auroc(
    model: ChexDino, image_emb: torch.Tensor, raw_labels: pd.DataFrame, prompts: PromptConfig,
    device: torch.device, precision: str,
) -> float:
    """Mean zero-shot AUROC over the competition labels (no bootstrap), for model selection;
    uncertain labels are left out, as ``evaluate.uncertain: exclude`` does."""
    from sklearn.metrics import roc_auc_score

    labels = list(COMPETITION_LABELS)
    prob = zero_shot_probs(model, image_emb, labels, prompts, device, precision)
    targets = metrics.eval_targets(raw_labels[labels].to_numpy(float), "exclude")
    scores = []
    for j in range(len(labels)):
        keep = ~np.isnan(targets[:, j])
        if len(np.unique(targets[keep, j])) == 2:
            scores.append(roc_auc_score(targets[keep, j], prob[keep, j]))
    return float(np.mean(scores)) if scores else float("nan")
