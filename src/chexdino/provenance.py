"""What produced each number: software versions, source revision, hardware, where a job ran.

Every job records :func:`environment` in an output it writes (they may run on other
machines than the report): the data stages in their stores (``cxr.h5``, whose gather also
keeps every image shard's record, and ``tokens.h5``), in ``dataset_summary.json`` or, for
the stages that write only tables, in a small JSON beside them; training in
``checkpoints.json`` and evaluation in ``summary.json``. :mod:`chexdino.run_summary` turns
those records into the report's provenance table.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from chexdino import __version__

DISTRIBUTIONS: tuple[str, ...] = (
    "torch", "torchvision", "timm", "open_clip_torch", "numpy", "h5py", "pandas",
    "scikit-learn", "pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg",
    "pylibjpeg-rle", "Pillow", "snakemake", "snakemake-executor-plugin-slurm",
)
"""Installed packages whose versions can change a result of this workflow."""


def package_versions(names: tuple[str, ...] = DISTRIBUTIONS) -> dict[str, str]:
    """Installed version of each distribution ("not installed" rather than an error)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def source_revision(root: Path | None = None) -> str:
    """Git commit of the chexdino source tree, with ``+dirty`` for uncommitted changes.

    ``unknown`` when the package was not installed from a git checkout (e.g. a wheel).
    """
    root = root or Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return "unknown"
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", "src",
                     "workflow", "Snakefile")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True, timeout=30).stdout.strip()


def hardware(device: Any = None) -> str:
    """The accelerator a job ran on (GPU model and count) or the CPU."""
    if device is not None and str(device).startswith("cuda") and _cuda_available():
        import torch

        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)} x {names[0]} (CUDA {torch.version.cuda})"
    return f"CPU: {_cpu_model()}, {os.cpu_count()} logical cores"


def _cuda_available() -> bool:
    """torch is imported only for a CUDA device: the CPU data stages do without it."""
    import torch

    return torch.cuda.is_available()


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model(device: Any = None) -> str:
    """The GPU a job computed on, or ``none`` (a CPU job, or no GPU visible)."""
    if device is not None and str(device).startswith("cuda") and _cuda_available():
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return "none"


def executor() -> dict[str, str]:
    """Where the job ran: its SLURM job id, partition and node, or ``local``.

    SLURM sets these variables for every task of a job (the executor plugin's ``srun`` step
    included); outside SLURM the job id and partition read ``local``.
    """
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return {"executor": "local", "slurm_job_id": "local", "slurm_partition": "local",
                "node": node}
    return {"executor": "SLURM", "slurm_job_id": job,
            "slurm_partition": os.environ.get("SLURM_JOB_PARTITION", "unknown"), "node": node}


def environment(device: Any = None) -> dict[str, Any]:
    """Everything about the running job that a reader needs to reproduce its numbers."""
    return {
        "chexdino": __version__,
        "source_revision": source_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hardware": hardware(device),
        **executor(),
        "gpu": gpu_model(device),
        "packages": package_versions(),
    }


def write_job_record(path: Path) -> None:
    """This job's :func:`environment` as JSON, for stages whose other outputs are tables."""
    from chexdino.atomic import atomic_output

    with atomic_output(Path(path)) as tmp:
        Path(tmp).write_text(json.dumps({"environment": environment()}, indent=2) + "\n")
