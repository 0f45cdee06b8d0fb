"""Zero-shot probabilities for new films, with exactly the preprocessing the model was trained on.

A film goes through the images stage's own loader (:func:`chexdino.images.load_cxr`: decode,
long side to the stored size, centred on black), then the evaluation transform (bicubic
resize to the model's input size, CLIP normalisation) and the model, batched on the GPU when
there is one. Labels and prompts are the run's evaluation settings, so a film scored here
gets the number the evaluate stage would give it. A file that cannot be read lands in the
rejects table with its reason; it never stops the run and never becomes a row of zeros.
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
import yaml
from tqdm import tqdm

from chexdino import zeroshot
from chexdino.config import (
    PROMPT_KEYS,
    EvaluateConfig,
    ImagesConfig,
    PromptConfig,
    TrainConfig,
    shipped_section,
)
from chexdino.device import pick_device
from chexdino.errors import ChexdinoError, ImageReadError
from chexdino.evaluate import (
    embed_images,
    load_checkpoint_model,
    prompt_settings,
    text_encoder,
)
from chexdino.export import exported_settings, is_exported, load_model_folder
from chexdino.images import load_cxr
from chexdino.tables import PREDICTION_REJECT_COLUMNS

log = logging.getLogger(__name__)


@dataclass
class PredictSettings:
    """What decides a film's probabilities besides the weights (from the run's config)."""

    store_size: int
    input_size: int
    labels: list[str]
    evaluate: dict[str, Any]
    precision: str
    device: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PredictSettings:
        """``images.size``, ``train.input_size / precision / device`` and ``evaluate:`` (keys
        a run's config leaves out take config.yaml's values)."""
        train = TrainConfig.from_section(config.get("train"))
        evaluate = EvaluateConfig.from_section(config.get("evaluate"))
        return cls(store_size=ImagesConfig.from_section(config.get("images")).size,
                   input_size=train.input_size, labels=list(evaluate.labels),
                   evaluate=evaluate.to_dict(), precision=train.precision, device=train.device)

    @classmethod
    def from_exported(cls, section: Mapping[str, Any]) -> PredictSettings:
        """The ``chexdino`` section of an exported folder's ``open_clip_config.json``."""
        prep = section["preprocessing"]
        precision = section.get("precision") or shipped_section("train")["precision"]
        return cls(store_size=int(prep["store_size"]), input_size=int(prep["input_size"]),
                   labels=list(section["labels"]), evaluate=dict(section.get("evaluate", {})),
                   precision=str(precision), device=shipped_section("train")["device"])


def predict_settings(model_path: Path, configs: Sequence[Path], labels: Sequence[str] = (),
                     device: str | None = None, precision: str | None = None
                     ) -> PredictSettings:
    """The settings ``chexdino predict`` scores with: an exported folder's own, else the
    run's config files (default: the results folder's run_config.yaml); ``labels``,
    ``device`` and ``precision``, when given, replace theirs."""
    if is_exported(Path(model_path)) and not configs:
        log.info("settings from %s/open_clip_config.json", model_path)
        settings = PredictSettings.from_exported(exported_settings(Path(model_path)))
    else:
        configs = list(configs) or [default_config(Path(model_path))]
        log.info("settings from %s", ", ".join(map(str, configs)))
        settings = PredictSettings.from_config(merge_configs(configs))
    if labels:
        settings.labels = list(labels)
    settings.device = device or settings.device
    settings.precision = precision or settings.precision
    return settings


def merge_configs(paths: Sequence[Path]) -> dict[str, Any]:
    """YAML files merged in order, nested sections key by key (as Snakemake's --configfile)."""
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ChexdinoError(f"--config: file not found: {path}")
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise ChexdinoError(f"--config: {path} does not hold a YAML mapping")
        _merge_into(merged, doc)
    return merged


def _merge_into(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = value


def default_config(model_path: Path) -> Path:
    """The run's merged config, ``<results>/run_config.yaml``, for ``<results>/train/best.pt``."""
    model_path = Path(model_path).resolve()
    for folder in (model_path.parent, *model_path.parents[:3]):
        candidate = folder / "run_config.yaml"
        if candidate.is_file():
            return candidate
    raise ChexdinoError(
        f"no run_config.yaml found near {model_path}: pass the run's settings with --config "
        "(the results folder's run_config.yaml, or config.yaml plus any --configfile overlays)"
    )


def load_model(path: Path, device: torch.device, input_size: int | None = None):
    """A chexdino checkpoint (``train/best.pt``), an exported model folder, or any open_clip
    model folder (``open_clip_config.json`` + weights; its preprocessing must be chexdino's)."""
    path = Path(path)
    if path.is_dir():
        return load_model_folder(path, device, input_size)
    if not path.is_file():
        raise ChexdinoError(f"--model: file not found: {path}")
    return load_checkpoint_model(path, device)


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
    files: Sequence[Path], size: int
) -> Iterator[tuple[Path, np.ndarray | None, tuple[int, int] | None, str | None]]:
    """Each file through the images stage's loader: (path, image, source shape, reject reason)."""
    for path in files:
        try:
            image, shape = load_cxr(path, size)
        except ImageReadError as exc:
            yield path, None, None, exc.reason
        except Exception as exc:  # a decoder bug must not lose the other films
            first_line = (str(exc).splitlines() or [""])[0][:160]
            yield path, None, None, f"cannot decode: {type(exc).__name__}: {first_line}"
        else:
            yield path, image, shape, None


def predict_files(
    model_path: Path, inputs: Sequence[Path], settings: PredictSettings, out_csv: Path,
    rejects_csv: Path, batch_size: int = 64,
) -> dict[str, int]:
    """Score every readable film under ``inputs``; write predictions and rejects tables.

    Films are decoded and embedded ``batch_size`` at a time, so memory stays flat for any
    number of files. Device and precision are the run's (``settings``), as at evaluation.
    Returns ``{"input", "predicted", "rejected"}``.
    """
    device, precision = pick_device(settings.device), settings.precision
    model = load_model(Path(model_path), device, settings.input_size)
    files, rejects = collect_files(inputs)
    prompts = PromptConfig.from_section(
        {k: v for k, v in settings.evaluate.items() if k in PROMPT_KEYS})
    pairs = zeroshot.prompt_pairs(settings.labels, **prompt_settings(prompts))
    classes = zeroshot.class_embeddings(text_encoder(model, device, precision), pairs)
    log.info("scoring %d files for %d labels (input %d px) with %s", len(files),
             len(pairs), settings.input_size, model_path)
    rows: list[dict[str, Any]] = []
    probs: list[np.ndarray] = []
    batch: list[tuple[Path, np.ndarray, tuple[int, int]]] = []
    interval = 0.1 if sys.stderr.isatty() else 30.0
    films = tqdm(load_films(files, settings.store_size), total=len(files), desc="predict",
                 unit="img", mininterval=interval)
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
