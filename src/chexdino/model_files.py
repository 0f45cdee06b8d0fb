"""A model on disk: chexdino checkpoints, exported open_clip folders, any open_clip folder.

Reading and writing model files is one concern, kept apart from running a model
(:mod:`chexdino.inference`) and from the stages that do either. A checkpoint records what
scoring it needs (input size, precision, device, normalisation, the stored film size, the
validation prompts), so evaluation, retrieval, predict and export read the model file, never
the ``train:`` section. The export folder holds ``model.safetensors`` (no pickle) in
open_clip's ``CustomTextCLIP`` key layout and ``open_clip_config.json`` (open_clip's
``model_cfg`` and ``preprocess_cfg`` plus a ``chexdino`` section with the exact
preprocessing and the zero-shot prompts); ``open_clip.create_model_and_transforms(
"local-dir:<folder>")`` rebuilds it offline, :func:`load_exported` rebuilds it in chexdino,
and :func:`load_model_folder` also takes any other open_clip model folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chexdino.config import PROMPT_KEYS, ModelConfig, shipped_section
from chexdino.errors import ChexdinoError, WeightsError
from chexdino.model import ChexDino, build_model
from chexdino.transforms import NORMALIZATIONS

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "open_clip_config.json"
CARD_FILE = "README.md"
TOKENIZER = "open_clip SimpleTokenizer (CLIP BPE, bpe_simple_vocab_16e6), context length 77"




def to_open_clip_key(key: str) -> str:
    """chexdino parameter name -> open_clip ``CustomTextCLIP`` name (timm trunk + head)."""
    if key.startswith("visual_proj."):
        return "visual.head.proj." + key.removeprefix("visual_proj.")
    if key.startswith("visual."):
        return "visual.trunk." + key.removeprefix("visual.")
    return key  # text.* and logit_scale are open_clip's own names already


def from_open_clip_key(key: str) -> str:
    """Inverse of :func:`to_open_clip_key`."""
    if key.startswith("visual.head.proj."):
        return "visual_proj." + key.removeprefix("visual.head.proj.")
    if key.startswith("visual.trunk."):
        return "visual." + key.removeprefix("visual.trunk.")
    return key


def open_clip_model_config(cfg: ModelConfig, input_size: int) -> dict[str, Any]:
    """open_clip ``model_cfg`` that builds exactly this architecture.

    timm constructor overrides (shrunken test and demo towers) go to ``timm_model_kwargs``,
    which open_clip 3.3.0 does not know: it then refuses the config by name instead of
    building a different network. The real run (no overrides) loads in any open_clip 3.x.
    """
    import open_clip

    named = open_clip.get_model_config(cfg.text.name)
    vision: dict[str, Any] = {
        "image_size": input_size, "timm_model_name": cfg.vision.name, "timm_pool": "token",
        "timm_proj": "linear", "timm_proj_bias": True,
    }
    if cfg.vision.overrides:
        vision["timm_model_kwargs"] = dict(cfg.vision.overrides)
    return {
        "embed_dim": cfg.embed_dim,
        "quick_gelu": bool(named.get("quick_gelu", False)),
        "custom_text": True,
        "vision_cfg": vision,
        "text_cfg": {**named["text_cfg"], **cfg.text.overrides},
    }


def preprocess_config(input_size: int, normalize: str) -> dict[str, Any]:
    """open_clip's ``preprocess_cfg``: aspect-kept resize of the long side, black padding.

    open_clip's transform letterboxes straight to ``input_size``; chexdino letterboxes to the
    stored 320 px first (Lanczos) and then resizes (bicubic). The export's ``preprocess.py``
    (``load_film``) does chexdino's part, so ``preprocess(load_film(path))`` is exact; the recipe
    is also in the config's ``chexdino.preprocessing`` and in ``chexdino predict``.
    """
    mean, std = NORMALIZATIONS[normalize]
    return {"size": input_size, "mode": "RGB", "mean": list(mean), "std": list(std),
            "interpolation": "bicubic", "resize_mode": "longest", "fill_color": 0}


def exact_preprocessing(store_size: int, input_size: int, normalize: str
                        ) -> dict[str, Any]:
    """The training-time evaluation preprocessing, step by step (what predict does)."""
    mean, std = NORMALIZATIONS[normalize]
    return {
        "decode": "DICOM via pydicom (Modality LUT, VOI LUT or window, MONOCHROME1 inverted, "
                  "scaled to uint8); JPG/PNG via Pillow, greyscale; JPEG in draft mode (libjpeg "
                  "downscales to the smallest scale holding the letterbox); 16-bit and float "
                  "PNGs rescaled by their own min and max to 0-255",
        "loader": "preprocess.py: load_film(path) does decode and letterbox; open_clip's "
                  "preprocess does the rest",
        "store_size": store_size,
        "letterbox": f"long side to {store_size} px (Lanczos), centred on a black "
                     f"{store_size}x{store_size} canvas",
        "input_size": input_size,
        "resize": f"bicubic (antialiased) {store_size} -> {input_size} px",
        "channels": "greyscale replicated to 3 channels",
        "normalize": normalize,
        "mean": list(mean),
        "std": list(std),
    }


def is_exported(path: Path) -> bool:
    """A folder written by :func:`chexdino.export.export_model` (config and weights present)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def exported_settings(folder: Path) -> dict[str, Any]:
    """The ``chexdino`` section of an exported folder's config (preprocessing and prompts)."""
    doc = json.loads((Path(folder) / CONFIG_FILE).read_text())
    if "chexdino" not in doc:
        raise ChexdinoError(f"{folder / CONFIG_FILE} has no 'chexdino' section: not a chexdino "
                            "export (chexdino evaluate scores any open_clip folder)")
    return doc["chexdino"]


