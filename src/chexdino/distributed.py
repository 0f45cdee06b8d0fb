"""Data-parallel training over several GPUs (or CPU processes) at the same global batch.

Each of N ranks takes 1/N of the spec's 64-image batch. Image and text features are
all-gathered *with gradients*, so every rank computes the contrastive loss over the full
64×64 similarity matrix, as open_clip does (``gather_with_grad``, ``local_loss=False``):
rank r's parameter gradient is then N × the part flowing through its own samples, and DDP's
averaging makes it exactly the single-process gradient.

Processes are started by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK) or by ``srun``
(SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, with MASTER_ADDR / MASTER_PORT set).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (a single process by default)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env(env: dict[str, str] | None = None) -> World:
    """The launcher's rank variables: torchrun's first, then SLURM's (srun), else one process."""
    env = dict(os.environ) if env is None else env
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "MASTER_ADDR" in env:
        return World(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                     int(env.get("SLURM_LOCALID", 0)))
    return World()


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when launched with several processes; pick this rank's GPU."""
    world = world_from_env()
    if not world.distributed:
        return world, device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=world.rank, world_size=world.size)
    return world, device


def local_slice(world: World, batch_size: int) -> slice:
    """This rank's rows of a global batch (the global batch must split evenly)."""
    if batch_size % world.size:
        raise ValueError(f"train.batch_size {batch_size} does not split over {world.size} "
                         "processes")
    per_rank = batch_size // world.size
    return slice(world.rank * per_rank, (world.rank + 1) * per_rank)


def gather_with_grad(features: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate every rank's features in rank order; gradients flow back to their owner."""
    if not world.distributed:
        return features
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(features.contiguous()), dim=0)


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. a SLURM signal reached one)."""
    if not world.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
