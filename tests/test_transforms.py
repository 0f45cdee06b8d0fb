"""Batched GPU-style transforms against torchvision's reference transforms (on CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from chexdino.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    eval_transform,
    sample_crop_boxes,
    train_transform,
)
from conftest import NORMALIZE


def smooth_images(n: int, size: int = 320, seed: int = 0) -> torch.Tensor:
    """Chest-film-like smooth uint8 images (gradients and blobs, no aliasing-prone noise)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                            indexing="ij")
    out = []
    for _ in range(n):
        cx, cy, r = (torch.rand(3, generator=g) * torch.tensor([1.0, 1.0, 0.5])).tolist()
        img = 0.5 + 0.3 * xx * cx - 0.2 * yy * cy
        img = img + 0.4 * torch.exp(-((xx - cx + 0.5) ** 2 + (yy - cy + 0.5) ** 2) / (r + 0.1))
        out.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.stack(out)


def reference_val(images: torch.Tensor, size: int) -> torch.Tensor:
    ref = v2.Compose([
        v2.ToDtype(torch.float32, scale=True),
        v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.Normalize(CLIP_MEAN, CLIP_STD),
    ])
    return torch.stack([ref(img.unsqueeze(0).expand(3, -1, -1)) for img in images])


def test_eval_transform_equals_torchvision_resize_normalize():
    images = smooth_images(4)
    ours = eval_transform(images, 224, normalize=NORMALIZE)
    ref = reference_val(images, 224)
    assert ours.shape == (4, 3, 224, 224)
    assert (ours - ref).abs().max().item() < 0.02  # clamping to [0, 1] is the only difference


def test_crop_boxes_follow_random_resized_crop_rule():
    cfg = AugmentConfig(224, (0.9, 1.0), hflip=0.5, normalize="clip")
    boxes = sample_crop_boxes(4000, 320, 320, cfg, torch.Generator().manual_seed(1))
    top, left, h, w = boxes.T
    area = h * w / (320 * 320)
    assert area.min() >= 0.88 and area.max() <= 1.0
    ratio = w / h
    assert ratio.min() >= 3 / 4 - 0.02 and ratio.max() <= 4 / 3 + 0.02
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 320).all() and (left + w <= 320).all()
    # Compare the distribution with torchvision's own get_params on the same image size.
    torch.manual_seed(1)
    ref = np.array([_tv_params() for _ in range(4000)])
    ref_area = ref[:, 2] * ref[:, 3] / (320 * 320)
    assert abs(area.mean().item() - ref_area.mean()) < 0.005
    assert abs(area.std().item() - ref_area.std()) < 0.005


def _tv_params():
    from torchvision.transforms import RandomResizedCrop

    return RandomResizedCrop.get_params(torch.empty(1, 320, 320), [0.9, 1.0],
                                        [3 / 4, 4 / 3])


def test_full_crop_without_flip_is_a_plain_resize():
    images = smooth_images(3)
    cfg = AugmentConfig(224, (1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, normalize="clip")
    ours = train_transform(images, cfg, torch.Generator().manual_seed(0))
    ref = reference_val(images, 224)
    # grid_sample's bicubic has no antialias filter; on smooth films the two agree closely.
    assert (ours - ref).abs().mean().item() < 0.01


def test_flip_mirrors_exactly():
    images = smooth_images(3)
    keep = AugmentConfig(224, (1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, normalize="clip")
    flip = AugmentConfig(224, (1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=1.0, normalize="clip")
    a = train_transform(images, keep, torch.Generator().manual_seed(0))
    b = train_transform(images, flip, torch.Generator().manual_seed(0))
    assert torch.allclose(a.flip(-1), b, atol=1e-5)


def test_train_statistics_match_torchvision_pipeline():
    """Per-image mean and std after augmentation match torchvision's spec transform."""
    images = smooth_images(64, seed=3)
    cfg = AugmentConfig(224, (0.9, 1.0), hflip=0.5, normalize="clip")
    ours = train_transform(images, cfg, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ref_t = v2.Compose([
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomResizedCrop(224, scale=(0.9, 1.0),
                             interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.Normalize(CLIP_MEAN, CLIP_STD),
    ])
    ref = torch.stack([ref_t(img.unsqueeze(0).expand(3, -1, -1)) for img in images])
    assert ours.shape == ref.shape
    for c in range(3):
        assert ours[:, c].mean().item() == pytest.approx(ref[:, c].mean().item(), abs=0.03)
        assert ours[:, c].std().item() == pytest.approx(ref[:, c].std().item(), rel=0.03)
    # Augmentations differ per sample: no two crops of the same image are identical.
    same = train_transform(images[:1].expand(8, -1, -1), cfg, torch.Generator().manual_seed(5))
    assert not torch.allclose(same[0], same[1])


def test_same_generator_seed_same_output():
    images = smooth_images(4)
    cfg = AugmentConfig(96, (0.9, 1.0), hflip=0.5, normalize="clip")
    a = train_transform(images, cfg, torch.Generator().manual_seed(7))
    b = train_transform(images, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert math.isfinite(a.sum().item())


@pytest.mark.parametrize(("normalize", "mean", "std"),
                         [("clip", CLIP_MEAN, CLIP_STD), ("imagenet", IMAGENET_MEAN, IMAGENET_STD)])
def test_normalisation_is_the_named_one_in_training_and_evaluation(normalize, mean, std):
    """train.normalize: the same mean/std in the training and the evaluation transform."""
    images = smooth_images(4, size=64)
    evaluated = eval_transform(images, 64, normalize)
    reference = v2.Normalize(mean, std)(images.unsqueeze(1).expand(-1, 3, -1, -1) / 255.0)
    assert (evaluated - reference).abs().max().item() < 1e-5  # same size: no resize
    plain = AugmentConfig(64, (1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, normalize=normalize)
    trained = train_transform(images, plain, torch.Generator().manual_seed(0))
    assert (trained - reference).abs().max().item() < 1e-4  # a full crop is the identity


def test_unknown_normalisation_names_the_key():
    with pytest.raises(ValueError, match="train.normalize: 'imagenet21k'"):
        eval_transform(smooth_images(1, size=32), 32, "imagenet21k")
