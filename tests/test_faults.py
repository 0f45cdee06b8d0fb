"""Fault injection on the real CLI: kill -9 and SLURM's signal mid-run, then rerun to finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL, build_tiny_store
from test_train import train_cfg

BIN = Path(sys.executable).parent
RESUME_EXIT_CODE = 75


def train_command(store, out_dir: Path, model_cfg: dict, **over) -> list[str]:
    cxr, tokens = store
    cfg = train_cfg(steps=12, ckpt_every=2, val_every=4, log_every=1, **over)
    return [str(BIN / "chexdino"), "train", "--cxr", str(cxr), "--tokens", str(tokens),
            "--out-dir", str(out_dir), "--model", json.dumps(model_cfg),
            "--train", json.dumps(cfg), "--evaluate", "{}"]


def env() -> dict[str, str]:
    # One thread: the same float summation order in every process, so weights match bitwise.
    return dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")


def wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen, timeout: float = 120) -> Path:
    folder, pattern = path_glob
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found[-1]
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{pattern} did not appear")


def final_model(out_dir: Path) -> dict[str, torch.Tensor]:
    last = sorted((out_dir / "checkpoints").glob("step_*.pt"))[-1]
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["step"] == 12
    return ckpt["model"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_tiny_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def reference(store, tmp_path_factory):
    """An uninterrupted run's final weights (one per module: every fault test compares)."""
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(train_command(store, out, TINY_MODEL), env=env(), check=True,
                   capture_output=True)
    return final_model(out)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_kill_9_at_several_points_then_rerun(store, tmp_path, reference):
    """SIGKILL after the 4th and 8th-step checkpoints (and once mid-step); reruns finish."""
    out = tmp_path / "killed"
    cmd = train_command(store, out, TINY_MODEL)
    ckpts = out / "checkpoints"
    for pattern in ("step_0000004.pt", "step_0000008.pt", "step_00000[01][02468].pt"):
        proc = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True)
        wait_for((ckpts, pattern), proc)
        time.sleep(0.05)  # land somewhere inside the next step or checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # A killed write leaves at most a hidden temporary file, never a partial step_*.pt.
        for path in ckpts.glob("step_*.pt"):
            torch.load(path, weights_only=True)
    subprocess.run(cmd, env=env(), check=True, capture_output=True)
    assert_same(final_model(out), reference)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_slurm_signal_checkpoints_and_exits_for_resubmission(store, tmp_path, reference, sig):
    out = tmp_path / "signalled"
    cmd = train_command(store, out, TINY_MODEL)
    proc = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True)
    wait_for((out / "checkpoints", "step_0000002.pt"), proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == RESUME_EXIT_CODE, stderr[-2000:]
    assert "stopping at step" in stderr
    subprocess.run(cmd, env=env(), check=True, capture_output=True)
    assert_same(final_model(out), reference)


def test_malicious_checkpoint_is_not_unpickled(tiny_store, tmp_path, tiny_model_cfg):
    """Resume loads with weights_only=True: a pickle that runs code is skipped, not run."""
    from test_train import make_trainer

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    torch.save({"step": 3, "model": Evil()}, ckpts / "step_0000003.pt")
    trainer = make_trainer(tiny_store, tmp_path / "run", tiny_model_cfg)
    trainer.resume()
    assert trainer.step == 0 and not marker.exists()
