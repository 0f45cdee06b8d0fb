"""The evaluate stage: score an image store with the zero-shot protocol and write its scorecard.

A chexdino checkpoint (or the ensemble of the run's best ones), an exported or any open_clip
model folder is read by :mod:`chexdino.model_files`, run by :mod:`chexdino.inference`, and
scored by :mod:`chexdino.metrics` into :mod:`chexdino.scorecard`'s files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chexdino import COMPETITION_LABELS, h5store, metrics, scorecard, zeroshot
from chexdino.config import EvaluateConfig
from chexdino.device import pick_device
from chexdino.errors import ChexdinoError
from chexdino.inference import embed_images, model_normalization, zero_shot_probs
from chexdino.model_files import (
    Scoring,
    ensemble_members,
    folder_scoring,
    load_checkpoint_model,
    load_model,
    read_scoring,
)
from chexdino.provenance import environment

log = logging.getLogger(__name__)


def evaluate_model(
    model_path: Path, cxr_h5: Path, out_dir: Path, cfg: EvaluateConfig,
    split: str | None = None, checkpoints_json: Path | None = None,
    precision: str | None = None, device: str | None = None,
) -> dict[str, Any]:
    """The evaluate stage: score a chexdino checkpoint (or the ensemble of the run's top
    ``cfg.ensemble_top_k`` checkpoints), an exported or any open_clip model folder.

    A checkpoint brings its input size, precision and device; a folder its input size and,
    for a chexdino export, its precision (:func:`chexdino.model_files.folder_scoring`).
    ``precision`` and ``device``, when given, replace them.
    """
    model_path = Path(model_path)
    load = None
    if model_path.is_dir():  # a model folder, scored alone
        members = [model_path]
        recorded = folder_scoring(model_path)

        def load(path: Path, torch_device: torch.device):
            return load_model(path, torch_device, recorded.input_size)
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
    summary["flags"] = metrics.chance_flags(table)
    log_chance_flags(table)
    summary.update({"n_images": len(rows), "checkpoints": [str(p) for p in checkpoints],
                    "environment": environment(device)})
    ids = meta.loc[rows, ["dicom_id", "study_id", "subject_id"]].reset_index(drop=True)
    scorecard.write_scorecard(Path(out_dir), ids, prob, targets, labels, table, summary)
    print(scorecard.format_table(table, summary))
    return summary


def log_chance_flags(table) -> None:
    """A warning per label whose AUROC is below 0.5 (``flag`` of :func:`metrics.auroc_table`)."""
    for r in table.itertuples(index=False):
        if r.flag:
            log.warning("%s: AUROC %.3f [%.3f, %.3f] (%s), %s", r.label, r.auroc, r.ci_low,
                        r.ci_high, r.flag, metrics.CHANCE_ADVICE)
