"""Fault injection on the real CLI: kill -9 and SLURM's signal mid-run, then rerun to finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from chexdino import h5store
from conftest import BINDIR, TINY_MODEL, build_tiny_store
from test_train import train_cfg

BIN = BINDIR  # this environment's chexdino
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


def demo_manifest(small_demo, tmp_path, repeat: int = 80) -> Path:
    """The small demo's frontal manifest, repeated so that a shard runs for a few seconds."""
    from chexdino.config import SelectConfig
    from chexdino.selection import select_mimic, write_manifest

    root, _ = small_demo
    m = root / "mimic"
    manifest, rejects = select_mimic(m / "mimic-cxr-2.0.0-split.csv.gz",
                                     m / "mimic-cxr-2.0.0-metadata.csv.gz",
                                     m / "mimic-cxr-2.0.0-chexpert.csv.gz", m, m, ".dcm",
                                     SelectConfig.from_section())
    import pandas as pd

    big = pd.concat([manifest] * repeat, ignore_index=True)
    path = tmp_path / "manifest.csv"
    write_manifest(big, rejects, path, tmp_path / "select_rejects.csv")
    return path


@pytest.mark.slow
def test_killed_shard_and_gather_leave_no_complete_looking_file(small_demo, tmp_path):
    manifest = demo_manifest(small_demo, tmp_path)
    shard, rejects = tmp_path / "shards" / "1-of-1.h5", tmp_path / "shards" / "1-of-1.csv"
    cmd = [str(BIN / "chexdino"), "images", "--manifest", str(manifest), "--shard", "1-of-1",
           "--images", "{}", "--threads", "1", "--out", str(shard), "--rejects", str(rejects)]
    proc = subprocess.Popen(cmd, env=env(), stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # imports take ~2 s; 80 copies of the demo films take far longer to decode
    assert proc.poll() is None, "the shard finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not shard.exists() and not rejects.exists()
    rerun = subprocess.run(cmd, env=env(), capture_output=True, text=True)  # the rerun heals
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    n_kept = len(h5store.read_meta(shard))
    assert n_kept > 0

    out, copies = tmp_path / "cxr.h5", 4  # ~1.3 GB written: long enough to be caught mid-write
    gather = [str(BIN / "chexdino"), "gather", "--shards", *[str(shard)] * copies,
              "--shard-rejects", str(rejects), "--out", str(out),
              "--rejects", str(tmp_path / "image_rejects.csv")]
    proc = subprocess.Popen(gather, env=env(), stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".cxr.h5.tmp"
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    rerun = subprocess.run(gather, env=env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(h5store.read_meta(out)) == copies * n_kept
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "the killed writer's partial file was not reclaimed by the rerun"
    out.unlink()  # 1.3 GB; pytest keeps the last three runs' folders


def test_disk_full_gives_a_clear_error_and_no_output(tmp_path):
    """A 1 MiB tmpfs stands in for a full disk (root only)."""
    import numpy as np
    import pandas as pd

    from chexdino import LABELS

    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                                            str(mount)], capture_output=True).returncode:
        pytest.skip("needs root to mount a size-limited tmpfs")
    try:
        n = 40  # 40 x 320 x 320 bytes = 4 MB > 1 MiB
        meta = pd.DataFrame({"dicom_id": [f"d{i}" for i in range(n)], "study_id": "s",
                             "subject_id": "p", "split": "train", "view": "PA",
                             "source_rows": 320, "source_cols": 320})
        for lab in LABELS:
            meta[lab] = np.nan
        target = mount / "cxr.h5"
        with pytest.raises(OSError) as info:
            h5store.write_store(target, np.ones((n, 320, 320), np.uint8), meta, 320)
        assert "space" in str(info.value).lower() or info.value.errno == 28
        assert not target.exists()
        assert not list(mount.iterdir()), "a temporary file was left behind"
    finally:
        subprocess.run(["umount", str(mount)], check=False)
