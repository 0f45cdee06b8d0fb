"""The export stage: a finished run's best model as an open_clip folder with its model card.

The folder holds ``model.safetensors`` in open_clip's key layout, ``open_clip_config.json``
(open_clip's ``model_cfg`` and ``preprocess_cfg`` plus the ``chexdino`` section that
:mod:`chexdino.model_files` reads back), ``preprocess.py`` (the film loader, standalone) and
the card ``README.md``; the card and the report's landing-page block come from
:mod:`chexdino.modelcard`, built from the run's results folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from chexdino import __version__, film_preprocess
from chexdino.atomic import atomic_output
from chexdino.config import EvaluateConfig, ModelConfig, SelectConfig
from chexdino.errors import ChexdinoError
from chexdino.model_files import (
    CARD_FILE,
    CONFIG_FILE,
    TOKENIZER,
    WEIGHTS_FILE,
    checkpoint_settings,
    exact_preprocessing,
    open_clip_model_config,
    preprocess_config,
    to_open_clip_key,
)
from chexdino.modelcard import (
    extra_tables,
    landing_block,
    markdown_table,
    model_card,
    run_scorecards,
    use_card,
)

log = logging.getLogger(__name__)


PREPROCESS_FILE = "preprocess.py"
"""The export's standalone film loader (:mod:`chexdino.film_preprocess` with the run's stored
size): ``load_film(path)`` then open_clip's ``preprocess`` is chexdino's preprocessing."""


def export_section(ckpt: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``chexdino`` section of an export's ``open_clip_config.json``: the model, its
    exact preprocessing (stored and input size, normalisation), labels, prompts, precision."""
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    normalize = str(ckpt.get("normalize", "clip"))
    return {
        "version": __version__,
        "model_config": cfg.to_dict(),
        "tokenizer": TOKENIZER,
        "preprocessing": exact_preprocessing(int(settings["store_size"]),
                                             int(settings["input_size"]), normalize),
        "labels": list(settings["labels"]),
        "evaluate": dict(settings.get("evaluate", {})),
        "precision": str(settings["precision"]),
        "step": int(ckpt.get("step", -1)),
    }


def preprocess_source(store_size: int) -> str:
    """The text of the export's ``preprocess.py``: :mod:`chexdino.film_preprocess` with
    ``STORE_SIZE`` set to the run's stored film size."""
    source = Path(film_preprocess.__file__).read_text()
    marker = "STORE_SIZE = 320\n"
    if marker not in source:
        raise RuntimeError("film_preprocess.py no longer defines STORE_SIZE = 320")
    return source.replace(marker, f"STORE_SIZE = {int(store_size)}\n", 1)


def export_model(
    checkpoint: Path, out_dir: Path, settings: Mapping[str, Any],
    card: str | Callable[[Mapping[str, Any]], str] | None = None,
) -> dict[str, Path]:
    """Write ``model.safetensors``, ``open_clip_config.json``, ``preprocess.py`` and the card
    into ``out_dir``.

    ``settings``: ``store_size``, ``input_size``, ``labels``, the ``evaluate`` prompt settings
    and the evaluation ``precision``, so chexdino scores with the folder exactly as with the
    checkpoint. ``card``: the card's text, or a function of the export's ``chexdino`` section
    that writes it; by default the card is the recipe only (:func:`chexdino.modelcard.use_card`).
    """
    from safetensors.torch import save_file

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    normalize = str(ckpt.get("normalize", "clip"))
    state = {to_open_clip_key(k): v.detach().float().contiguous()
             for k, v in ckpt["model"].items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"weights": out_dir / WEIGHTS_FILE, "config": out_dir / CONFIG_FILE,
             "card": out_dir / CARD_FILE, "preprocess": out_dir / PREPROCESS_FILE}
    with atomic_output(paths["weights"]) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "source": "chexdino " + __version__})
    section = export_section(ckpt, settings)
    doc = {
        "model_cfg": open_clip_model_config(cfg, int(settings["input_size"])),
        "preprocess_cfg": preprocess_config(int(settings["input_size"]), normalize),
        "chexdino": section,
    }
    paths["config"].write_text(json.dumps(doc, indent=2) + "\n")
    paths["preprocess"].write_text(preprocess_source(int(settings["store_size"])))
    if card is None:
        card = use_card(section)
    elif callable(card):
        card = card(section)
    paths["card"].write_text(card)
    log.info("exported %s (%d tensors) to %s", checkpoint, len(state), out_dir)
    return paths



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
