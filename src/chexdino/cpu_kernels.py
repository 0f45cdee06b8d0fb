"""The same bits from a CPU job on every x86 machine: pinned instruction sets and threads.

torch's CPU kernels come from three libraries, and each picks its code for the machine it
runs on: ATen's vectorised kernels (softmax, layer norm, reductions, element-wise) use the
widest instruction set there is (AVX2, AVX-512), oneDNN's JIT kernels (convolutions, some
element-wise ops) likewise, and MKL's matrix products take a branch per CPU vendor and
instruction set. Each choice sums in another order, and so does each thread count. 500 demo
steps from random initialisation carry these last-bit differences into the weights (reported:
0.813 on an AVX-512 Xeon against the 0.846 of an AVX2 EPYC, same code; README "The demo").

``train.cpu_isa: avx2`` pins all three before torch runs its first kernel (the variables are
read then, not at ``import torch``), ``train.cpu_threads`` fixes the thread count, and
deterministic algorithms are switched on. ``portable`` also takes MKL's cross-vendor branch
(slower). Training records both settings in every checkpoint, so evaluation and retrieval of
that checkpoint run pinned too. ``native`` (the default) leaves the libraries their own
choice: the fastest kernels, and the last bits depend on the CPU.

Nothing here imports torch at module level: the command line calls :func:`pin_cpu` before the
stage modules are imported (a kernel run at import would fix the choice too early).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from chexdino.errors import ChexdinoError

log = logging.getLogger(__name__)

ISA_ENVIRONMENT: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {
        # ATen's vectorised kernels: AVX2 (not AVX-512) on every x86 CPU that has it.
        "ATEN_CPU_CAPABILITY": "avx2",
        # oneDNN's JIT kernels: at most AVX2 (no AVX-512, no AMX).
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        # MKL's matrix products: its AVX2 branch in reproducible mode, documented to give the
        # same results on every Intel CPU with AVX2; on other CPUs MKL takes its automatic
        # branch instead (on this project's AMD EPYC: the same bits as unpinned).
        "MKL_CBWR": "AVX2",
    },
    "portable": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        # MKL's one branch documented to agree on Intel and non-Intel CPUs (SSE2): measured
        # here, 2.6x the demo's step time (docs in config.yaml).
        "MKL_CBWR": "COMPATIBLE",
    },
}
"""The environment each ``train.cpu_isa`` value sets before torch runs a kernel."""

ISA_CAPABILITY = {"avx2": "AVX2", "portable": "AVX2"}
"""What ``torch.backends.cpu.get_cpu_capability()`` reports once a pin has taken effect."""

KEYS = ("cpu_isa", "cpu_threads")
"""The ``train:`` keys of the pin, recorded in every checkpoint for evaluation."""


def pin_environment(isa: str, threads: int,
                    environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set (overriding what is there) the variables that pin ``isa`` and ``threads``;
    returns them. ``native`` with 0 threads sets nothing."""
    if isa not in ISA_ENVIRONMENT:
        raise ChexdinoError(f"train.cpu_isa: '{isa}' is not one of {sorted(ISA_ENVIRONMENT)}")
    wanted = dict(ISA_ENVIRONMENT[isa])
    if threads:
        wanted.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    environ.update(wanted)
    return wanted


def pin_cpu(isa: str, threads: int, device: str) -> dict[str, Any]:
    """Pin this process's CPU kernels; call before torch runs its first kernel.

    The instruction sets are pinned whatever ``device`` is (on a GPU job only its few host
    operations are affected); threads and deterministic algorithms only when ``device``
    resolves to the CPU. Returns what is in force, for the log and the provenance record.
    Raises if torch had already chosen its kernels (the pin would silently not hold).
    """
    if isa == "native" and not threads:
        return {"cpu_isa": "native", "cpu_threads": 0}
    pin_environment(isa, threads)
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    expected = ISA_CAPABILITY.get(isa)
    if expected and capability != expected:
        raise ChexdinoError(
            f"train.cpu_isa = {isa}: torch's CPU kernels run {capability} (a CPU without "
            f"{expected}, or torch ran a kernel before the pin was set)")
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if on_cpu and threads:
        torch.set_num_threads(threads)
        # Settable only before the first inter-op task; no sum is split across its threads.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    if on_cpu and isa != "native":
        torch.use_deterministic_algorithms(True)
        if hasattr(torch.backends.mkldnn, "deterministic"):
            torch.backends.mkldnn.deterministic = True
    state = {"cpu_isa": isa, "cpu_threads": threads, "aten": capability,
             "threads": torch.get_num_threads(), "deterministic": on_cpu and isa != "native",
             **{k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR") if k in os.environ}}
    log.info("CPU kernels pinned: %s", state)
    return state


def pin_for_training(train_section: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`pin_cpu` as the ``train:`` section asks (keys it leaves out: config.yaml's)."""
    from chexdino.config import shipped_section

    train = {**shipped_section("train"), **train_section}
    return pin_cpu(train["cpu_isa"], int(train["cpu_threads"]), train["device"])


def pin_for_checkpoint(path: Path, device: str | None = None) -> dict[str, Any]:
    """:func:`pin_cpu` as the checkpoint at ``path`` records it (training's pin, so that
    scoring runs the kernels training ran). A model folder, or a checkpoint written before
    the pin was recorded, runs native."""
    path = Path(path)
    if not path.is_file():
        return pin_cpu("native", 0, device or "auto")
    import torch

    # Memory-mapped: the weights stay unread, and loading runs no compute kernel.
    record = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return pin_cpu(str(record.get("cpu_isa", "native")), int(record.get("cpu_threads", 0)),
                   device or str(record.get("device", "auto")))
