"""Config validation before any job starts: schema first, then the checks a schema can't express.

Every problem is reported with its dotted key (``train.steps``) and value, all at once, so a
user fixes a config in one pass instead of one failed cluster job at a time.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import jsonschema
import yaml

from chexdino.errors import ConfigError

if TYPE_CHECKING:
    import torch

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
    yield from evalset_problems(config, shards)


EVALSET_TABLES = {"rsna_pneumonia": "labels_csv", "siim_pneumothorax": "rle_csv",
                  "chexpert_5x200": "train_csv"}
"""The extra zero-shot sets (:mod:`chexdino.evalsets`) and the key of each one's table."""


def evalset_problems(config: Mapping[str, Any], shards: Any) -> Iterator[str]:
    """A configured extra set needs its table, its image folder and a shard count."""
    for name, table in EVALSET_TABLES.items():
        section = config.get(name) or {}
        if not section:
            continue
        if table in section and not Path(section[table]).is_file():
            yield f"{name}.{table}: file not found: {section[table]}"
        if "image_root" in section and not Path(section["image_root"]).is_dir():
            yield f"{name}.image_root: folder not found: {section['image_root']}"
        if isinstance(shards, Mapping) and name not in shards:
            yield (f"images.shards = {dict(shards)}: no count for {name}, which is "
                   f"configured (add {name}: 1, or give one number for every data set)")


