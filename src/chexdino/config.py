"""Config validation before any job starts: schema first, then the checks a schema can't express.

Every problem is reported with its dotted key (``train.steps``) and value, all at once, so a
user fixes a config in one pass instead of one failed cluster job at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from chexdino.errors import ConfigError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def dotted(path: Any) -> str:
    """``['train', 'crop_scale', 0]`` -> ``train.crop_scale[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> Iterator[str]:
    """One line per schema violation, naming the key and the offending value."""
    validator = jsonschema.Draft202012Validator(schema)
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path))):
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            yield f"{dotted(error.path)}: unknown key(s) {extra}"
        elif error.validator == "required":
            yield f"{dotted(error.path)}: {error.message}"
        else:
            yield f"{dotted(error.path)} = {error.instance!r}: {error.message}"


def semantic_problems(config: Mapping[str, Any]) -> Iterator[str]:
    """Cross-key rules and files that must exist before a run is worth starting."""
    train = config.get("train", {})
    scale = train.get("crop_scale")
    if isinstance(scale, list) and len(scale) == 2 and scale[0] > scale[1]:
        yield f"train.crop_scale = {scale}: the lower bound is above the upper bound"
    if train.get("keep_last", 1) == 0 and train.get("keep_best", 1) == 0:
        yield "train.keep_last and train.keep_best are both 0: no checkpoint could be resumed"
    top_k = config.get("evaluate", {}).get("ensemble_top_k", 1)
    if top_k > 1 and top_k > train.get("keep_best", 0):
        yield (f"evaluate.ensemble_top_k = {top_k} exceeds train.keep_best = "
               f"{train.get('keep_best')}: the ensemble members would not be kept")
    for tower in ("vision", "text"):
        cfg = config.get("model", {}).get(tower, {})
        weights, random_init = cfg.get("weights"), cfg.get("random_init", False)
        key = f"model.{tower}.weights"
        if weights and random_init:
            yield f"{key} is set and model.{tower}.random_init is true: choose one"
        elif weights and not Path(weights).is_file():
            yield f"{key}: weights file not found: {weights}"
        elif not weights and not random_init:
            yield (f"{key} is not set: give a local weights file, or set "
                   f"model.{tower}.random_init: true to train from scratch on purpose")
    mimic = config.get("mimic", {})
    for name in ("split_csv", "metadata_csv", "chexpert_csv"):
        if name in mimic and not Path(mimic[name]).is_file():
            yield f"mimic.{name}: file not found: {mimic[name]}"
    for name in ("image_root", "report_root"):
        if name in mimic and not Path(mimic[name]).is_dir():
            yield f"mimic.{name}: folder not found: {mimic[name]}"
    for name, folder in (config.get("compare_models") or {}).items():
        if not (Path(folder) / "open_clip_config.json").is_file():
            yield (f"compare_models.{name}: {folder} is not a model folder "
                   "(no open_clip_config.json)")
    chexpert = config.get("chexpert_test") or {}
    if "groundtruth_csv" in chexpert and not Path(chexpert["groundtruth_csv"]).is_file():
        yield f"chexpert_test.groundtruth_csv: file not found: {chexpert['groundtruth_csv']}"
    shards = config.get("images", {}).get("shards")
    if isinstance(shards, Mapping) and chexpert and "chexpert_test" not in shards:
        yield (f"images.shards = {dict(shards)}: no count for chexpert_test, which is "
               "configured (add chexpert_test: 1, or give one number for every data set)")


def validate_config(config: Mapping[str, Any], schema_path: Path = SCHEMA) -> None:
    """Raise :class:`ConfigError` listing every problem; schema problems hide the rest."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = list(schema_problems(config, schema))
    if not problems:
        problems = list(semantic_problems(config))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")
