"""Data-parallel training on CPU (gloo, 2 processes) equals one process at the same batch."""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from chexdino.config import ModelConfig, PromptConfig, TrainConfig
from chexdino.distributed import (
    DataParallelOptions,
    World,
    descendants,
    gather_rows,
    local_slice,
    rank_share,
    world_from_env,
)
from chexdino.train import Trainer
from test_train import make_trainer, train_cfg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(args["cxr"], args["tokens"], args["out"],
                          ModelConfig.from_section(args["model"]),
                          TrainConfig.from_section(args["train"]), PromptConfig.from_section(),
                          parallel=DataParallelOptions(strategy=args.get("strategy", "ddp")))
    if args["mode"] == "grads":
        trainer.model.train()
        loss = trainer.train_step(0)
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()
                 if p.grad is not None}
        # train_step already stepped; report the gradients it used and the global loss.
        torch.save({"loss": loss, "grads": grads}, Path(args["out"]) / f"grads{rank}.pt")
        from chexdino.distributed import shutdown

        shutdown(trainer.world)
    else:
        trainer.run()


def spawn(world: int, args: dict) -> None:
    mp.spawn(_worker, args=(world, free_port(), args), nprocs=world, join=True)


def base_args(store, out, model_cfg, **train_over) -> dict:
    cxr, tokens = store
    return {"cxr": cxr, "tokens": tokens, "out": out, "model": model_cfg,
            "train": train_cfg(**train_over)}


def test_world_from_env_reads_torchrun_then_slurm():
    assert world_from_env({}) == World()
    assert world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == World(1, 2, 1)
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
             "MASTER_ADDR": "node1"}
    assert world_from_env(slurm) == World(3, 4, 1)
    assert local_slice(World(1, 2), 64) == slice(32, 64)
    with pytest.raises(ValueError, match="does not split over 3"):
        local_slice(World(0, 3), 64)


@pytest.mark.slow  # two trainer processes: 13-20 s each
@pytest.mark.parametrize("strategy", ["ddp", "flat"])
def test_two_process_gradients_equal_one_process(tiny_store, tmp_path, tiny_model_cfg,
                                                 strategy):
    """Global batch 8 as 2 x 4 with gathered features: same loss, same gradients, whether
    DDP's reducer or one flat all-reduce averages them."""
    one = make_trainer(tiny_store, tmp_path / "one", tiny_model_cfg)
    one.model.train()
    loss_one = one.train_step(0)
    grads_one = {n: p.grad for n, p in one.model.named_parameters() if p.grad is not None}
    (tmp_path / "two").mkdir()
    spawn(2, {**base_args(tiny_store, tmp_path / "two", tiny_model_cfg), "mode": "grads",
              "strategy": strategy})
    for rank in (0, 1):
        got = torch.load(tmp_path / "two" / f"grads{rank}.pt", weights_only=True)
        assert torch.allclose(got["loss"], loss_one, atol=1e-6)
        assert set(got["grads"]) == set(grads_one)
        for name, grad in grads_one.items():
            assert torch.allclose(got["grads"][name], grad, atol=1e-6, rtol=1e-4), name


@pytest.mark.slow
def test_compiled_two_process_step_equals_the_eager_one(tiny_store, tmp_path, tiny_model_cfg):
    """torch.compile around the DDP model and the gradient-carrying all-gather (inductor on
    CPU, gloo) gives the eager step's loss and gradients: the multi-GPU benchmark's compiled
    path is sound before any GPU time is spent on it."""
    results = {}
    for mode in ("eager", "compiled"):
        out = tmp_path / mode
        out.mkdir()
        spawn(2, {**base_args(tiny_store, out, tiny_model_cfg, compile=mode == "compiled"),
                  "mode": "grads"})
        results[mode] = [torch.load(out / f"grads{rank}.pt", weights_only=True)
                         for rank in (0, 1)]
    for eager, compiled in zip(results["eager"], results["compiled"], strict=True):
        assert torch.allclose(compiled["loss"], eager["loss"], atol=1e-5)
        assert set(compiled["grads"]) == set(eager["grads"])
        for name, grad in eager["grads"].items():
            assert torch.allclose(compiled["grads"][name], grad, atol=1e-4, rtol=1e-3), name


