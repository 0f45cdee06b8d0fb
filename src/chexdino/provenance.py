"""What produced each number: software versions, source revision, hardware, and the run summary.

Every job records :func:`environment` in an output it writes (they may run on other
machines than the report): the data stages in their stores (``cxr.h5``, whose gather also
keeps every image shard's record, and ``tokens.h5``), in ``dataset_summary.json`` or, for
the stages that write only tables, in a small JSON beside them; training in
``checkpoints.json`` and evaluation in ``summary.json``. The ``run_summary`` stage turns
those records, the dataset counts and the headline AUROCs into the report's landing-page
summary and its provenance table.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import socket
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from chexdino import __version__

DISTRIBUTIONS: tuple[str, ...] = (
    "torch", "torchvision", "timm", "open_clip_torch", "numpy", "h5py", "pandas",
    "scikit-learn", "pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg",
    "pylibjpeg-rle", "Pillow", "snakemake", "snakemake-executor-plugin-slurm",
)
"""Installed packages whose versions can change a result of this workflow."""


PACKAGE_DIR = Path(__file__).resolve().parent


def module_closure(*modules: str) -> list[Path]:
    """Source files of the named chexdino modules and of every chexdino module they import.

    Rules declare these as inputs, so editing the code a stage runs reruns that stage (and,
    through its outputs, everything downstream). Imports inside functions count too; ``cli``
    is left out unless named, since it imports every stage to dispatch subcommands.
    """
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if not path.is_file():
            raise ValueError(f"chexdino has no module {name!r} ({path} not found)")
        seen.add(name)
        todo.extend(_imported_modules(path) - seen - {"cli"})
    return [_module_file(name) for name in sorted(seen)]


def _module_file(name: str) -> Path:
    """``a`` -> ``a.py``; ``pkg.b`` -> ``pkg/b.py``; a subpackage ``pkg`` -> ``pkg/__init__.py``."""
    base = PACKAGE_DIR.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_name(f"{base.name}.py")


def _imported_modules(path: Path) -> set[str]:
    """chexdino modules imported anywhere in ``path`` (``__init__`` for package attributes).

    A module of a subpackage brings the subpackage's ``__init__`` with it, as Python runs it.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "chexdino":
                continue
            found |= _module_and_packages(parts[1:])
    return found


def _module_and_packages(parts: list[str]) -> set[str]:
    """The longest prefix of ``parts`` that is a chexdino module, plus its subpackages."""
    for end in range(len(parts), 0, -1):
        if _module_file(".".join(parts[:end])).is_file():
            return {".".join(parts[:i]) for i in range(1, end + 1)}
    return {"__init__"}


def code_fingerprint(modules: Sequence[str]) -> str:
    """SHA-256 over the source of ``module_closure(*modules)``: equal iff the code is equal."""
    digest = hashlib.sha256()
    for path in module_closure(*modules):
        name = path.relative_to(PACKAGE_DIR).as_posix()  # ``a.py`` for a top-level module
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


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


