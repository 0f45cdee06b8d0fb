"""Shared fixtures: shrunken models of the real architectures, offline; the one way the tests
run Snakemake (:func:`snakemake`) and point a run at the small demo data
(:func:`write_run_overlay`, :func:`run_configs`).

Tests marked ``slow`` run the workflow end to end (local, SLURM, the report in a browser,
killed and resumed processes, two trainer processes) or take over ~10 s otherwise:
``python -m pytest -m "not slow"`` (``make test-fast``) runs the rest, ``make test``
everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from chexdino import LABELS, h5store
from chexdino.config import shipped_section
from chexdino.tokens import _write_tokens, tokenize

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
BINDIR = Path(sys.executable).parent  # this environment's scripts: snakemake, chexdino

# config.yaml's values, for tests that call a stage's functions directly: signatures state no
# defaults of their own (the config is the one place they live).
MAX_FRAME_PIXELS = shipped_section("images")["max_frame_pixels"]
STORE_SIZE = shipped_section("images")["size"]
CONTEXT_LENGTH = shipped_section("reports")["context_length"]
NORMALIZE = shipped_section("train")["normalize"]
BOOTSTRAP = shipped_section("evaluate")["bootstrap"]
SEED = shipped_section("evaluate")["seed"]
UNCERTAIN = shipped_section("evaluate")["uncertain"]

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
    from chexdino.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("demo-data")
    summary = make_demo_dataset(root, n_studies=40, n_chexpert=16, seed=1,
                                image_long_side=(200, 300), workers=2)
    return root, summary


def demo_run_config(small_demo, results, tiny_training: bool = True) -> dict:
    """Config overlay running the workflow on ``small_demo`` into ``results``.

    With ``tiny_training``: 4 training steps at batch 8 and 32 px, 20 bootstrap resamples.
    """
    root, _ = small_demo
    m = root / "mimic"
    cfg = {
        "results": str(results),
        "mimic": {"image_root": str(m), "report_root": str(m), "image_suffix": ".dcm",
                  "split_csv": str(m / "mimic-cxr-2.0.0-split.csv.gz"),
                  "metadata_csv": str(m / "mimic-cxr-2.0.0-metadata.csv.gz"),
                  "chexpert_csv": str(m / "mimic-cxr-2.0.0-chexpert.csv.gz")},
        "chexpert_test": {"groundtruth_csv": str(root / "chexpert" / "groundtruth.csv"),
                          "image_root": str(root / "chexpert" / "CheXpert-v1.0")},
        # The extra zero-shot sets the demo config turns on: off here (tests/test_evalsets.py).
        "rsna_pneumonia": None, "siim_pneumothorax": None, "chexpert_5x200": None,
    }
    if tiny_training:
        cfg["train"] = {"steps": 4, "batch_size": 8, "val_every": 2, "ckpt_every": 2,
                        "log_every": 1, "input_size": 32}
        cfg["evaluate"] = {"bootstrap": 20}
    return cfg


def write_config(path: Path, settings: dict) -> Path:
    """One YAML config file (an overlay given after the others on ``--configfile``)."""
    path.write_text(yaml.safe_dump(settings))
    return path


def write_run_overlay(small_demo, results: Path, tiny_training: bool = True,
                      **changes: dict) -> Path:
    """The overlay of a run on ``small_demo`` into ``results`` (:func:`demo_run_config`),
    each of ``changes`` merged into its section; written beside ``results``."""
    cfg = demo_run_config(small_demo, results, tiny_training)
    for section, values in changes.items():
        cfg.setdefault(section, {}).update(values)
    results.mkdir(parents=True, exist_ok=True)
    return write_config(results.parent / f"{results.name}.overlay.yaml", cfg)


def run_configs(overlay: Path) -> list[str]:
    """``--configfile`` arguments of a demo run: config.yaml, the demo config, the overlay."""
    return ["--configfile", "config.yaml", "tests/demo/config.yaml", str(overlay)]


def snakemake(*args: str, check: bool = True, cores: int | None = 2, env: dict | None = None,
              timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run this environment's ``snakemake`` in the repository, output and errors together in
    ``.stdout``.

    ``env`` defaults to this process's with the environment's folder first on PATH (as
    ``make`` runs it); HF_HUB_OFFLINE=1 always. Past ``timeout`` seconds Snakemake is stopped
    with SIGINT (it then cancels its SLURM jobs and exits cleanly) and the test fails; with
    ``check`` a failed run fails the test with the end of its output.
    """
    if env is None:
        env = dict(os.environ, PATH=f"{BINDIR}{os.pathsep}{os.environ['PATH']}")
    env = dict(env, HF_HUB_OFFLINE="1")
    cmd = [str(BINDIR / "snakemake"), *(["--cores", str(cores)] if cores else []), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} ran past {timeout} s:\n{out[-8000:]}") from None
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out[-10000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


WORDS = ["cardiomegaly", "pleural effusion", "edema", "consolidation", "atelectasis"]


def build_tiny_store(tmp_path):
    """40 train + 16 validation 64x64 films whose bright square position matches the text."""
    rng = np.random.default_rng(0)
    n = 56
    images = rng.integers(0, 60, size=(n, 64, 64), dtype=np.uint8)
    kinds = rng.integers(0, len(WORDS), size=n)
    for i, k in enumerate(kinds):
        images[i, 10 * k:10 * k + 12, 10:50] = 230
    meta = pd.DataFrame({
        "dicom_id": [f"d{i}" for i in range(n)], "study_id": [f"s{i}" for i in range(n)],
        "subject_id": [f"p{i}" for i in range(n)],
        "split": ["train"] * 40 + ["validate"] * 16, "view": "PA",
        "source_rows": 64, "source_cols": 64,
    })
    for j, lab in enumerate(LABELS):
        meta[lab] = np.where(kinds == (j % 5), 1.0, 0.0) if lab in (
            "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion") else np.nan
    cxr = tmp_path / "cxr.h5"
    h5store.write_store(cxr, images, meta, 64)
    texts = [WORDS[k] for k in kinds]
    tokens = tmp_path / "tokens.h5"
    has_text = np.ones(n, dtype=bool)
    has_text[5] = False  # a training row without text is never used
    _write_tokens(tokens, tokenize(texts, context_length=CONTEXT_LENGTH).numpy().astype(np.int32),
                  has_text, meta["dicom_id"],
                  pd.Series(["impression"] * n))
    return cxr, tokens


@pytest.fixture
def tiny_store(tmp_path):
    return build_tiny_store(tmp_path)


def synthetic_scores(n: int = 300, n_labels: int = 6, seed: int = 1, ties: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities correlated with targets; some NaN (excluded) targets; rounded for ties."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, n_labels)) < 0.3).astype(float)
    targets[rng.random((n, n_labels)) < 0.1] = np.nan
    probs = 1 / (1 + np.exp(-(np.nan_to_num(targets) * 1.2 + rng.normal(size=(n, n_labels)))))
    if ties:
        probs = np.round(probs, 2)
    return probs, targets
