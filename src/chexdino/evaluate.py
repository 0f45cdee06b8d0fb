"""Stage 5 glue: load checkpoints, embed an image store, score it with the zero-shot protocol."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from chexdino import COMPETITION_LABELS, h5store, metrics, scorecard, zeroshot
from chexdino.config import EvaluateConfig, PromptConfig, shipped_section
from chexdino.device import autocast, pick_device
from chexdino.errors import ChexdinoError
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
        return torch.empty(0, model.cfg.embed_dim, device=device)
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


def prompt_settings(prompts: PromptConfig) -> dict[str, Any]:
    """The prompt templates and per-label overrides as :func:`zeroshot.prompt_pairs` takes them."""
    return {"positive": tuple(prompts.positive_templates),
            "negative": tuple(prompts.negative_templates),
            "overrides": prompts.overrides()}


@torch.no_grad()
def zero_shot_probs(
    model: ChexDino, image_emb: torch.Tensor, labels: Sequence[str], prompts: PromptConfig,
    device: torch.device, precision: str = "bf16",
) -> np.ndarray:
    """(N, L) CheXzero probabilities for ``labels`` given image embeddings."""
    pairs = zeroshot.prompt_pairs(labels, **prompt_settings(prompts))
    pos, neg = zeroshot.class_embeddings(text_encoder(model, device, precision), pairs)
    return zeroshot.zero_shot_probabilities(image_emb.to(pos.device), pos, neg)


def load_checkpoint_model(path: Path, device: torch.device) -> ChexDino:
    """Rebuild a trained model from a chexdino checkpoint (weights-only load); the model
    carries the image normalisation it was trained with as ``model.normalize`` (checkpoints
    written before ``train.normalize`` existed were all trained with ``clip``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ckpt["model_config"], load_weights=False)
    model.load_state_dict(ckpt["model"])
    model.normalize = str(ckpt.get("normalize", "clip"))
    return model.to(device).eval()


def model_normalization(model: torch.nn.Module) -> str:
    """The image normalisation a loaded model expects (``clip`` unless it records another)."""
    return str(getattr(model, "normalize", "clip"))


@dataclass(frozen=True)
class Scoring:
    """How a model is run at evaluation: the input size, precision and device of its training."""

    input_size: int
    precision: str
    device: str


SCORING_KEYS = ("input_size", "precision", "device")
"""The training settings every checkpoint records for evaluation (``train.<key>``)."""


def checkpoint_scoring(record: Mapping[str, Any], path: Path,
                       train: Mapping[str, Any] | None = None) -> Scoring:
    """The scoring settings a checkpoint records. Checkpoints written before they were
    recorded get the run's ``train`` section's values when given, else config.yaml's, and
    the log says so."""
    missing = [k for k in SCORING_KEYS if k not in record]
    fallback = {**shipped_section("train"), **(train or {})}
    if missing:
        source = "the run's" if train else "config.yaml's"
        log.warning("%s records no %s (written by an older chexdino): using %s train.%s",
                    path, "/".join(missing), source,
                    ", train.".join(f"{k} = {fallback[k]}" for k in missing))
    return Scoring(**{k: record[k] if k in record else fallback[k] for k in SCORING_KEYS})


def read_scoring(path: Path, train: Mapping[str, Any] | None = None) -> Scoring:
    """:func:`checkpoint_scoring` of a checkpoint file (memory-mapped: the weights stay unread)."""
    record = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return checkpoint_scoring(record, Path(path), train)


def ensemble_members(checkpoints_json: Path, top_k: int) -> list[Path]:
    """The ``top_k`` best retained checkpoints by validation metric (best first)."""
    info = json.loads(Path(checkpoints_json).read_text())
    ranked = [Path(c["path"]) for c in info["ranked"]]
    if not ranked:
        return [Path(info["best"])]
    return ranked[:max(1, top_k)]


