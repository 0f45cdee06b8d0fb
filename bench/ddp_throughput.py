"""Data-parallel scaling: img/s of the real Trainer at several global batch sizes.

Run once per process count; under torchrun every rank trains its share of each global batch
and rank 0 prints the table:

    python bench/ddp_throughput.py --batches 32,64 --out $OUT              # one GPU
    torchrun --standalone --nproc_per_node 2 bench/ddp_throughput.py --batches 64,128 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chexdino.distributed import barrier, shutdown
from chexdino.train import Trainer
from synthetic import make_store

FULL_MODEL = {"vision": {"random_init": True}, "text": {"random_init": True}}


def measure(cxr: Path, tokens: Path, work: Path, batch: int, warmup: int, steps: int,
            compile_mode: str | None) -> tuple[float, Trainer]:
    cfg = {"steps": 10**6, "batch_size": batch, "data_on_device": "gpu", "precision": "bf16",
           "compile": compile_mode is not None, "compile_mode": compile_mode or "default"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(cxr, tokens, work / f"b{batch}", FULL_MODEL, cfg, {"bootstrap": 0})
    for step in range(warmup):
        trainer.train_step(step)
    torch.cuda.synchronize()
    barrier(trainer.world)
    t0 = time.perf_counter()
    for step in range(warmup, warmup + steps):
        trainer.train_step(step)
    torch.cuda.synchronize()
    barrier(trainer.world)
    return steps * batch / (time.perf_counter() - t0), trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/chexdino-ddp"))
    p.add_argument("--batches", default="32,64")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--compile-mode", default=None)
    args = p.parse_args()
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    store = args.work / "store"
    if rank == 0 and not (store / "tokens.h5").exists():
        make_store(store, 8_000, 128)
    if world > 1:
        torch.distributed.init_process_group("nccl")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        barrier_world = torch.distributed.barrier
        barrier_world()
    rows = {}
    trainer = None
    for batch in map(int, args.batches.split(",")):
        ips, trainer = measure(store / "cxr.h5", store / "tokens.h5", args.work, batch,
                               args.warmup, args.steps, args.compile_mode)
        rows[f"{world} GPU, global batch {batch}"] = ips
        if rank == 0:
            print(f"{world} GPU(s), global batch {batch} ({batch // world} per GPU): "
                  f"{ips:.0f} img/s", flush=True)
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"ddp_{world}gpu.json"
        out.write_text(json.dumps({"card": torch.cuda.get_device_name(), "world": world,
                                   "compile_mode": args.compile_mode, "img_per_s": rows},
                                  indent=2))
    if trainer is not None:
        shutdown(trainer.world)


if __name__ == "__main__":
    main()
