"""Stage 5 glue: load checkpoints, embed an image store, score it with the zero-shot protocol."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from chexdino import COMPETITION_LABELS, LABELS, h5store, metrics, scorecard, zeroshot
from chexdino.device import autocast, pick_device
from chexdino.model import ChexDino, build_model
from chexdino.provenance import environment
from chexdino.tokens import tokenize
from chexdino.transforms import eval_transform

log = logging.getLogger(__name__)


@torch.no_grad()
def embed_images(
    model: ChexDino, images: np.ndarray | torch.Tensor, input_size: int, device: torch.device,
    batch_size: int = 256, precision: str = "bf16", normalize: str | None = None,
) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, D) float32 unit image embeddings, batched on ``device``;
    ``normalize`` is the model's training normalisation (``train.normalize``; by default
    the one a loaded model records, else ``clip``)."""
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
        return torch.empty(0, model.cfg.embed_dim)
    return torch.cat(out)


@torch.no_grad()
def text_encoder(model: ChexDino, device: torch.device, precision: str = "bf16"):
    """A callable list[str] -> (N, D) unit text embeddings, for prompt embedding."""

    def encode(texts: list[str]) -> torch.Tensor:
        model.eval()
        tokens = tokenize(texts, model.context_length).to(device)
        with autocast(device, precision):
            return model.encode_text(tokens).float()

    return encode


def prompt_settings(eval_cfg: dict[str, Any]) -> dict[str, Any]:
    """The prompt templates and per-label overrides from the ``evaluate:`` config section."""
    overrides = {
        label: (tuple(pair["positive"]), tuple(pair["negative"]))
        for label, pair in (eval_cfg.get("prompt_overrides") or {}).items()
    }
    return {
        "positive": tuple(eval_cfg.get("positive_templates", ["{}"])),
        "negative": tuple(eval_cfg.get("negative_templates", ["no {}"])),
        "overrides": overrides or None,
    }


@torch.no_grad()
def zero_shot_probs(
    model: ChexDino, image_emb: torch.Tensor, labels: Sequence[str], eval_cfg: dict[str, Any],
    device: torch.device, precision: str = "bf16",
) -> np.ndarray:
    """(N, L) CheXzero probabilities for ``labels`` given image embeddings."""
    pairs = zeroshot.prompt_pairs(labels, **prompt_settings(eval_cfg))
    pos, neg = zeroshot.class_embeddings(text_encoder(model, device, precision), pairs)
    return zeroshot.zero_shot_probabilities(image_emb.to(pos.device), pos, neg)


def load_checkpoint_model(path: Path, device: torch.device) -> ChexDino:
    """Rebuild a trained model from a chexdino checkpoint (weights-only load); the model
    carries the image normalisation it was trained with as ``model.normalize``."""
    model, normalize = load_checkpoint(path, device)
    model.normalize = normalize
    return model


def model_normalization(model: torch.nn.Module) -> str:
    """The image normalisation a loaded model expects (``clip`` unless it records another)."""
    return str(getattr(model, "normalize", "clip"))


def load_checkpoint(path: Path, device: torch.device) -> tuple[ChexDino, str]:
    """The trained model and the image normalisation it was trained with (checkpoints
    written before ``train.normalize`` existed were all trained with ``clip``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ckpt["model_config"], load_weights=False)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), str(ckpt.get("normalize", "clip"))


def ensemble_members(checkpoints_json: Path, top_k: int) -> list[Path]:
    """The ``top_k`` best retained checkpoints by validation metric (best first)."""
    info = json.loads(Path(checkpoints_json).read_text())
    ranked = [Path(c["path"]) for c in info["ranked"]]
    if not ranked:
        return [Path(info["best"])]
    return ranked[:max(1, top_k)]


def evaluate_store(
    checkpoints: Sequence[Path], cxr_h5: Path, out_dir: Path, eval_cfg: dict[str, Any],
    input_size: int, split: str | None = None, device_name: str = "auto",
    precision: str = "bf16", batch_size: int = 256,
    load: Callable[[Path, torch.device], Any] | None = None,
) -> dict[str, Any]:
    """Score one image store with one model or a probability-averaged ensemble; write outputs.

    ``load`` rebuilds a model from each path (default: a chexdino checkpoint); the CLI passes
    one that also takes exported and other open_clip model folders.
    """
    load = load or load_checkpoint_model
    device = pick_device(device_name)
    meta = h5store.read_meta(cxr_h5)
    rows = np.flatnonzero(meta["split"] == split) if split else np.arange(len(meta))
    images = h5store.load_cxr_array(cxr_h5, rows)
    labels = [lab for lab in eval_cfg.get("labels", LABELS)]
    probs = []
    for path in checkpoints:
        model = load(path, device)
        normalize = model_normalization(model)
        if eval_cfg.get("compile", False):
            model.visual = torch.compile(model.visual)
        emb = embed_images(model, images, input_size, device, batch_size, precision, normalize)
        probs.append(zero_shot_probs(model, emb, labels, eval_cfg, device, precision))
        log.info("scored %d images with %s (%s normalisation)", len(rows), path, normalize)
    prob = zeroshot.ensemble_probabilities(probs)
    raw = meta.loc[rows, labels].to_numpy(dtype=float)
    targets = metrics.eval_targets(raw, eval_cfg.get("uncertain", "exclude"))
    table = metrics.auroc_table(prob, targets, labels, eval_cfg.get("bootstrap", 1000),
                                 eval_cfg.get("seed", 0))
    summary = metrics.headline(table, [c for c in COMPETITION_LABELS if c in labels])
    summary.update({"n_images": len(rows), "checkpoints": [str(p) for p in checkpoints],
                    "environment": environment(device)})
    ids = meta.loc[rows, ["dicom_id", "study_id", "subject_id"]].reset_index(drop=True)
    scorecard.write_scorecard(Path(out_dir), ids, prob, targets, labels, table, summary)
    print(scorecard.format_table(table, summary))
    return summary


def validation_auroc(
    model: ChexDino, image_emb: torch.Tensor, raw_labels: pd.DataFrame, eval_cfg: dict[str, Any],
    device: torch.device, precision: str,
) -> float:
    """Mean zero-shot AUROC over the competition labels (no bootstrap), for model selection."""
    from sklearn.metrics import roc_auc_score

    labels = list(COMPETITION_LABELS)
    prob = zero_shot_probs(model, image_emb, labels, eval_cfg, device, precision)
    targets = metrics.eval_targets(raw_labels[labels].to_numpy(float),
                                    eval_cfg.get("uncertain", "exclude"))
    scores = []
    for j in range(len(labels)):
        keep = ~np.isnan(targets[:, j])
        if len(np.unique(targets[keep, j])) == 2:
            scores.append(roc_auc_score(targets[keep, j], prob[keep, j]))
    return float(np.mean(scores)) if scores else float("nan")
