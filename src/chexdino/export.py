"""The export stage: a finished run's best model as an open_clip folder with its model card.

The folder's files are written by :func:`chexdino.model_files.export_model` (weights in
open_clip's layout, ``open_clip_config.json``); the card (``README.md``) and the report's
landing-page block by :mod:`chexdino.modelcard`, from the run's results folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from chexdino.config import EvaluateConfig, SelectConfig
from chexdino.errors import ChexdinoError
from chexdino.model_files import checkpoint_settings, export_model
from chexdino.modelcard import (
    extra_tables,
    landing_block,
    markdown_table,
    model_card,
    run_scorecards,
)


def export_run(model: Path, results: Path, out_dir: Path, evaluate: EvaluateConfig,
               select: SelectConfig, landing: Path | None = None) -> None:
    """Export ``model`` with the card built from a finished run's results folder.

    What the model needs comes from the checkpoint (architecture, training settings, input and
    stored size, precision, normalisation); the labels and prompts from ``evaluate``, the views
    and splits the card names from ``select`` (the rule passes both sections).
    """
    results = Path(results)
    needed = {"train/checkpoints.json": results / "train" / "checkpoints.json",
              "mimic/dataset_summary.json": results / "mimic" / "dataset_summary.json"}
    missing = [name for name, path in needed.items() if not path.is_file()]
    if missing:
        raise ChexdinoError(f"--results {results}: missing {missing}; run the workflow first")
    record = checkpoint_settings(Path(model))
    ckpt = torch.load(model, map_location="cpu", weights_only=True, mmap=True)
    config = {"model": ckpt["model_config"], "train": ckpt.get("train_config", {}),
              "select": select.to_dict(), "evaluate": evaluate.to_dict()}
    training = json.loads(needed["train/checkpoints.json"].read_text())
    dataset = json.loads(needed["mimic/dataset_summary.json"].read_text())
    tables = extra_tables(results)
    sections = {title: f"{note}\n\n{markdown_table(frame)}"
                for title, (frame, note) in tables.items()}
    scorecards = run_scorecards(results)
    settings = {"store_size": record["store_size"], "input_size": record["input_size"],
                "labels": list(evaluate.labels), "evaluate": evaluate.to_dict(),
                "precision": record["precision"]}
    export_model(Path(model), Path(out_dir), settings,
                 lambda section: model_card(config, training, dataset, scorecards, sections,
                                            export=section))
    if landing is not None:
        Path(landing).write_text(landing_block(Path(out_dir), tables))
