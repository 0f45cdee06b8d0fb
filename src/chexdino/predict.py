"""Zero-shot probabilities for new films, with exactly the preprocessing the model was trained on.

A film goes through the images stage's own loader and guards (:func:`chexdino.images.load_cxr`:
``images.max_frame_pixels``, the header and pixel checks, decode, long side to the stored
size, centred on black), then the evaluation transform (bicubic resize to the model's input
size, its normalisation) and the model, batched on the GPU when there is one. The settings
come with the model: a checkpoint records its input size, precision, device, stored film size
and prompts; an exported folder records the same and its labels in ``open_clip_config.json``.
So a film scored here gets the number the evaluate stage would give it. A file that cannot be
read lands in the rejects table with its reason; it never stops the run and never becomes a
row of zeros.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from chexdino import zeroshot
from chexdino.config import PROMPT_KEYS, PromptConfig, shipped_section
from chexdino.device import pick_device
from chexdino.errors import ChexdinoError, ImageReadError
from chexdino.images import load_cxr
from chexdino.inference import class_embeddings, embed_images
from chexdino.model_files import (
    checkpoint_settings,
    exported_settings,
    is_exported,
    load_model,
)
from chexdino.tables import PREDICTION_REJECT_COLUMNS

log = logging.getLogger(__name__)


@dataclass
class PredictSettings:
    """What decides a film's probabilities besides the weights: the model's own record (a
    checkpoint's or an exported folder's), then the command line's ``--labels``, ``--device``,
    ``--precision`` and ``--max-frame-pixels``."""

    store_size: int
    input_size: int
    labels: list[str]
    prompts: dict[str, Any]
    precision: str
    device: str
    max_frame_pixels: int

    @classmethod
    def from_checkpoint(cls, path: Path) -> PredictSettings:
        """A chexdino checkpoint's record; labels are config.yaml's ``evaluate.labels``."""
        record = checkpoint_settings(path)
        return cls(store_size=int(record["store_size"]), input_size=record["input_size"],
                   labels=list(shipped_section("evaluate")["labels"]),
                   prompts=dict(record["prompts"]), precision=record["precision"],
                   device=record["device"],
                   max_frame_pixels=int(shipped_section("images")["max_frame_pixels"]))

    @classmethod
    def from_exported(cls, section: Mapping[str, Any]) -> PredictSettings:
        """The ``chexdino`` section of an exported folder's ``open_clip_config.json``."""
        prep = section["preprocessing"]
        images = shipped_section("images")
        return cls(store_size=int(prep["store_size"]), input_size=int(prep["input_size"]),
                   labels=list(section["labels"]),
                   prompts={k: v for k, v in section.get("evaluate", {}).items()
                            if k in PROMPT_KEYS},
                   precision=str(section.get("precision") or shipped_section("train")["precision"]),
                   device=shipped_section("train")["device"],
                   max_frame_pixels=int(prep.get("max_frame_pixels",
                                                 images["max_frame_pixels"])))


def predict_settings(model_path: Path, labels: Sequence[str] = (), device: str | None = None,
                     precision: str | None = None, max_frame_pixels: int | None = None
                     ) -> PredictSettings:
    """The settings ``chexdino predict`` scores with: an exported folder's own or a
    checkpoint's record; ``labels``, ``device``, ``precision`` and ``max_frame_pixels``, when
    given, replace theirs. Any other open_clip folder has no record: it is refused here."""
    model_path = Path(model_path)
    if is_exported(model_path):
        log.info("settings from %s/open_clip_config.json", model_path)
        settings = PredictSettings.from_exported(exported_settings(model_path))
    elif model_path.is_file():
        log.info("settings from the checkpoint %s", model_path)
        settings = PredictSettings.from_checkpoint(model_path)
    else:
        raise ChexdinoError(f"--model {model_path}: not a chexdino checkpoint or exported "
                            "folder (score other open_clip folders with chexdino evaluate)")
    if labels:
        settings.labels = list(labels)
    settings.device = device or settings.device
    settings.precision = precision or settings.precision
    settings.max_frame_pixels = max_frame_pixels or settings.max_frame_pixels
    return settings


