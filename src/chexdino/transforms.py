"""Batched image transforms that run where the data lives (GPU when training on one).

The training transform is SPEC §3's RandomResizedCrop(224, scale=(0.9, 1.0), bicubic) +
RandomHorizontalFlip(0.5) + Normalize(CLIP mean/std), done for a whole uint8 batch in one
``grid_sample`` call: per-sample crop boxes are drawn with torchvision's own rule, and the
crop, resize and flip become one affine sampling grid. Validation is Resize(224, bicubic).

``train.normalize`` picks the mean/std: ``clip`` (the spec) or ``imagenet`` (what DINOv3's
released weights were trained with). Training, validation and evaluation use the same one:
it is recorded in every checkpoint and evaluation reads it from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = {"clip": (CLIP_MEAN, CLIP_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
"""``train.normalize`` -> per-channel (mean, std)."""


@dataclass(frozen=True)
class AugmentConfig:
    """The spec's augmentation settings: ``train.input_size``, ``train.crop_scale``,
    ``train.hflip`` and ``train.normalize`` (their values are config.yaml's), and
    RandomResizedCrop's aspect-ratio range, which is not a setting."""

    input_size: int
    crop_scale: tuple[float, float]
    hflip: float
    normalize: str
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)


def normalize_gray(x: torch.Tensor, normalize: str) -> torch.Tensor:
    """(B, 1, H, W) floats in [0, 1] -> (B, 3, H, W) with the named per-channel mean/std."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"train.normalize: '{normalize}' is not one of {sorted(NORMALIZATIONS)}")
    mean_values, std_values = NORMALIZATIONS[normalize]
    mean = torch.tensor(mean_values, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std_values, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def eval_transform(
    images: torch.Tensor, input_size: int, normalize: str
) -> torch.Tensor:
    """uint8 (B, H, W) -> normalised float (B, 3, S, S): Resize(S, bicubic), as at validation."""
    x = images.unsqueeze(1).float().div_(255.0)
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bicubic", antialias=True)
    return normalize_gray(x.clamp_(0.0, 1.0), normalize)


def sample_crop_boxes(
    batch: int, height: int, width: int, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """(B, 4) boxes (top, left, h, w) drawn like torchvision's RandomResizedCrop.get_params.

    Ten attempts per sample at a random area fraction and log-uniform aspect ratio; samples
    with no valid attempt fall back to the central crop clamped to the ratio range.
    """
    area = height * width
    tries = 10
    scale = torch.empty(batch, tries).uniform_(*cfg.crop_scale, generator=generator)
    log_ratio = torch.empty(batch, tries).uniform_(
        math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator=generator
    )
    ratio = log_ratio.exp()
    target = area * scale
    w = torch.sqrt(target * ratio).round()
    h = torch.sqrt(target / ratio).round()
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((batch,), -1))
    u = torch.rand(batch, 2, generator=generator)
    rows = torch.arange(batch)
    h_sel = h[rows, first.clamp(min=0)]
    w_sel = w[rows, first.clamp(min=0)]
    top = torch.floor(u[:, 0] * (height - h_sel + 1))
    left = torch.floor(u[:, 1] * (width - w_sel + 1))
    fallback = first < 0
    if fallback.any():
        in_ratio = width / height
        if in_ratio < cfg.crop_ratio[0]:
            fw, fh = width, round(width / cfg.crop_ratio[0])
        elif in_ratio > cfg.crop_ratio[1]:
            fh, fw = height, round(height * cfg.crop_ratio[1])
        else:
            fw, fh = width, height
        h_sel[fallback], w_sel[fallback] = float(fh), float(fw)
        top[fallback], left[fallback] = float((height - fh) // 2), float((width - fw) // 2)
    return torch.stack([top, left, h_sel, w_sel], dim=1)


def crop_flip_theta(
    boxes: torch.Tensor, flip: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """(B, 2, 3) affine maps from output pixels into each (possibly mirrored) crop box."""
    top, left, h, w = boxes.unbind(1)
    # Normalised coordinates (align_corners=False): pixel edges at -1 and 1.
    cx = (left + w / 2) / width * 2 - 1
    cy = (top + h / 2) / height * 2 - 1
    sx = w / width * torch.where(flip, -1.0, 1.0)
    sy = h / height
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)


def augment_params(
    batch: int, height: int, width: int, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """(B, 2, 3) crop-and-flip maps for one batch, drawn on the CPU from ``generator``."""
    boxes = sample_crop_boxes(batch, height, width, cfg, generator)
    flip = torch.rand(batch, generator=generator) < cfg.hflip
    return crop_flip_theta(boxes, flip, height, width)


def apply_augment(
    images: torch.Tensor, theta: torch.Tensor, input_size: int, normalize: str
) -> torch.Tensor:
    """uint8 (B, H, W) + maps (B, 2, 3) on one device -> normalised float (B, 3, S, S)."""
    grid = F.affine_grid(theta, [images.shape[0], 1, input_size, input_size],
                         align_corners=False)
    x = images.unsqueeze(1).float().div(255.0)
    x = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return normalize_gray(x.clamp(0.0, 1.0), normalize)


def train_transform(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """uint8 (B, H, W) on any device -> augmented, normalised float (B, 3, S, S).

    Random parameters come from ``generator`` (a CPU generator seeded per step), so a resumed
    run draws exactly the same crops and flips as an uninterrupted one. Only the (B, 2, 3)
    parameters cross to the device; the sampling grid is built there.
    """
    batch, height, width = images.shape
    theta = augment_params(batch, height, width, cfg, generator)
    return apply_augment(images, theta.to(images.device, non_blocking=True), cfg.input_size,
                         cfg.normalize)
