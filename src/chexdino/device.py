"""Where a model computes and at what precision, shared by training, evaluation and prediction."""

from __future__ import annotations

import contextlib

import torch


def pick_device(name: str) -> torch.device:
    """``auto`` means the GPU when there is one; the CPU otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on the GPU when asked; a no-op context otherwise."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