def validate_config(config: Mapping[str, Any], schema_path: Path = SCHEMA) -> None:
    """Raise :class:`ConfigError` listing every problem; schema problems hide the rest."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = list(schema_problems(config, schema))
    if not problems:
        problems = list(semantic_problems(config))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


# --------------------------------------------------------------------------------------
# typed sections: one object per stage, built from the validated config section
# --------------------------------------------------------------------------------------

CONFIG = SCHEMA.parents[2] / "config.yaml"
"""The shipped config.yaml: the one place defaults are stated (the dataclasses have none)."""


@functools.cache
def shipped_config() -> dict[str, Any]:
    """config.yaml as shipped (the real run's settings)."""
    return yaml.safe_load(CONFIG.read_text())


def shipped_section(name: str) -> dict[str, Any]:
    """A copy of one section of the shipped config.yaml."""
    return copy.deepcopy(shipped_config()[name])


class Section:
    """A config section as a typed object: every field comes from config.yaml or the user.

    ``from_section`` fills keys the section leaves out from the shipped config.yaml (a
    config file that names only what it changes gets the shipped values, as Snakemake's
    ``--configfile`` overlay does) and refuses keys the section does not have.
    """

    NAME: ClassVar[str]

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None = None,
                     defaults: Mapping[str, Any] | None = None, key: str | None = None) -> Self:
        key = key or cls.NAME
        given = dict(section or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise ConfigError(f"{key}: unknown key(s) {unknown}")
        base = shipped_section(cls.NAME) if defaults is None else dict(defaults)
        values = {name: given[name] if name in given else base.get(name, _MISSING)
                  for name in names}
        missing = sorted(n for n, v in values.items() if v is _MISSING)
        if missing:
            raise ConfigError(f"{key}: missing key(s) {missing}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The section as the one JSON argument a rule passes to its ``chexdino`` command."""
        return json.dumps(self.to_dict(), sort_keys=True)


_MISSING = object()


@dataclass(frozen=True)
class SelectConfig(Section):
    """``select:``: which MIMIC-CXR films the manifest keeps."""

    NAME: ClassVar[str] = "select"
    views: list[str]
    missing_view: str
    splits: list[str]
    max_images: int | None


@dataclass(frozen=True)
class ImagesConfig(Section):
    """``images:``: the stored film size, the shard count and the decoder's pixel guard."""

    NAME: ClassVar[str] = "images"
    size: int
    shards: int
    max_frame_pixels: int


@dataclass(frozen=True)
class ReportsConfig(Section):
    """``reports:``: the tokenizer's context length."""

    NAME: ClassVar[str] = "reports"
    context_length: int


@dataclass
class TowerConfig(Section):
    """An encoder tower: a named architecture, constructor overrides, optional local weights."""

    name: str
    weights: str | None
    random_init: bool
    overrides: dict[str, Any]


@dataclass
class VisionConfig(TowerConfig):
    """``model.vision:``: timm model name, constructor overrides, optional local weights."""

    NAME: ClassVar[str] = "vision"


@dataclass
class TextConfig(TowerConfig):
    """``model.text:``: open_clip model name (its text tower), overrides, local weights."""

    NAME: ClassVar[str] = "text"


@dataclass
class ModelConfig(Section):
    """``model:``: everything needed to rebuild the model; stored inside every checkpoint."""

    NAME: ClassVar[str] = "model"
    vision: VisionConfig
    text: TextConfig
    embed_dim: int
    init_temperature: float
    max_logit_scale: float

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None = None,
                     defaults: Mapping[str, Any] | None = None,
                     key: str | None = None) -> ModelConfig:
        key = key or "model"
        given = dict(section or {})
        base = shipped_section("model") if defaults is None else dict(defaults)
        towers = {name: tower.from_section(given.pop(name, {}), base.get(name, {}),
                                           f"{key}.{name}")
                  for name, tower in (("vision", VisionConfig), ("text", TextConfig))}
        return super().from_section({**given, **towers}, {**base, **towers}, key)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> ModelConfig:
        """Rebuild from a checkpoint's ``model_config`` (complete: nothing is filled in)."""
        return cls.from_section(cfg, defaults={"vision": {}, "text": {}}, key="model_config")


@dataclass
class TrainConfig(Section):
    """``train:``: optimisation, augmentation, validation, checkpoints and the device."""

    NAME: ClassVar[str] = "train"
    steps: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    warmup_steps: int
    schedule: str
    input_size: int
    crop_scale: list[float]
    hflip: float
    normalize: str
    val_every: int
    val_max_images: int
    ckpt_every: int
    keep_last: int
    keep_best: int
    select_by: str
    log_every: int
    precision: str
    compile: bool | str
    compile_mode: str
    data_on_device: str
    device: str
    cpu_isa: str
    cpu_threads: int
    seed: int

    @property
    def higher_is_better(self) -> bool:
        return self.select_by == "val_auroc"

    def compile_mode_on(self, device: torch.device) -> str | None:
        """The torch.compile mode this run uses, or None for eager.

        ``auto`` compiles on a GPU (CUDA graphs remove the launch bound: ~2,370 vs ~800 img/s
        on an H200) and stays eager on a CPU, where compiling costs more than it saves.
        """
        wanted = self.compile
        if wanted == "auto":
            wanted = device.type == "cuda"
        if not wanted:
            return None
        if self.compile_mode == "reduce-overhead" and device.type != "cuda":
            return "default"  # CUDA graphs need a GPU
        return self.compile_mode


PROMPT_KEYS = ("positive_templates", "negative_templates", "prompt_overrides")
"""The ``evaluate:`` keys that make the zero-shot prompts (training's validation uses them)."""


@dataclass(frozen=True)
class PromptConfig(Section):
    """The prompt part of ``evaluate:``: templates and per-label literal prompts."""

    NAME: ClassVar[str] = "evaluate"
    positive_templates: list[str]
    negative_templates: list[str]
    prompt_overrides: dict[str, dict[str, list[str]]] | None

    def overrides(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """``{label: (positive prompts, negative prompts)}`` replacing the templates."""
        return {label: (tuple(pair["positive"]), tuple(pair["negative"]))
                for label, pair in (self.prompt_overrides or {}).items()}


@dataclass(frozen=True)
class EvaluateConfig(PromptConfig):
    """``evaluate:``: labels, prompts, uncertain-label policy, bootstrap, ensemble, batching."""

    labels: list[str]
    uncertain: str
    bootstrap: int
    seed: int
    ensemble_top_k: int
    batch_size: int
    compile: bool | str

    COMPILE_PAYS_FROM: ClassVar[int] = 350_000
    """Images from which compiling the image tower pays for itself on a GPU: ~40 s of
    compiling against 4,160 -> 8,071 img/s (H100, docs/performance.md)."""

    def compiles(self, device: torch.device, n_images: int) -> bool:
        """Whether to compile the image tower: ``auto`` does on a GPU for sets large enough
        to repay the compilation (no evaluation set of MIMIC-CXR or CheXpert is)."""
        if self.compile == "auto":
            return device.type == "cuda" and n_images >= self.COMPILE_PAYS_FROM
        return bool(self.compile)

    @property
    def prompts(self) -> PromptConfig:
        return PromptConfig(**{k: getattr(self, k) for k in PROMPT_KEYS})


@dataclass(frozen=True)
class ReportConfig(Section):
    """``report:``: what the Snakemake report shows."""

    NAME: ClassVar[str] = "report"
    sample_images: bool


@dataclass(frozen=True)
class LinearProbeConfig(Section):
    """``linear_probe:``: label fractions (by patient), seeds, the ``C`` grid, bootstrap."""

    NAME: ClassVar[str] = "linear_probe"
    enabled: bool
    fractions: list[float]
    seeds: list[int]
    c_grid: list[float]
    max_iter: int
    bootstrap: int
