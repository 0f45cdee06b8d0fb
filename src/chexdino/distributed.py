"""Data-parallel training over several GPUs (or CPU processes) at the same global batch.

Each of N ranks takes 1/N of the spec's 64-image batch. Image and text features are
all-gathered *with gradients*, so every rank computes the contrastive loss over the full
64×64 similarity matrix, as open_clip does (``gather_with_grad``, ``local_loss=False``):
rank r's parameter gradient is then N × the part flowing through its own samples, and DDP's
averaging makes it exactly the single-process gradient.

Processes are started by ``torchrun`` on one node (RANK / WORLD_SIZE / LOCAL_RANK) or by
``srun`` with one task per GPU on one node or several (SLURM_PROCID / SLURM_NTASKS /
SLURM_LOCALID; the rendezvous address is the job's first node, as SLURM names it).
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


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
    """The launcher's rank variables: torchrun's first, then SLURM's (one ``srun`` task per
    GPU, on one node or several), else one process."""
    env = dict(os.environ) if env is None else env
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env and (
            "MASTER_ADDR" in env or "SLURM_JOB_NODELIST" in env):
        return World(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                     int(env.get("SLURM_LOCALID", 0)))
    return World()


TASK_MARK = "CHEXDINO_TRAINING_TASK"
"""Set in the environment of processes that ``launch_command``'s ``srun`` starts."""


def launch_command(nproc: int, nodes: int, argv: Sequence[str], env: Mapping[str, str]
                   ) -> list[str] | None:
    """The command that starts ``nodes`` x ``nproc`` training processes running ``argv``, or
    None when this process is to train itself (one process, or already one of several).

    One node: ``torchrun --standalone``. Several nodes (a SLURM job with ``nodes`` > 1):
    ``srun`` with one task per GPU, inside the job's allocation; ranks then come from
    SLURM's variables and the rendezvous from the node list (``slurm_rendezvous``).
    """
    if nproc * nodes <= 1 or "WORLD_SIZE" in env or env.get(TASK_MARK):
        return None
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return None  # srun already started one task per GPU
    args = list(argv)
    for flag in ("--nproc", "--nodes"):
        if flag in args:
            i = args.index(flag)
            del args[i:i + 2]
    if nodes == 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "chexdino.cli",
                *args]
    if "SLURM_JOB_ID" not in env:
        from chexdino.errors import ChexdinoError

        raise ChexdinoError(f"training on {nodes} nodes needs a SLURM job (srun starts one "
                            "process per GPU on each node); without SLURM use one node")
    gpus = ["--gpus-per-task=1"] if env.get("SLURM_JOB_GPUS") or env.get(
        "SLURM_GPUS_ON_NODE") else []
    return ["srun", "--overlap", f"--nodes={nodes}", f"--ntasks={nodes * nproc}",
            f"--ntasks-per-node={nproc}", *gpus, "--kill-on-bad-exit=1",
            f"--export=ALL,{TASK_MARK}=1", sys.executable, "-m", "chexdino.cli", *args]


def descendants(pid: int) -> list[int]:
    """Every process started, directly or not, by ``pid`` (from /proc; none without it)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended while we looked
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def supervise(command: Sequence[str]) -> int:
    """Run a launcher (torchrun or srun) and return its exit status, passing on signals.

    The launcher starts with USR1 ignored, so that only the trainers react to SLURM's
    wall-time warning (torchrun would die of it). USR1 and TERM sent to this process alone
    are passed to every process below it: torchrun starts each trainer in a session of its
    own, out of reach of a signal to its process group. Ctrl-C reaches torchrun, which stops
    the trainers; this process then waits for it.
    """
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # inherited by the launcher
    try:
        proc = subprocess.Popen(list(command))
    finally:  # None: a handler Python did not install; the default is the nearest
        signal.signal(signal.SIGUSR1, previous if previous is not None else signal.SIG_DFL)

    def forward(signum: int, _frame) -> None:
        if proc.returncode is not None:
            return  # reaped: its pid may belong to another process by now
        for pid in [proc.pid, *descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    handled = {signal.SIGUSR1: forward, signal.SIGTERM: forward,
               signal.SIGINT: lambda *_: None}
    before = {sig: signal.signal(sig, handler) for sig, handler in handled.items()}
    try:
        status = proc.wait()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    return 128 - status if status < 0 else status


def slurm_rendezvous(env: dict[str, str]) -> tuple[str, str]:
    """MASTER_ADDR and MASTER_PORT for ``srun`` tasks: the address SLURM itself uses for the
    first node of the job (its NodeAddr) and a port derived from the job id, so every task
    of the job computes the same pair with no exchange."""
    first = env["SLURM_JOB_NODELIST"]
    try:
        names = subprocess.run(["scontrol", "show", "hostnames", first], capture_output=True,
                               text=True, check=True, timeout=30).stdout.split()
        first = names[0]
        node = subprocess.run(["scontrol", "-o", "show", "node", first], capture_output=True,
                              text=True, check=True, timeout=30).stdout
        found = re.search(r"\bNodeAddr=(\S+)", node)
        address = found.group(1) if found else first
    except (OSError, subprocess.SubprocessError, IndexError):
        address = re.split(r"[\[,]", first, maxsplit=1)[0]  # plain "node7" lists
    return address, str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 20000)


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when launched with several processes; pick this rank's GPU."""
    world = world_from_env()
    if not world.distributed:
        return world, device
    if "MASTER_ADDR" not in os.environ and "SLURM_JOB_NODELIST" in os.environ:
        address, port = slurm_rendezvous(dict(os.environ))
        os.environ.update(MASTER_ADDR=address, MASTER_PORT=os.environ.get("MASTER_PORT", port))
    if device.type == "cuda":  # srun --gpus-per-task=1 leaves each task one visible GPU
        device = torch.device("cuda", world.local_rank % torch.cuda.device_count())
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