def data_stage_environments(paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Each data-stage job's record, named by rule, from the outputs that carry it.

    ``<dataset>/select_environment.json`` -> ``select_<dataset>``;
    ``impressions_environment.json`` -> ``impressions``; ``<dataset>/cxr.h5`` ->
    ``gather_images <dataset>`` and ``image_shard <dataset> (N jobs)`` (their records grouped
    by :func:`group_environments`); ``tokens.h5`` -> ``tokens``. A file without a record is
    an error naming it: a column reading "not recorded" would hide a broken stage.
    """
    environments: dict[str, dict[str, Any]] = {}
    for path in map(Path, paths):
        dataset = path.parent.name
        if path.name == "select_environment.json":
            environments[f"select_{dataset}"] = _json_record(path)
        elif path.name == "impressions_environment.json":
            environments["impressions"] = _json_record(path)
        elif path.suffix == ".h5":
            own, shards = _h5_records(path)
            if path.stem == "cxr":
                if not shards:
                    raise ValueError(f"{path}: no image shard records (provenance/image_shards)")
                environments[f"image_shard {dataset} ({len(shards)} jobs)"] = (
                    group_environments(shards))
                environments[f"gather_images {dataset}"] = own
            else:
                environments[path.stem] = own
        else:
            raise ValueError(f"{path}: not a job record this summary knows")
    return environments


def _json_record(path: Path) -> dict[str, Any]:
    record = json.loads(Path(path).read_text()).get("environment")
    if not record:
        raise ValueError(f"{path}: no 'environment' record")
    return record


def _h5_records(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An HDF5 output's own ``environment`` attribute and its image shards' records."""
    import h5py

    with h5py.File(path, "r") as store:
        if "environment" not in store.attrs:
            raise ValueError(f"{path}: no 'environment' attribute")
        own = json.loads(store.attrs["environment"])
        shards = store.get("provenance/image_shards")
        texts = shards.asstr()[()] if shards is not None else []
    records = [json.loads(text) for text in texts]
    if any(not record for record in records):
        raise ValueError(f"{path}: an image shard without an 'environment' record")
    return own, records


def group_environments(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One record for many jobs of a rule (e.g. 64 image shards): each item's distinct values.

    Numeric SLURM job ids are written as ranges (``101-164``), other items as their distinct
    values in first-seen order, so the column stays readable whatever the shard count.
    """
    keys = list(dict.fromkeys(k for record in records for k in record if k != "packages"))
    grouped: dict[str, Any] = {}
    for key in keys:
        values = [str(record.get(key, "not recorded")) for record in records]
        grouped[key] = (_id_ranges(values) if key == "slurm_job_id"
                        else ", ".join(dict.fromkeys(values)))
    packages = [record.get("packages", {}) for record in records]
    names = list(dict.fromkeys(name for versions in packages for name in versions))
    grouped["packages"] = {name: ", ".join(dict.fromkeys(
        versions.get(name, "not recorded") for versions in packages)) for name in names}
    return grouped


def _id_ranges(ids: Sequence[str]) -> str:
    """``["103", "101", "102", "local"]`` -> ``"101-103, local"``."""
    distinct = list(dict.fromkeys(ids))
    numbers = sorted(int(i) for i in distinct if i.isdigit())
    others = [i for i in distinct if not i.isdigit()]
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    texts = [str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs]
    return ", ".join(texts + others)


DATA_STAGES: tuple[str, ...] = ("select_", "image_shard", "gather_images", "impressions",
                                "tokens", "dataset_summary")
"""Column-name prefixes of the data-preparation jobs (summed up in one landing-page clause)."""


def where_jobs_ran(environments: dict[str, dict[str, Any]]) -> str:
    """One sentence for the landing page: SLURM (job, partition, node, GPU per job) or local.

    The jobs behind the numbers (training, evaluation) are named one by one; the data
    preparation jobs (dozens with the image shards) in one clause: their rules, partitions
    and nodes. Every job's id is in the provenance table.
    """
    ran = {job: env for job, env in sorted(environments.items(), key=lambda i: i[0] == "report")
           if "executor" in env}  # the jobs behind the numbers first, this summary's last
    if not ran:
        return "Executor: not recorded."
    slurm = {job: env for job, env in ran.items() if "SLURM" in _values(env, "executor")}
    if not slurm:
        nodes = sorted({node for env in ran.values() for node in _values(env, "node")})
        return f"Executor: local (no SLURM), on {', '.join(nodes)}."
    data = {job: env for job, env in slurm.items() if job.startswith(DATA_STAGES)}
    parts = [f"``{job}`` job {env.get('slurm_job_id')} on partition "
             f"{env.get('slurm_partition')}, node {env.get('node')}, GPU {env.get('gpu', '?')}"
             for job, env in slurm.items() if job not in data]
    if data:
        partitions = sorted({p for env in data.values() for p in _values(env, "slurm_partition")})
        nodes = sorted({node for env in data.values() for node in _values(env, "node")})
        parts.append(f"data preparation ({', '.join(data)}) on partition "
                     f"{', '.join(partitions)}, node {', '.join(nodes)}")
    local = [job for job in ran if job not in slurm]
    tail = f"; run locally: {', '.join(local)}" if local else ""
    return f"Executor: SLURM ({'; '.join(parts)}{tail})."


def _values(env: dict[str, Any], key: str) -> list[str]:
    """An item's values: one for a job, the distinct ones for a group of jobs."""
    return str(env.get(key, "?")).split(", ")


def provenance_table(environments: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per item (chexdino, revision, python, hardware, each package), a column per job."""
    columns = {}
    for job, env in environments.items():
        flat = {key: str(value) for key, value in env.items() if key != "packages"}
        flat.update(env.get("packages", {}))
        columns[job] = flat
    table = pd.DataFrame(columns)
    table.index.name = "item"
    return table.fillna("not recorded").reset_index()


def _fmt_auroc(summary: dict[str, Any]) -> str:
    mean = summary.get("mean_auroc_competition")
    if mean is None:
        undefined = ", ".join(summary.get("competition_undefined", [])) or "no labels"
        return f"undefined (only one class present for {undefined})"
    low, high = summary.get("mean_auroc_competition_ci") or [None, None]
    ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"**{mean:.3f}**{ci}"


def landing_summary(dataset: dict[str, Any], training: dict[str, Any],
                    scorecards: dict[str, dict[str, Any]],
                    environments: dict[str, dict[str, Any]] | None = None) -> str:
    """The reStructuredText block the report's landing page includes: headline numbers first."""
    lines = ["Headline results", "~~~~~~~~~~~~~~~~", ""]
    lines += ["Mean zero-shot AUROC over the five competition labels "
              "(95% bootstrap CI):", ""]
    for name, summary in scorecards.items():
        defined = summary.get("n_labels_defined", 0)
        mean_all = summary.get("mean_auroc_all")
        all_text = f"{mean_all:.3f} over {defined} labels" if mean_all is not None else "n/a"
        lines.append(f"- ``{name}`` ({summary.get('n_images', '?')} images): "
                     f"{_fmt_auroc(summary)}; all labels: {all_text}")
    env = training.get("environment", {})
    lines += ["",
              f"Data: {dataset['input_records']} input records, {dataset['kept']} kept, "
              f"{dataset['rejected']} rejected (every reject has a reason in ``rejects.csv``). "
              f"Training: best checkpoint at step {training.get('best_step', '?')} of "
              f"{training.get('steps', '?')} by {training.get('select_by', '?')} on "
              f"{env.get('hardware', 'unrecorded hardware')}{_training_path(training)}.",
              "",
              f"Produced by chexdino {env.get('chexdino', __version__)} "
              f"(source ``{env.get('source_revision', 'unknown')}``), "
              f"torch {env.get('packages', {}).get('torch', '?')}; every job's versions are "
              "in 4. Provenance, next to the exact configuration.", ""]
    if environments:
        lines += [where_jobs_ran(environments), ""]
    return "\n".join(lines)


def _training_path(training: dict[str, Any]) -> str:
    """", torch.compile reduce-overhead, bf16, 1 process, 2,177 img/s (median)" or ""."""
    path = training.get("training_path")
    if not path:
        return ""
    speed = path.get("median_img_per_s")
    speed_text = f", {speed:,.0f} img/s (median)" if speed else ""
    compiled = "eager" if path["compile"] == "eager" else f"torch.compile {path['compile']}"
    processes = path["processes"]
    return (f", {compiled}, {path['precision']}, {processes} "
            f"process{'es' if processes != 1 else ''}{speed_text}")


def _headline(summary_json: Path) -> dict[str, Any]:
    """The headline block of an evaluation's ``summary.json`` (``scorecard.write_scorecard``)."""
    doc = json.loads(summary_json.read_text())
    return doc.get("headline", doc)


def write_run_summary(dataset_json: Path, checkpoints_json: Path,
                      eval_summaries: dict[str, Path], config: dict[str, Any],
                      out_rst: Path, out_table: Path, out_config: Path,
                      job_records: Sequence[Path] = ()) -> None:
    """Write the landing-page block, the per-job provenance table and the exact config.

    ``job_records``: the data stages' outputs that carry their jobs' environment
    (:func:`data_stage_environments`); the dataset summary, training and evaluation jobs
    carry theirs in the files already read here.
    """
    import yaml

    dataset = json.loads(Path(dataset_json).read_text())
    training = json.loads(Path(checkpoints_json).read_text())
    scorecards = {name: _headline(Path(p)) for name, p in eval_summaries.items()}
    environments = {"report": environment()}
    environments.update(data_stage_environments(job_records))
    if "environment" in dataset:
        environments["dataset_summary"] = dataset.pop("environment")
    if "environment" in training:
        environments["train"] = training["environment"]
    for name, summary in scorecards.items():
        if "environment" in summary:
            environments[f"evaluate {name}"] = summary["environment"]
    for path in (out_rst, out_table, out_config):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_rst).write_text(landing_summary(dataset, training, scorecards, environments))
    provenance_table(environments).to_csv(out_table, index=False)
    Path(out_config).write_text(
        "# The configuration this run used (defaults, --configfile and --config merged).\n"
        + yaml.safe_dump(config, sort_keys=False))