@pytest.mark.slow  # two trainer processes: 13-20 s each
def test_two_process_run_and_resume_across_world_sizes(tiny_store, tmp_path, tiny_model_cfg):
    """A 2-process run checkpoints; 1 process resumes it; weights match a 1-process run.
    The 2-process validations (each process embeds half of the 16 films) score what one
    process scores."""
    reference = make_trainer(tiny_store, tmp_path / "ref", tiny_model_cfg, steps=6,
                             ckpt_every=2, val_every=2)
    reference.run()
    spawn(2, {**base_args(tiny_store, tmp_path / "mixed", tiny_model_cfg, steps=6),
              "mode": "run", "train": train_cfg(steps=6, ckpt_every=2, val_every=2)})
    # Drop the final checkpoint so that one process must resume at step 4.
    ckpts = sorted((tmp_path / "mixed" / "checkpoints").glob("step_*.pt"))
    assert ckpts[-1].name == "step_0000006.pt"
    ckpts[-1].unlink()
    resumed = make_trainer(tiny_store, tmp_path / "mixed", tiny_model_cfg, steps=6,
                           ckpt_every=2, val_every=2)
    resumed.run()
    assert resumed.step == 6
    for name, value in reference.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[name], value, atol=1e-5), name
    ref_val = pd.read_csv(tmp_path / "ref" / "validation.csv")
    mixed_val = pd.read_csv(tmp_path / "mixed" / "validation.csv")
    assert list(mixed_val["step"]) == list(ref_val["step"]) == [2, 4, 6]
    for column in ("val_loss", "val_auroc"):
        assert np.allclose(mixed_val[column], ref_val[column], atol=1e-5), column


def _train_command(cxr: Path, tokens: Path, out: Path, model: dict, **train) -> list[str]:
    import json
    import sys

    return [str(Path(sys.executable).parent / "chexdino"), "train", "--cxr", str(cxr),
            "--tokens", str(tokens), "--out-dir", str(out), "--model", json.dumps(model),
            "--train", json.dumps(train_cfg(**train)), "--evaluate", "{}", "--nproc", "2"]


def _launcher_env() -> dict[str, str]:
    import sys

    bin_dir = Path(sys.executable).parent
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                OMP_NUM_THREADS="1")