def evaluate_model(
    model_path: Path, cxr_h5: Path, out_dir: Path, cfg: EvaluateConfig,
    split: str | None = None, checkpoints_json: Path | None = None,
    precision: str | None = None, device: str | None = None,
) -> dict[str, Any]:
    """The evaluate stage: score a chexdino checkpoint (or the ensemble of the run's top
    ``cfg.ensemble_top_k`` checkpoints), an exported or any open_clip model folder.

    A checkpoint brings its input size, precision and device (``precision``/``device``, when
    given, replace them); a folder brings its input size, and needs both given.
    """
    model_path = Path(model_path)
    load = None
    if model_path.is_dir():  # a model folder, scored alone
        from chexdino.export import folder_input_size
        from chexdino.predict import load_model

        if not (precision and device):
            raise ChexdinoError(f"--model {model_path}: a model folder needs --precision and "
                                "--device (a folder records its input size only)")
        members = [model_path]
        size = folder_input_size(model_path)
        scoring = Scoring(size, precision, device)

        def load(path: Path, torch_device: torch.device):
            return load_model(path, torch_device, size)
    else:
        if not model_path.is_file():
            raise ChexdinoError(f"--model: file not found: {model_path}")
        members = [model_path]
        if cfg.ensemble_top_k > 1:
            if checkpoints_json is None:
                raise ChexdinoError("evaluate.ensemble_top_k > 1 needs --checkpoints (the "
                                    "run's checkpoints.json)")
            members = ensemble_members(Path(checkpoints_json), cfg.ensemble_top_k)
        recorded = read_scoring(model_path)
        scoring = Scoring(recorded.input_size, precision or recorded.precision,
                          device or recorded.device)
    log.info("scoring at %d px, %s, device %s", scoring.input_size, scoring.precision,
             scoring.device)
    return evaluate_store(members, cxr_h5, out_dir, cfg, scoring, split, load)


def evaluate_store(
    checkpoints: Sequence[Path], cxr_h5: Path, out_dir: Path, cfg: EvaluateConfig,
    scoring: Scoring, split: str | None = None,
    load: Callable[[Path, torch.device], Any] | None = None,
) -> dict[str, Any]:
    """Score one image store with one model or a probability-averaged ensemble; write outputs.

    ``load`` rebuilds a model from each path (default: a chexdino checkpoint);
    :func:`evaluate_model` passes one that also takes exported and other open_clip folders.
    """
    load = load or load_checkpoint_model
    device = pick_device(scoring.device)
    meta = h5store.read_meta(cxr_h5)
    rows = np.flatnonzero(meta["split"] == split) if split else np.arange(len(meta))
    images = h5store.load_cxr_array(cxr_h5, rows)
    labels = list(cfg.labels)
    probs = []
    for path in checkpoints:
        model = load(path, device)
        normalize = model_normalization(model)
        if cfg.compiles(device, len(rows)):
            model.visual = torch.compile(model.visual)
        emb = embed_images(model, images, scoring.input_size, device, cfg.batch_size,
                           scoring.precision, normalize)
        probs.append(zero_shot_probs(model, emb, labels, cfg.prompts, device,
                                     scoring.precision))
        log.info("scored %d images with %s (%s normalisation)", len(rows), path, normalize)
    prob = zeroshot.ensemble_probabilities(probs)
    raw = meta.loc[rows, labels].to_numpy(dtype=float)
    targets = metrics.eval_targets(raw, cfg.uncertain)
    table = metrics.auroc_table(prob, targets, labels, cfg.bootstrap, cfg.seed)
    summary = metrics.headline(table, [c for c in COMPETITION_LABELS if c in labels])
    summary.update({"n_images": len(rows), "checkpoints": [str(p) for p in checkpoints],
                    "environment": environment(device)})
    ids = meta.loc[rows, ["dicom_id", "study_id", "subject_id"]].reset_index(drop=True)
    scorecard.write_scorecard(Path(out_dir), ids, prob, targets, labels, table, summary)
    print(scorecard.format_table(table, summary))
    return summary


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


def scorecard_text(results: Path) -> str:
    """The AUROC tables (and retrieval recalls) of every evaluation set under ``results``."""
    summaries = sorted(Path(results).glob("eval/*/summary.json"))
    if not summaries:
        raise ChexdinoError(f"no eval/*/summary.json under {results}: run the workflow first")
    parts = []
    for path in summaries:
        table = pd.read_csv(path.with_name("auroc.csv"), keep_default_na=False,
                            na_values=[""])
        summary = json.loads(path.read_text())
        parts += [f"\n== zero-shot scorecard: {path.parent.name} ==",
                  scorecard.format_table(table, summary.get("headline", summary))]
        retrieval = path.with_name("retrieval.csv")
        if retrieval.is_file():
            from chexdino.retrieval import format_recall

            parts += [f"\n== retrieval (study level): {path.parent.name} ==",
                      format_recall(pd.read_csv(retrieval))]
    return "\n".join(parts)