def collect_files(inputs: Sequence[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files named and every file under the folders named (sorted; hidden files skipped).

    A name that does not exist is a reject, not an error, so one typo does not lose a batch.
    Files of other types inside a folder are listed too and rejected by the loader with the
    reason, so nothing under a folder is silently skipped.
    """
    files: list[Path] = []
    rejects: list[tuple[str, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
            if not found:
                rejects.append((str(item), "folder holds no files"))
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            rejects.append((str(item), "file not found"))
    return files, rejects


def load_films(
    files: Sequence[Path], size: int, max_frame_pixels: int
) -> Iterator[tuple[Path, np.ndarray | None, tuple[int, int] | None, str | None]]:
    """Each file through the images stage's loader and guards: (path, image, source shape,
    reject reason)."""
    for path in files:
        try:
            image, shape = load_cxr(path, size, max_frame_pixels)
        except ImageReadError as exc:
            yield path, None, None, exc.reason
        except Exception as exc:  # a decoder bug must not lose the other films
            first_line = (str(exc).splitlines() or [""])[0][:160]
            yield path, None, None, f"cannot decode: {type(exc).__name__}: {first_line}"
        else:
            yield path, image, shape, None


def predict_files(
    model_path: Path, inputs: Sequence[Path], settings: PredictSettings, out_csv: Path,
    rejects_csv: Path, batch_size: int,
) -> dict[str, int]:
    """Score every readable film under ``inputs``; write predictions and rejects tables.

    Films are decoded and embedded ``batch_size`` at a time, so memory stays flat for any
    number of files. Device and precision are the run's (``settings``), as at evaluation.
    Returns ``{"input", "predicted", "rejected"}``.
    """
    device, precision = pick_device(settings.device), settings.precision
    model = load_model(Path(model_path), device, settings.input_size)
    files, rejects = collect_files(inputs)
    prompts = PromptConfig.from_section(settings.prompts)
    classes = class_embeddings(model, settings.labels, prompts, device, precision)
    log.info("scoring %d files for %d labels (input %d px) with %s", len(files),
             len(settings.labels), settings.input_size, model_path)
    rows: list[dict[str, Any]] = []
    probs: list[np.ndarray] = []
    batch: list[tuple[Path, np.ndarray, tuple[int, int]]] = []
    interval = 0.1 if sys.stderr.isatty() else 30.0
    films = tqdm(load_films(files, settings.store_size, settings.max_frame_pixels),
                 total=len(files), desc="predict", unit="img", mininterval=interval)
    for path, image, shape, reason in films:
        if reason is not None:
            rejects.append((str(path), reason))
            continue
        batch.append((path, image, shape))
        if len(batch) == batch_size:
            probs.append(_score(model, batch, classes, settings.input_size, device, precision))
            rows += _rows(batch)
            batch = []
    if batch:
        probs.append(_score(model, batch, classes, settings.input_size, device, precision))
        rows += _rows(batch)
    prob = np.concatenate(probs) if probs else np.zeros((0, len(settings.labels)))
    frame = pd.concat([pd.DataFrame(rows, columns=["file", "source_rows", "source_cols"]),
                       pd.DataFrame(prob, columns=[f"prob_{x}" for x in settings.labels])],
                      axis=1)
    for path in (out_csv, rejects_csv):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_csv, index=False)
    pd.DataFrame(rejects, columns=list(PREDICTION_REJECT_COLUMNS)).to_csv(rejects_csv, index=False)
    counts = {"input": len(frame) + len(rejects), "predicted": len(frame),
              "rejected": len(rejects)}
    log.info("predicted %(predicted)d films, rejected %(rejected)d", counts)
    return counts


def _score(model, batch, classes: tuple[torch.Tensor, torch.Tensor], input_size: int,
           device: torch.device, precision: str) -> np.ndarray:
    """One batch of stored-geometry films -> (B, L) probabilities (the evaluate stage's math)."""
    images = np.stack([image for _, image, _ in batch])
    emb = embed_images(model, images, input_size, device, len(batch), precision)
    return zeroshot.zero_shot_probabilities(emb, *classes)


def _rows(batch) -> list[dict[str, Any]]:
    return [{"file": str(path), "source_rows": shape[0], "source_cols": shape[1]}
            for path, _, shape in batch]