@pytest.mark.slow  # two trainer processes: 13-20 s each
def test_cli_relaunches_under_torchrun(tiny_store, tmp_path, tiny_model_cfg):
    """``chexdino train --nproc 2`` (what the rule runs for gpu=2) trains with 2 processes."""
    import subprocess

    cmd = _train_command(*tiny_store, tmp_path / "cli", tiny_model_cfg, steps=2, val_every=2,
                         ckpt_every=2)
    result = subprocess.run(cmd, env=_launcher_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training process 1 of 2" in result.stderr
    assert "training process 2 of 2" in result.stderr
    best = torch.load(tmp_path / "cli" / "best.pt", weights_only=True)
    assert best["step"] == 2


def test_descendants_finds_grandchildren_in_other_sessions():
    """torchrun starts each trainer in a session of its own: found through /proc, not the
    process group."""
    import subprocess
    import sys
    import time

    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)'], start_new_session=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while len(descendants(parent.pid)) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = descendants(parent.pid)
        assert os.getsid(child) != os.getsid(parent.pid)
        assert descendants(child) == []
    finally:
        for pid in [*descendants(parent.pid), parent.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        parent.wait()


@pytest.mark.slow  # two trainer processes under torchrun: ~20 s
def test_cli_with_two_processes_stops_on_usr1_with_status_75(tiny_store, tmp_path,
                                                            tiny_model_cfg):
    """USR1 sent to the ``chexdino train --nproc 2`` process alone (as a user or a batch
    script would) reaches both trainers, which checkpoint at the same step; the command
    exits 75, the status the profile's resubmission expects (torchrun alone exits 1)."""
    import json
    import signal
    import subprocess
    import time

    from chexdino.train import RESUME_EXIT_CODE, STOP_RECORD

    out = tmp_path / "cli"
    cmd = _train_command(*tiny_store, out, tiny_model_cfg, steps=100_000, val_every=100_000,
                         ckpt_every=2, log_every=1)
    log_file = tmp_path / "train.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen(cmd, env=_launcher_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not list((out / "checkpoints").glob("step_*.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGUSR1)
        status = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:  # a failed check: stop the launcher and both trainers
            for pid in [*descendants(proc.pid), proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    text = log_file.read_text()
    assert status == RESUME_EXIT_CODE, text[-3000:]
    assert text.count("received signal 10") >= 2, text[-3000:]  # both trainers
    stopped = json.loads((out / STOP_RECORD).read_text())["step"]
    assert f"stopping at step {stopped} for a resubmission" in text
    assert (out / "checkpoints" / f"step_{stopped:07d}.pt").exists()


@pytest.mark.slow  # torchrun start-up and two failing processes: ~10 s
def test_cli_with_two_processes_keeps_a_crash_a_crash(tiny_store, tmp_path, tiny_model_cfg):
    """A stop record left by an earlier run must not turn a failure into "resubmit me"."""
    import subprocess

    from chexdino.train import RESUME_EXIT_CODE, STOP_RECORD

    out = tmp_path / "cli"
    out.mkdir()
    (out / STOP_RECORD).write_text('{"step": 4, "signal": 10}')
    cmd = _train_command(*tiny_store, out, tiny_model_cfg, steps=2, batch_size=10_000)
    result = subprocess.run(cmd, env=_launcher_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode not in (0, RESUME_EXIT_CODE), result.stderr[-3000:]
    assert "is larger than the" in result.stderr


def _gather_worker(rank: int, world: int, port: int, n_rows: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    me = World(rank, world)
    share = rank_share(n_rows, me)
    rows = torch.from_numpy(share).float()[:, None] * torch.tensor([[1.0, -1.0]])
    torch.save(gather_rows(rows, me, n_rows), Path(out) / f"rows{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("n_rows", [7, 2, 1])
def test_rank_shares_cover_every_row_once_and_gather_in_order(tmp_path, n_rows):
    """3 ranks split 7, 2 or 1 rows (uneven, some empty); every rank gets all rows in order."""
    shares = [rank_share(n_rows, World(r, 3)) for r in range(3)]
    assert np.array_equal(np.concatenate(shares), np.arange(n_rows))
    mp.spawn(_gather_worker, args=(3, free_port(), n_rows, str(tmp_path)), nprocs=3, join=True)
    want = torch.arange(n_rows).float()[:, None] * torch.tensor([[1.0, -1.0]])
    for rank in range(3):
        assert torch.equal(torch.load(tmp_path / f"rows{rank}.pt"), want)


def test_launch_command_picks_torchrun_on_one_node_and_srun_across_nodes():
    from chexdino.distributed import TASK_MARK, launch_command
    from chexdino.errors import ChexdinoError
    from chexdino.slurm_check import processes_per_node

    argv = ["train", "--cxr", "c.h5", "--nproc", "4", "--nodes", "2"]
    assert launch_command(1, 1, argv, {}) is None
    torchrun = launch_command(4, 1, argv, {})
    assert torchrun[:3] == ["torchrun", "--standalone", "--nproc_per_node=4"]
    assert "--nproc" not in torchrun and "--nodes" not in torchrun
    with pytest.raises(ChexdinoError, match="2 nodes needs a SLURM job"):
        launch_command(4, 2, argv, {})
    srun = launch_command(4, 2, argv, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1",
                                       "SLURM_JOB_GPUS": "0,1,2,3"})
    assert srun[0] == "srun" and "--nodes=2" in srun and "--ntasks=8" in srun
    assert "--ntasks-per-node=4" in srun and "--gpus-per-task=1" in srun
    assert srun[-3:] == ["train", "--cxr", "c.h5"]
    # the processes srun (or torchrun) started train themselves
    assert launch_command(4, 2, argv, {"SLURM_JOB_ID": "7", TASK_MARK: "1"}) is None
    assert launch_command(4, 1, argv, {"WORLD_SIZE": "4"}) is None
    assert launch_command(2, 1, argv, {"SLURM_NTASKS": "2", "SLURM_PROCID": "1"}) is None
    # processes per node: a gres count is per node, --gpus counts the whole job
    assert processes_per_node(0, "gpu:a100:4", 2) == 4
    assert processes_per_node(8, "", 2) == 4
    assert processes_per_node(0, "", 1) == 1  # train.device: cpu drops the GPU request


def test_slurm_rendezvous_without_scontrol_takes_the_first_node(monkeypatch):
    from chexdino.distributed import slurm_rendezvous

    monkeypatch.setenv("PATH", "/nonexistent")
    address, port = slurm_rendezvous({"SLURM_JOB_NODELIST": "gpu7,gpu9", "SLURM_JOB_ID": "123"})
    assert (address, port) == ("gpu7", str(29500 + 123))
