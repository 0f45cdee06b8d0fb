"""Data-parallel scaling: img/s of the real Trainer's step at several global batch sizes.

Run once per process count; under torchrun every rank trains its share of each global batch
and rank 0 prints the table. ``--variants`` compares ways of averaging gradients (the DDP
bucket size in MB, and the all-gather of features: ``functional`` is traced into the compiled
step, ``legacy`` is the earlier ``torch.distributed.nn`` gather with DDP's defaults); the
fastest at the first batch size is then timed at the others. ``--profile`` writes a
torch.profiler table of a few steps of each variant (rank 0) under ``--out``.

    python bench/ddp_throughput.py --batches 32,64 --out $OUT              # one GPU
    torchrun --standalone --nproc_per_node 2 bench/ddp_throughput.py --batches 64,128 \\
        --variants legacy,b100,b250,b1000 --profile --out $OUT
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chexdino.config import ModelConfig, PromptConfig, TrainConfig
from chexdino.distributed import DataParallelOptions, barrier
from chexdino.train import Trainer
from synthetic import make_store

FULL_MODEL = ModelConfig.from_section({"vision": {"weights": None, "random_init": True},
                                        "text": {"weights": None, "random_init": True}})


def variant_options(name: str) -> DataParallelOptions:
    """``legacy``: DDP's defaults and the graph-breaking gather; ``bN``: DDP with N MB
    buckets; ``flat``: no DDP, one all-reduce of all gradients after the backward pass."""
    if name == "legacy":
        return DataParallelOptions(strategy="ddp", bucket_cap_mb=25,
                                   gradient_as_bucket_view=False, broadcast_buffers=True,
                                   functional_gather=False)
    if name == "flat":
        return DataParallelOptions(strategy="flat")
    return DataParallelOptions(strategy="ddp", bucket_cap_mb=float(name.lstrip("b")))


def make_trainer(store: Path, work: Path, batch: int, compile_mode: str | None,
                 options: DataParallelOptions) -> Trainer:
    cfg = {"steps": 10**6, "batch_size": batch, "data_on_device": "gpu", "precision": "bf16",
           "compile": compile_mode is not None, "compile_mode": compile_mode or "default"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Trainer(store / "cxr.h5", store / "tokens.h5", work / f"b{batch}", FULL_MODEL,
                       TrainConfig.from_section(cfg), PromptConfig.from_section(),
                       parallel=options)


def timed_steps(trainer: Trainer, first: int, steps: int) -> float:
    torch.cuda.synchronize()
    barrier(trainer.world)
    t0 = time.perf_counter()
    for step in range(first, first + steps):
        trainer.train_step(step)
    torch.cuda.synchronize()
    barrier(trainer.world)
    return time.perf_counter() - t0


def profile_table(trainer: Trainer, first: int, steps: int = 5) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        wall = timed_steps(trainer, first, steps) / steps
    events = prof.key_averages()
    busy = sum(e.self_device_time_total for e in events) / 1e3 / steps
    table = events.table(sort_by="self_device_time_total", row_limit=25,
                         max_name_column_width=60)
    return f"wall {wall * 1e3:.1f} ms/step, GPU busy {busy:.1f} ms/step\n{table}"


def measure(store: Path, work: Path, batch: int, args, variant: str,
            out: Path, rank: int) -> float:
    trainer = make_trainer(store, work, batch, args.compile_mode, variant_options(variant))
    warm = time.perf_counter()
    for step in range(args.warmup):
        trainer.train_step(step)
    torch.cuda.synchronize()
    warm = time.perf_counter() - warm
    seconds = timed_steps(trainer, args.warmup, args.steps)
    ips = args.steps * batch / seconds
    if args.profile and trainer.world.distributed:
        table = profile_table(trainer, args.warmup + args.steps)
        if rank == 0:
            (out / f"profile_{trainer.world.size}gpu_{variant}_b{batch}.txt").write_text(table)
            print(table.splitlines()[0], flush=True)
    if rank == 0:
        print(f"{trainer.world.size} GPU(s) {variant:>7}, global batch {batch} "
              f"({batch // trainer.world.size} per GPU): {ips:.0f} img/s, "
              f"{seconds / args.steps * 1e3:.1f} ms/step, warm-up {warm:.0f} s", flush=True)
    del trainer
    gc.collect()
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    return ips


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/chexdino-ddp"))
    p.add_argument("--batches", default="32,64")
    p.add_argument("--variants", default="b100")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--compile-mode", default="reduce-overhead")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    if args.compile_mode == "none":
        args.compile_mode = None
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    store = args.work / "store"
    args.out.mkdir(parents=True, exist_ok=True)
    if world > 1:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.distributed.init_process_group("nccl")
    if rank == 0 and not (store / "tokens.h5").exists():
        make_store(store, 8_000, 128)
    if world > 1:
        torch.distributed.barrier()
    batches = [int(b) for b in args.batches.split(",")]
    variants = args.variants.split(",")
    rows: dict[str, float] = {}
    for variant in variants:
        rows[f"{variant} @ {batches[0]}"] = measure(store, args.work, batches[0], args, variant,
                                                    args.out, rank)
    best = max(variants, key=lambda v: rows[f"{v} @ {batches[0]}"])
    for batch in batches[1:]:
        rows[f"{best} @ {batch}"] = measure(store, args.work, batch, args, best, args.out, rank)
    if rank == 0:
        (args.out / f"ddp_{world}gpu.json").write_text(json.dumps(
            {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "world": world,
             "compile_mode": args.compile_mode, "img_per_s": rows}, indent=2))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
