"""A full-length training run through the real command the train rule runs.

Writes a learnable synthetic store, then runs ``chexdino train`` with config.yaml's train,
model-size and prompt settings (random initialisation, nothing downloaded):

    python bench/full_run.py --work /tmp/full --nproc 2 --stop-after 330   # stops (USR1)
    python bench/full_run.py --work /tmp/full --nproc 2                    # resumes, ends

``--stop-after`` sends SLURM's wall-time signal (USR1) to the training processes after that
many seconds, as the cluster would; the second command resumes from the checkpoint.
Prints the wall time of each command; the run's metrics.csv / validation.csv stay in --work.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from chexdino.distributed import descendants  # noqa: E402


def rule_arguments(work: Path, store: Path, nproc: int, steps: int = 0) -> list[str]:
    """The train rule's command line, its JSON arguments built from config.yaml (``steps``,
    when given, replaces ``train.steps`` for a short check)."""
    from chexdino.config import PROMPT_KEYS

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    if steps:
        config["train"]["steps"] = steps
    model = config["model"]
    model["vision"].update(random_init=True, weights=None)
    model["text"].update(random_init=True, weights=None)
    prompts = {k: config["evaluate"][k] for k in PROMPT_KEYS}
    return [sys.executable, "-m", "chexdino.cli", "train", "--cxr", str(store / "cxr.h5"),
            "--tokens", str(store / "tokens.h5"), "--out-dir", str(work / "train"),
            "--model", json.dumps(model), "--train", json.dumps(config["train"]),
            "--evaluate", json.dumps(prompts), "--nproc", str(nproc)]


def signal_masks(pid: int) -> str:
    """The process's blocked / ignored / caught signal masks (USR1 is bit 10: 0x200)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "gone"
    return " ".join(line.replace("\t", "") for line in status
                    if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def signal_trainers(launcher: subprocess.Popen, nproc: int) -> None:
    """USR1 to the training processes, as SLURM sends it to the job step's tasks (under
    torchrun: the processes below it that run chexdino, not the launcher itself)."""
    pids = [launcher.pid] if nproc == 1 else [
        pid for pid in descendants(launcher.pid)
        if b"chexdino.cli" in _cmdline(pid)]
    for pid in pids:
        print(f"USR1 to {pid} ({signal_masks(pid)})", flush=True)
        os.kill(pid, signal.SIGUSR1)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--train-images", type=int, default=30_000)
    p.add_argument("--val-images", type=int, default=5_000)
    p.add_argument("--stop-after", type=float, default=0)
    p.add_argument("--steps", type=int, default=0, help="replace train.steps (0: keep)")
    args = p.parse_args()
    store = args.work / "store"
    if not (store / "tokens.h5").exists():
        from synthetic import make_store

        make_store(store, args.train_images, args.val_images)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    launcher = subprocess.Popen(rule_arguments(args.work, store, args.nproc, args.steps),
                                env=env)
    if args.stop_after:
        try:
            launcher.wait(timeout=args.stop_after)
        except subprocess.TimeoutExpired:
            signal_trainers(launcher, args.nproc)
    code = launcher.wait()
    print(f"chexdino train exited {code} after {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
