"""``train.cpu_isa`` / ``train.cpu_threads``: the demo's train and evaluate commands give the
same bits whatever instruction sets and core count the machine offers.

This development machine has AVX2 and no AVX-512, so "another CPU" is emulated with what
torch lets a process choose: ATen's generic kernels instead of AVX2, oneDNN held to SSE4.1 and
one thread, against AVX2 and two threads. Unpinned, the two give different weights.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
import yaml

from chexdino.cpu_kernels import ISA_ENVIRONMENT, pin_environment
from chexdino.errors import ChexdinoError
from conftest import BINDIR, REPO, TINY_MODEL

MACHINES = {
    # A CPU whose libraries pick other kernels and which has one core ...
    "generic-1-core": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    # ... and one that runs its widest kernels (here AVX2) on two.
    "avx2-2-cores": {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "2"},
}
"""What differs between two machines, as environment variables the libraries read."""


def demo_train_section(**over) -> dict:
    """The demo's ``train:`` section (tests/demo/config.yaml), shrunk to 4 steps at 32 px."""
    train = yaml.safe_load((REPO / "tests" / "demo" / "config.yaml").read_text())["train"]
    train.update(steps=4, batch_size=8, input_size=32, warmup_steps=1, val_every=2,
                 ckpt_every=2, log_every=1, val_max_images=16, data_on_device="host", **over)
    return train


def chexdino(*args: str, env: dict[str, str]) -> None:
    cmd = [str(BINDIR / "chexdino"), *args]
    base = {k: v for k, v in os.environ.items()
            if k not in {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR",
                         "OMP_NUM_THREADS", "MKL_NUM_THREADS"}}
    proc = subprocess.run(cmd, cwd=REPO, env={**base, **env}, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-6000:]}"


def train_and_evaluate(store, out, machine: str, evaluate: bool = True, **train_over):
    """The train rule's command, then the evaluate rule's, on ``machine``; returns the
    weights of best.pt and the bytes of the scorecard (None without ``evaluate``)."""
    cxr, tokens = store
    env = MACHINES[machine]
    chexdino("train", "--cxr", str(cxr), "--tokens", str(tokens), "--out-dir", str(out),
             "--model", json.dumps(TINY_MODEL),
             "--train", json.dumps(demo_train_section(**train_over)), "--evaluate", "{}",
             env=env)
    weights = torch.load(out / "best.pt", weights_only=True)["model"]
    if not evaluate:
        return weights, None
    scorecard = out / "eval"
    labels = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    chexdino("evaluate", "--model", str(out / "best.pt"), "--cxr", str(cxr), "--split",
             "validate", "--evaluate", json.dumps({"labels": labels, "bootstrap": 20}),
             "--out-dir", str(scorecard), env=env)
    return weights, {name: (scorecard / name).read_bytes()
                     for name in ("auroc.csv", "probabilities.csv")}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pinned_demo_gives_the_same_bits_on_other_kernels_and_core_counts(tiny_store, tmp_path):
    runs = {m: train_and_evaluate(tiny_store, tmp_path / m, m) for m in MACHINES}
    (w1, card1), (w2, card2) = runs.values()
    assert same_weights(w1, w2)
    assert card1 == card2  # AUROCs, intervals and every probability, byte for byte
    checkpoints = json.loads((tmp_path / "avx2-2-cores" / "checkpoints.json").read_text())
    assert checkpoints["training_path"]["cpu_capability"] == "AVX2"

    # The control: the same two machines unpinned train different weights.
    native = [train_and_evaluate(tiny_store, tmp_path / f"native-{m}", m, evaluate=False,
                                 cpu_isa="native", cpu_threads=0)[0] for m in MACHINES]
    assert not same_weights(*native)


def test_the_pin_overrides_what_the_machine_sets():
    environ = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "OMP_NUM_THREADS": "16"}
    pinned = pin_environment("avx2", 2, environ)
    assert environ == {**ISA_ENVIRONMENT["avx2"], "OMP_NUM_THREADS": "2",
                       "MKL_NUM_THREADS": "2"} == pinned
    untouched = {"ATEN_CPU_CAPABILITY": "avx512"}
    assert pin_environment("native", 0, untouched) == {}
    assert untouched == {"ATEN_CPU_CAPABILITY": "avx512"}
    with pytest.raises(ChexdinoError, match="cpu_isa"):
        pin_environment("avx512", 0, {})
