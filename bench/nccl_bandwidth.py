"""All-reduce bandwidth between the GPUs of one machine, at the size of the model's gradient.

    torchrun --standalone --nproc_per_node 2 bench/nccl_bandwidth.py
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def main() -> None:
    rank = int(os.environ["RANK"])
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl")
    if rank == 0:
        print("peer access 0->1:", torch.cuda.can_device_access_peer(0, 1), flush=True)
    for mb in (1, 25, 150, 600):
        x = torch.randn(mb * 2**18, device="cuda")  # fp32: 4 bytes each
        for _ in range(3):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(10):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / 10
        if rank == 0:
            print(f"all-reduce {mb:>4} MB fp32: {seconds * 1e3:7.2f} ms, "
                  f"{mb / 1024 / seconds:6.1f} GB/s algbw", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