def load_exported(folder: Path, device: torch.device | str) -> ChexDino:
    """Rebuild the chexdino model from an exported folder (strict: every tensor must match)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    model = build_model(exported_settings(folder)["model_config"], load_weights=False)
    state = {from_open_clip_key(k): v for k, v in load_file(str(folder / WEIGHTS_FILE)).items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{folder / WEIGHTS_FILE} does not match its {CONFIG_FILE}: "
                           f"{str(exc).splitlines()[0]}") from exc
    model.normalize = exported_settings(folder)["preprocessing"].get("normalize", "clip")
    return model.to(device).eval()


# any open_clip model folder, scored with chexdino's protocol


class OpenClipModel(torch.nn.Module):
    """An open_clip model seen through chexdino's model interface (unit embeddings,
    ``context_length``, ``cfg.embed_dim``, ``visual``), so evaluate and predict score it
    with exactly the protocol they use for chexdino's own models."""

    def __init__(self, model: torch.nn.Module, context_length: int, embed_dim: int):
        super().__init__()
        self.model = model
        self.visual = model.visual
        self._context_length = context_length
        self.cfg = type("Cfg", (), {"embed_dim": embed_dim})()

    @property
    def context_length(self) -> int:
        return self._context_length

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        # open_clip's encode_image is visual() then normalise; calling self.visual lets
        # evaluate.compile replace it.
        return torch.nn.functional.normalize(self.visual(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model.encode_text(tokens), dim=-1)


def load_open_clip_folder(folder: Path, device: torch.device | str,
                          input_size: int | None = None) -> OpenClipModel:
    """Any open_clip model folder (``open_clip_config.json`` + weights), local files only.

    chexdino feeds it greyscale films normalised with CLIP's (or ImageNet's) mean and std at
    ``input_size``; a model whose preprocessing says otherwise is refused by name rather than
    scored on inputs it was not trained for.
    """
    import open_clip

    folder = Path(folder)
    doc = json.loads((folder / CONFIG_FILE).read_text())
    # Keys the folder leaves out take open_clip's own defaults (OpenAI CLIP's mean and std).
    prep = {**preprocess_config(input_size or 224, "clip"), **doc.get("preprocess_cfg", {})}
    stats = ([round(float(v), 6) for v in prep["mean"]], [round(float(v), 6) for v in prep["std"]])
    known = [name for name, (mean, std) in NORMALIZATIONS.items()
             if stats == ([round(v, 6) for v in mean], [round(v, 6) for v in std])]
    problems = [] if known else [f"mean {prep['mean']} std {prep['std']} (chexdino normalises "
                                 f"with {' or '.join(NORMALIZATIONS)} statistics)"]
    size = prep["size"] if isinstance(prep["size"], int) else list(prep["size"])
    if input_size is not None and size not in (input_size, [input_size, input_size]):
        problems.append(f"size {size} (evaluation input size is {input_size})")
    if problems:
        raise ChexdinoError(f"{folder / CONFIG_FILE}: preprocessing differs from chexdino's "
                            f"evaluation transform: {', '.join(problems)}")
    model = open_clip.create_model(f"local-dir:{folder}", device=device)
    text_cfg = doc["model_cfg"]["text_cfg"]
    wrapped = OpenClipModel(model, int(text_cfg.get("context_length", 77)),
                            int(doc["model_cfg"]["embed_dim"]))
    wrapped.normalize = known[0]
    return wrapped.to(device).eval()


def folder_input_size(folder: Path) -> int:
    """The input size a model folder was built for (its chexdino section, else open_clip's)."""
    doc = json.loads((Path(folder) / CONFIG_FILE).read_text())
    if "chexdino" in doc:
        return int(doc["chexdino"]["preprocessing"]["input_size"])
    size = doc.get("preprocess_cfg", {}).get("size",
                                             doc["model_cfg"]["vision_cfg"].get("image_size", 224))
    return int(size if isinstance(size, int) else size[0])


def folder_scoring(folder: Path) -> Scoring:
    """How a model folder is scored: its input size, the precision a chexdino export records
    (any other open_clip folder: fp32, as open_clip runs it) and the best device there is."""
    if not (Path(folder) / CONFIG_FILE).is_file():
        raise ChexdinoError(f"{folder} has no {CONFIG_FILE}: not an open_clip model folder")
    doc = json.loads((Path(folder) / CONFIG_FILE).read_text())
    precision = doc.get("chexdino", {}).get("precision") or "fp32"
    return Scoring(folder_input_size(folder), str(precision), "auto")


def load_model_folder(folder: Path, device: torch.device | str,
                      input_size: int | None = None) -> torch.nn.Module:
    """A chexdino export (rebuilt in chexdino) or any other open_clip model folder."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise ChexdinoError(f"{folder} has no {CONFIG_FILE}: not an open_clip model folder")
    if "chexdino" in json.loads((folder / CONFIG_FILE).read_text()):
        return load_exported(folder, device)
    return load_open_clip_folder(folder, device, input_size)



# chexdino checkpoints


def load_checkpoint_model(path: Path, device: torch.device) -> ChexDino:
    """Rebuild a trained model from a chexdino checkpoint (weights-only load); the model
    carries the image normalisation it was trained with as ``model.normalize`` (checkpoints
    written before ``train.normalize`` existed were all trained with ``clip``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ckpt["model_config"], load_weights=False)
    model.load_state_dict(ckpt["model"])
    model.normalize = str(ckpt.get("normalize", "clip"))
    return model.to(device).eval()


@dataclass(frozen=True)
class Scoring:
    """How a model is run at evaluation: the input size, precision and device of its training."""

    input_size: int
    precision: str
    device: str


SCORING_KEYS = ("input_size", "precision", "device")
"""The training settings every checkpoint records for evaluation (``train.<key>``)."""


def checkpoint_scoring(record: Mapping[str, Any], path: Path) -> Scoring:
    """The scoring settings a checkpoint records. Checkpoints written before they were
    recorded get config.yaml's ``train`` values, and the log says so."""
    missing = [k for k in SCORING_KEYS if k not in record]
    fallback = shipped_section("train")
    if missing:
        log.warning("%s records no %s (written by an older chexdino): using config.yaml's "
                    "train.%s", path, "/".join(missing),
                    ", train.".join(f"{k} = {fallback[k]}" for k in missing))
    return Scoring(**{k: record[k] if k in record else fallback[k] for k in SCORING_KEYS})


def read_scoring(path: Path) -> Scoring:
    """:func:`checkpoint_scoring` of a checkpoint file (memory-mapped: the weights stay unread)."""
    record = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return checkpoint_scoring(record, Path(path))


def checkpoint_settings(path: Path) -> dict[str, Any]:
    """What scoring new films with a checkpoint needs besides the weights: its
    :class:`Scoring`, the stored film size (``store_size``) and the validation prompts
    (``prompts``: ``evaluate``'s prompt keys). Checkpoints written before a key was recorded
    get config.yaml's value, and the log says so."""
    record = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    scoring = checkpoint_scoring(record, Path(path))
    shipped = {"store_size": shipped_section("images")["size"],
               "prompts": {k: shipped_section("evaluate")[k] for k in PROMPT_KEYS}}
    missing = [k for k in shipped if k not in record]
    if missing:
        log.warning("%s records no %s (written by an older chexdino): using config.yaml's",
                    path, "/".join(missing))
    return {**{k: record.get(k, shipped[k]) for k in shipped},
            "input_size": scoring.input_size, "precision": scoring.precision,
            "device": scoring.device}


def ensemble_members(checkpoints_json: Path, top_k: int) -> list[Path]:
    """The ``top_k`` best retained checkpoints by validation metric (best first)."""
    info = json.loads(Path(checkpoints_json).read_text())
    ranked = [Path(c["path"]) for c in info["ranked"]]
    if not ranked:
        return [Path(info["best"])]
    return ranked[:max(1, top_k)]



def load_model(path: Path, device: torch.device, input_size: int | None = None):
    """A chexdino checkpoint (``train/best.pt``), an exported model folder, or any open_clip
    model folder (``open_clip_config.json`` + weights; its preprocessing must be chexdino's)."""
    path = Path(path)
    if path.is_dir():
        return load_model_folder(path, device, input_size)
    if not path.is_file():
        raise ChexdinoError(f"--model: file not found: {path}")
    return load_checkpoint_model(path, device)