@dataclass(frozen=True)
class DataParallelOptions:
    """How gradients are averaged over ranks; the defaults are the fast path.

    ``strategy``: ``flat`` (one all-reduce of every gradient after the backward pass:
    3,129 img/s at global batch 64 on 2 x H200) or ``ddp`` (DDP's bucketed reducer:
    2,961 with one bucket in the same run; 1,318 with DDP's defaults in an earlier run).

    ``bucket_cap_mb``: DDP all-reduces gradients in buckets of this size while the backward
    pass still runs, and under ``torch.compile`` it splits the graph at bucket boundaries so
    that this overlap survives; few large buckets keep the CUDA graphs few and large.
    Traced into the compiled backward instead (bucketed all-reduces that overlap it, or one
    at its end), the averaging measured 2-6% slower than ``flat`` on 2 x H200: the
    all-reduce kernels slow the backward pass they overlap (``docs/performance.md``).
    ``broadcast_buffers`` is off: every rank builds the same buffers and none is trained, so
    the per-step broadcast DDP would otherwise issue is pure cost.
    """

    strategy: str = "flat"
    bucket_cap_mb: float = 25.0
    gradient_as_bucket_view: bool = True
    broadcast_buffers: bool = False
    functional_gather: bool = True


class FlatGradientMean:
    """Every gradient averaged over ranks in one all-reduce of one flat buffer.

    The alternative to DDP's per-bucket reducer: after the backward pass the gradients are
    copied into one persistent buffer (a few batched copy kernels), averaged in a single
    collective, and handed back to the parameters as views of it. No per-parameter host work
    runs between the backward graph and the collective.
    """

    def __init__(self, model: nn.Module, world: World):
        self.world = world
        self.params = [p for p in model.parameters() if p.requires_grad]
        first = self.params[0]
        self.flat = torch.empty(sum(p.numel() for p in self.params), dtype=first.dtype,
                                device=first.device)
        self.views = [v.view_as(p) for v, p in zip(
            self.flat.split([p.numel() for p in self.params]), self.params, strict=True)]
        self.average_in_collective = dist.get_backend() == "nccl"

    def __call__(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        torch.cat([g.reshape(-1) for g in grads], out=self.flat)
        if self.average_in_collective:
            dist.all_reduce(self.flat, op=dist.ReduceOp.AVG)
        else:  # gloo has no AVG
            dist.all_reduce(self.flat)
            self.flat.div_(self.world.size)
        for param, view in zip(self.params, self.views, strict=True):
            param.grad = view


def wrap_data_parallel(model: nn.Module, world: World, device: torch.device,
                       options: DataParallelOptions | None = None) -> nn.Module:
    """``model`` itself for one process (or the flat strategy), else DDP over the group."""
    options = options or DataParallelOptions()
    if not world.distributed or options.strategy == "flat":
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids,
                                   bucket_cap_mb=options.bucket_cap_mb,
                                   gradient_as_bucket_view=options.gradient_as_bucket_view,
                                   broadcast_buffers=options.broadcast_buffers)


def gather_with_grad(features: torch.Tensor, world: World, functional: bool = True
                     ) -> torch.Tensor:
    """Concatenate every rank's features in rank order; gradients flow back to their owner.

    The functional collective is traced by ``torch.compile`` into the step's graph (its
    backward is a sum reduce-scatter); ``torch.distributed.nn``'s autograd function would
    break the graph in two.
    """
    if not world.distributed:
        return features
    if functional:
        from torch.distributed import _functional_collectives as funcol

        # The same function under its newer name (torch >= 2.14 deprecates the older one).
        gather = getattr(funcol, "all_gather_single_autograd", None) or \
            funcol.all_gather_tensor_autograd
        return gather(features.contiguous(), gather_dim=0, group=dist.group.WORLD)
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(features.contiguous()), dim=0)


def rank_share(n_rows: int, world: World) -> np.ndarray:
    """This rank's contiguous share of ``n_rows`` rows (``np.array_split``: sizes differ by at
    most one), so N processes split a pass over a fixed set, such as validation, N ways."""
    return np.array_split(np.arange(n_rows), world.size)[world.rank]


def gather_rows(rows: torch.Tensor, world: World, n_rows: int) -> torch.Tensor:
    """Every rank's ``rank_share`` of ``n_rows`` rows, concatenated in rank order, on every
    rank: the result is the tensor one process computing all rows would hold."""
    if not world.distributed:
        return rows
    counts = [len(rank_share(n_rows, World(rank, world.size))) for rank in range(world.size)]
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[:len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


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
    """Leave the process group once every rank is done with it.

    With NCCL, CUDA graphs that captured a collective (the compiled step's feature
    all-gather) keep the communicator in use, and ``destroy_process_group`` then waits
    forever (pytorch/pytorch#115388; a 2 x H200 run hung 5 minutes after its last step). So
    the graphs are released first, and the communicators are aborted rather than drained:
    all ranks have passed the final barrier, so nothing is in flight.
    """
    if not (world.distributed and dist.is_initialized()):
        return
    nccl = dist.get_backend() == "nccl"
    if nccl:
        torch.cuda.synchronize()
    torch._dynamo.reset()  # frees the compiled step (and its CUDA graphs)
    gc.collect()
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    if nccl and abort is not None:
        abort()
        return
    dist.destroy_process_group()
