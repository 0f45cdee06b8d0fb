"""Shared fixtures: shrunken models of the real architectures, offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_MODEL = {
    "embed_dim": 32,
    "init_temperature": 0.07,
    "max_logit_scale": 100.0,
    "vision": {
        "name": "vit_base_patch16_dinov3",
        "weights": None,
        "random_init": True,
        "overrides": {"embed_dim": 48, "depth": 2, "num_heads": 3, "init_values": 1.0},
    },
    "text": {
        "name": "ViT-B-32-quickgelu",
        "weights": None,
        "random_init": True,
        "overrides": {"width": 32, "heads": 2, "layers": 1},
    },
}


@pytest.fixture
def tiny_model_cfg() -> dict:
    import copy

    return copy.deepcopy(TINY_MODEL)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """A small synthetic MIMIC-CXR (40 studies, 16 CheXpert-test studies), written once."""
    from chexdino.demo_data import make_demo_dataset

    root = tmp_path_factory.mktemp("demo-data")
    summary = make_demo_dataset(root, n_studies=40, n_chexpert=16, seed=1,
                                image_long_side=(200, 300), workers=2)
    return root, summary
