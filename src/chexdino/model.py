"""The CLIP-style model: timm DINOv3 image tower + linear projection, open_clip CLIP text tower.

Shrunken test and demo models are the same classes built with smaller ``overrides``
(timm's and open_clip's own config keys), so every code path is the real one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from chexdino.config import ModelConfig, TextConfig, VisionConfig
from chexdino.errors import WeightsError

log = logging.getLogger(__name__)

__all__ = ["ChexDino", "ModelConfig", "TextConfig", "VisionConfig", "build_model",
           "contrastive_loss"]


class ChexDino(nn.Module):
    """Image and text encoders mapping into one L2-normalised ``embed_dim`` space."""

    def __init__(self, cfg: ModelConfig, load_weights: bool = True):
        super().__init__()
        self.cfg = cfg
        self.visual = build_vision_tower(cfg.vision, load_weights=load_weights)
        self.visual_proj = nn.Linear(self.visual.num_features, cfg.embed_dim)
        self.text = build_text_tower(cfg.text, cfg.embed_dim, load_weights=load_weights)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    @property
    def context_length(self) -> int:
        return int(self.text.context_length)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, D) unit vectors (DINOv3 CLS token, projected)."""
        return F.normalize(self.visual_proj(self.visual(images)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 77) CLIP BPE tokens -> (B, D) unit vectors (CLIP's own 512-d text space)."""
        return F.normalize(self.text(tokens), dim=-1)

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """CLIP keeps the logit scale in [0, log(100)] after every optimiser step."""
        self.logit_scale.clamp_(0, math.log(self.cfg.max_logit_scale))


def contrastive_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE: mean of image->text and text->image cross-entropy."""
    logits = logit_scale * image_emb.float() @ text_emb.float().t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def build_model(cfg: ModelConfig | dict[str, Any], load_weights: bool = True) -> ChexDino:
    """Build the model; pretrained weights come only from the local files in ``cfg``."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_section(cfg)
    return ChexDino(cfg, load_weights=load_weights)


def build_vision_tower(cfg: VisionConfig, load_weights: bool = True) -> nn.Module:
    """timm DINOv3 with CLS-token pooling and no classifier head (768-d for ViT-B/16)."""
    import timm

    kwargs = {"num_classes": 0, "global_pool": "token", **cfg.overrides}
    model = timm.create_model(cfg.name, pretrained=False, **kwargs)
    patchify_as_matmul(model)
    if load_weights:
        if cfg.weights:
            load_vision_weights(model, Path(cfg.weights))
        else:
            _require_random_init("model.vision", cfg.random_init)
    return model


class PatchwiseConv2d(nn.Conv2d):
    """A patch-embedding convolution (kernel = stride, no padding) computed as one matrix
    product over the image's patches. Same parameters, state-dict keys and result (up to
    summation order) as ``nn.Conv2d``. On an H200, cuDNN's convolution and its layout
    conversions made the training step 3.6% slower (docs/performance.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        height, width = x.shape[-2:]
        if x.dim() != 4 or height % kh or width % kw:
            return super().forward(x)
        batch, channels = x.shape[:2]
        rows, cols = height // kh, width // kw
        patches = (x.reshape(batch, channels, rows, kh, cols, kw)
                   .permute(0, 2, 4, 1, 3, 5)
                   .reshape(batch * rows * cols, channels * kh * kw))
        out = F.linear(patches, self.weight.reshape(self.out_channels, -1), self.bias)
        return out.reshape(batch, rows, cols, self.out_channels).permute(0, 3, 1, 2)


def patchify_as_matmul(model: nn.Module) -> int:
    """Turn every non-overlapping, unpadded ``nn.Conv2d`` (a ViT's patch embedding) into a
    :class:`PatchwiseConv2d` in place; returns how many were changed."""
    changed = 0
    for module in model.modules():
        if (type(module) is nn.Conv2d and module.kernel_size == module.stride
                and module.padding == (0, 0) and module.dilation == (1, 1)
                and module.groups == 1 and module.padding_mode == "zeros"):
            module.__class__ = PatchwiseConv2d
            changed += 1
    return changed


def build_text_tower(cfg: TextConfig, embed_dim: int, load_weights: bool = True) -> nn.Module:
    """open_clip's CLIP text transformer from the named config (QuickGELU where it says so)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, _build_text_tower

    named = open_clip.get_model_config(cfg.name)
    if named is None:
        raise WeightsError(f"model.text.name: unknown open_clip model '{cfg.name}'")
    text_cfg = CLIPTextCfg(**{**named["text_cfg"], **cfg.overrides})
    tower = _build_text_tower(embed_dim, text_cfg, quick_gelu=named.get("quick_gelu", False))
    if load_weights:
        if cfg.weights:
            load_text_weights(tower, Path(cfg.weights))
        else:
            _require_random_init("model.text", cfg.random_init)
    return tower


def _require_random_init(key: str, allowed: bool) -> None:
    if not allowed:
        raise WeightsError(
            f"{key}.weights is not set and {key}.random_init is false: give a local weights "
            "file, or set random_init: true to train from scratch on purpose"
        )
    msg = f"{key}: RANDOM INITIALISATION (no weights file; {key}.random_init is true)"
    warnings.warn(msg, stacklevel=3)
    log.warning(msg)


def read_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    """Read a weights file (.safetensors, .pth/.bin/.pt state dict or TorchScript) safely."""
    return _read_weights(path, key)[0]


def _read_weights(path: Path, key: str) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict, and whether the file is TorchScript (the format OpenAI ships CLIP in)."""
    if not path.is_file():
        raise WeightsError(f"{key}: weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), False
        except Exception as exc:  # rewrap with the file name
            raise WeightsError(f"{key}: cannot read safetensors file {path}: {exc}") from exc
    torchscript = False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # maybe TorchScript (OpenAI's CLIP .pt)
        try:
            obj = torch.jit.load(str(path), map_location="cpu").state_dict()
            torchscript = True
        except Exception:
            raise WeightsError(
                f"{key}: {path} is neither a weights-only torch checkpoint nor TorchScript: {exc}"
            ) from exc
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{key}: {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}, torchscript


def load_vision_weights(model: nn.Module, path: Path) -> None:
    """Meta's DINOv3 .pth (converted by timm's eva.checkpoint_filter_fn) or a timm file; strict."""
    state = read_state_dict(path, "model.vision.weights")
    if "storage_tokens" in state:  # Meta's DINOv3 layout (timm calls them reg_token)
        _check_attention_biases(state, model, path)
        state = _convert_meta_dinov3(state, model, path)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    _load_strict(model, state, "model.vision.weights", path)


def _check_attention_biases(state: dict[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """Refuse a Meta file whose attention biases the configured timm model would drop.

    Meta's files hold ``qkv.bias`` (masked by ``qkv.bias_mask``: the key part is always 0).
    timm's converter keeps the query and value parts only if the model has ``q_bias``
    (``vit_base_patch16_dinov3_qkvb``) and drops them silently otherwise, which is right only
    when they are all zero, as in Meta's distilled ViT-B/16.
    """
    own = model.state_dict()
    for name, bias in state.items():
        if not name.endswith("attn.qkv.bias"):
            continue
        mask = state.get(name + "_mask")
        effective = bias if mask is None else bias * (mask != 0).to(bias.dtype)
        query, key, value = effective.float().chunk(3, dim=-1)
        if name.replace("qkv.bias", "q_bias") not in own and (query.any() or value.any()):
            raise WeightsError(
                f"model.vision.weights: {path} has non-zero attention biases ({name}) that "
                f"model.vision.name '{_model_name(model)}' has no place for, so they would be "
                "dropped; set model.vision.name: vit_base_patch16_dinov3_qkvb"
            )
        if key.any():
            raise WeightsError(
                f"model.vision.weights: {path} has non-zero key biases ({name}); timm's DINOv3 "
                "holds none, so they would be dropped"
            )


def _model_name(model: nn.Module) -> str:
    return str(getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__))


def _convert_meta_dinov3(
    state: dict[str, torch.Tensor], model: nn.Module, path: Path
) -> dict[str, torch.Tensor]:
    """timm's converter, with what it prints (one line per block for the zero ``qkv.bias``
    that a model without q_bias skips) kept out of the job log and summarised in one line."""
    from timm.models.eva import checkpoint_filter_fn

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        converted = checkpoint_filter_fn(state, model)
    lines = [line for line in printed.getvalue().splitlines() if line.strip()]
    skipped = [line for line in lines if "q_bias" in line]
    if skipped:
        log.info("model.vision.weights: timm's converter skipped %d zero attention biases of %s "
                 "(the model has no qkv bias): %s", len(skipped), path, skipped[0])
    for line in sorted(set(lines) - set(skipped)):
        log.info("model.vision.weights: timm's converter: %s", line)
    return converted


TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.")


def load_text_weights(tower: nn.Module, path: Path) -> None:
    """Text-tower weights from an OpenAI CLIP (TorchScript) or open_clip checkpoint; strict."""
    state, torchscript = _read_weights(path, "model.text.weights")
    if torchscript or OPENAI_ONLY_KEYS & set(state):
        _require_quick_gelu(tower, path)
    if any(k.startswith("text.") for k in state):  # open_clip CustomTextCLIP layout
        state = {k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")}
    keep = {k: v for k, v in state.items() if k.startswith(TEXT_KEYS) or k == "text_projection"}
    _load_strict(tower, keep, "model.text.weights", path)


OPENAI_ONLY_KEYS = frozenset({"input_resolution", "context_length", "vocab_size"})
"""Entries of OpenAI's CLIP state dicts that open_clip's own checkpoints never hold."""


def _require_quick_gelu(tower: nn.Module, path: Path) -> None:
    """OpenAI's CLIP was trained with QuickGELU: its weights under GELU load without any
    shape error but compute other features, so refuse a tower without QuickGELU."""
    from open_clip.transformer import QuickGELU

    if not any(isinstance(m, QuickGELU) for m in tower.modules()):
        raise WeightsError(
            f"model.text.weights: {path} is an OpenAI CLIP file (trained with QuickGELU), but "
            "model.text.name builds a GELU text tower; use the -quickgelu model of the same "
            "name (e.g. model.text.name: ViT-B-32-quickgelu)"
        )


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], key: str, path: Path) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)} in the model"
        for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape
    ]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"{key}: {path} does not match the configured architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(shapes)} with other shapes"
            + (f" (e.g. {'; '.join(shapes[:3])})" if shapes else "")
        )
    module.load_state_dict(state, strict=True)
    log.info("%s: loaded %d tensors from %s", key, len(state), path)
