"""Each rule's SLURM request against what its partition offers, before anything is submitted.

sbatch accepts a request that no node of the partition can meet (8 CPUs on a 2-CPU node,
96 GB on a 22 GB node): the job then waits in the queue forever, ``PD (PartitionConfig)``,
and Snakemake says nothing. A GPU request where the partition has no GPU is refused only at
submission, job by job. So the head process reads the partitions and nodes from
``scontrol`` once and, per rule:

- fits what can be fitted, with a logged note: threads down to the most CPUs a node of the
  partition has, memory down to the most memory, wall time down to the partition's limit;
- drops the GPU request, and moves the job to the CPU partition, when the workflow runs its
  models on the CPU (``train.device: cpu``, as the demo does);
- stops, naming the rule, the resource and the limit, where fitting would change what the
  job computes or where it cannot run at all: a partition that does not exist or has no
  nodes, a GPU request where the partition's nodes have fewer GPUs.

The parsing and the fitting are plain functions of ``scontrol``'s text;
:func:`check_workflow_requests` applies them to a parsed Snakemake workflow.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

UNLIMITED = ("UNLIMITED", "INFINITE", "NONE", "")


class RequestError(ValueError):
    """A rule asks for more than its partition can ever give."""


@dataclass(frozen=True)
class Partition:
    """What one partition offers a single-node job (the largest of its nodes)."""

    name: str
    state: str
    nodes: tuple[str, ...]
    cpus: int
    mem_mb: int
    gpus: int
    max_time_min: int | None  # None: no limit


@dataclass(frozen=True)
class Request:
    """One rule's request, as the SLURM plugin will pass it to sbatch."""

    rule: str
    partition: str
    threads: int | None
    mem_mb: int | None
    runtime_min: int | None
    gpus: int
    gres: str = ""


def _fields(line: str) -> dict[str, str]:
    """``Key=value`` pairs of one ``scontrol --oneliner`` record (values hold no spaces)."""
    return dict(re.findall(r"(\w+)=(\S*)", line))


def parse_time_min(text: str) -> int | None:
    """SLURM's time format (``30``, ``2:00:00``, ``1-00:00:00``, ``UNLIMITED``) in minutes."""
    if text.upper() in UNLIMITED:
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
    elif len(parts) == 1:  # minutes
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:  # minutes:seconds
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = parts
    total = (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)
    return total


def gpu_count(gres: str) -> int:
    """GPUs in a node's ``Gres`` field: ``gpu:2``, ``gpu:a100:4(S:0-1)``, ``(null)``."""
    total = 0
    for entry in re.split(r",(?![^(]*\))", gres):
        entry = entry.split("(", 1)[0]
        parts = entry.split(":")
        if parts[0] == "gpu":
            total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return total


def processes_per_node(gpu: int, gres: str, nodes: int) -> int:
    """Trainer processes per node: one per GPU the job asks for on each node (a ``gres``
    count is per node; ``gpu``, sbatch's ``--gpus``, counts the whole job)."""
    per_node = gpu_count(gres) if gres else int(gpu) // max(1, int(nodes))
    return max(1, per_node)


def parse_partitions(partition_text: str, node_text: str) -> dict[str, Partition]:
    """Partitions from ``scontrol --oneliner show partition`` and ``... show node``."""
    nodes = [_fields(line) for line in node_text.splitlines() if "NodeName=" in line]
    partitions = {}
    for line in partition_text.splitlines():
        fields = _fields(line)
        if "PartitionName" not in fields:
            continue
        name = fields["PartitionName"]
        members = [n for n in nodes if name in n.get("Partitions", "").split(",")]
        cpus = max((int(n.get("CPUTot", 0)) for n in members), default=0)
        mem = max((int(n.get("RealMemory", 0)) for n in members), default=0)
        gpus = max((gpu_count(n.get("Gres", "")) for n in members), default=0)
        max_cpus = fields.get("MaxCPUsPerNode", "UNLIMITED")
        if max_cpus.upper() not in UNLIMITED:
            cpus = min(cpus, int(max_cpus))
        max_mem = fields.get("MaxMemPerNode", "UNLIMITED")
        if max_mem.upper() not in UNLIMITED:
            mem = min(mem, int(max_mem))
        partitions[name] = Partition(
            name=name, state=fields.get("State", "UP"),
            nodes=tuple(n["NodeName"] for n in members), cpus=cpus, mem_mb=mem, gpus=gpus,
            max_time_min=parse_time_min(fields.get("MaxTime", "UNLIMITED")))
    return partitions


def query_partitions(scontrol: str = "scontrol") -> dict[str, Partition]:
    """The cluster's partitions, asked of slurmctld (seconds; one call each)."""
    def ask(*args: str) -> str:
        return subprocess.run([scontrol, "--oneliner", "show", *args], check=True,
                              capture_output=True, text=True, timeout=60).stdout

    return parse_partitions(ask("partition"), ask("node"))


def fit_request(request: Request, partitions: dict[str, Partition], *, on_cpu: bool = False,
                cpu_partition: str | None = None) -> tuple[Request, list[str]]:
    """The request as it can run, and one note per change; :class:`RequestError` otherwise."""
    notes = []
    rule = request.rule
    wants_gpu = request.gpus > 0 or "gpu" in request.gres
    if on_cpu and wants_gpu:
        moved = cpu_partition or request.partition
        notes.append(f"rule {rule}: no GPU requested (gpu={request.gpus}"
                     + (f", gres={request.gres}" if request.gres else "")
                     + f" dropped) and partition {moved}: the models run on the CPU "
                     "(train.device: cpu)")
        request = replace(request, gpus=0, gres="", partition=moved)
        wants_gpu = False
    part = partitions.get(request.partition)
    if part is None:
        raise RequestError(
            f"rule {rule}: slurm_partition '{request.partition}' does not exist on this "
            f"cluster (partitions: {', '.join(sorted(partitions)) or 'none'}); set it in "
            "profiles/slurm/config.yaml")
    if not part.nodes:
        raise RequestError(f"rule {rule}: partition {part.name} has no nodes")
    if part.state != "UP":
        notes.append(f"rule {rule}: partition {part.name} is {part.state}: its jobs wait "
                     "until it is UP")
    if wants_gpu:
        asked = request.gpus or gpu_count(request.gres)
        if asked > part.gpus:
            raise RequestError(
                f"rule {rule}: gpu={asked} but the nodes of partition {part.name} have "
                f"{part.gpus} GPU{'s' if part.gpus != 1 else ''} at most. Name a partition "
                "with GPUs in profiles/slurm/config.yaml (set-resources: train / evaluate: "
                "slurm_partition), ask for fewer GPUs, or set train.device: cpu to run "
                "train and evaluate on CPU nodes without a GPU")
    if request.threads is not None and request.threads > part.cpus:
        notes.append(f"rule {rule}: threads {request.threads} -> {part.cpus}, the most CPUs "
                     f"a node of partition {part.name} has")
        request = replace(request, threads=part.cpus)
    if request.mem_mb is not None and request.mem_mb > part.mem_mb:
        notes.append(f"rule {rule}: mem_mb {request.mem_mb} -> {part.mem_mb}, the most memory "
                     f"a node of partition {part.name} offers (a job that needs more is "
                     "stopped by SLURM with an out-of-memory error)")
        request = replace(request, mem_mb=part.mem_mb)
    limit = part.max_time_min
    if request.runtime_min is not None and limit is not None and request.runtime_min > limit:
        notes.append(f"rule {rule}: runtime {request.runtime_min} min -> {limit} min, the "
                     f"MaxTime of partition {part.name}")
        request = replace(request, runtime_min=limit)
    return request, notes


def fit_requests(requests: Iterable[Request], partitions: dict[str, Partition], *,
                 on_cpu: bool = False, cpu_partition: str | None = None
                 ) -> tuple[list[Request], list[str]]:
    """Every request fitted; one :class:`RequestError` listing every request that cannot be."""
    fitted, notes, errors = [], [], []
    for request in requests:
        try:
            done, said = fit_request(request, partitions, on_cpu=on_cpu,
                                     cpu_partition=cpu_partition)
        except RequestError as error:
            errors.append(str(error))
            continue
        fitted.append(done)
        notes += said
    if errors:
        raise RequestError("SLURM requests that no node can meet, nothing was submitted:\n  "
                           + "\n  ".join(errors))
    return fitted, notes


# --- Snakemake glue ---------------------------------------------------------------------------

def _concrete(resource: Any, name: str, threads: int | None) -> Any:
    """A resource's value outside any job (profile expressions such as ``"gpu"`` evaluated);
    None when it depends on the job (its input size, a function)."""
    from snakemake.resources import Resource

    if resource is None or getattr(resource, "name", "") == "":
        return None
    if not resource.is_evaluable():
        return resource.value
    if not isinstance(resource.raw, str):
        return None
    try:
        value = Resource.cli_evaluator(name, resource.raw, wildcards=None, input=None,
                                       attempt=1, threads=threads, async_run=None)
    except Exception:  # an expression of the job's input: known only per job
        return None
    return Resource.parse_human_friendly(name, value) if isinstance(value, str) else value


def _rule_request(rule: Any) -> Request | None:
    res = rule.resources
    threads = _concrete(res.get("_cores"), "_cores", None)
    threads = threads if isinstance(threads, int) else None
    partition = _concrete(res.get("slurm_partition"), "slurm_partition", threads)
    if not partition:
        return None
    mem = _concrete(res.get("mem_mb"), "mem_mb", threads)
    if mem is None:
        mem = _concrete(res.get("mem"), "mem", threads)
    runtime = _concrete(res.get("runtime"), "runtime", threads)
    gpus = _concrete(res.get("gpu"), "gpu", threads)
    gres = _concrete(res.get("gres"), "gres", threads)
    return Request(rule=rule.name, partition=str(partition), threads=threads,
                   mem_mb=mem if isinstance(mem, int) else None,
                   runtime_min=runtime if isinstance(runtime, int) else None,
                   gpus=gpus if isinstance(gpus, int) else 0,
                   gres=str(gres) if isinstance(gres, str) else "")


def _runs_locally(workflow: Any, rule: Any) -> bool:
    """A rule of ``localrules:`` (or one without a command): it runs in the head process and
    is never submitted, so its request is not SLURM's to meet. (``workflow.is_local`` says
    True for every rule while the Snakefile is read: the executor is chosen later.)"""
    return rule.norun or rule.name in getattr(workflow, "_localrules", ())


def _set(workflow: Any, rule: Any, name: str, value: Any, raw: Any) -> None:
    """One resource of a rule: here, and for the job processes this head process spawns
    (they receive the per-rule values as --set-resources / --set-threads)."""
    from snakemake.resources import Resource, Resources

    settings = workflow.resource_settings
    if name == "_cores":
        rule.resources["_cores"] = Resource("_cores", value)
        settings._parsed_overwrite_threads[rule.name] = Resource("_cores", value)
        return
    rule.resources[name] = Resource(name, value, raw=raw)
    overwrite = settings._parsed_overwrite_resources
    overwrite.setdefault(rule.name, Resources())[name] = Resource(name, value, raw=raw)


def check_workflow_requests(workflow: Any, config: dict, log: Callable[[str], None],
                            query: Callable[[], dict[str, Partition]] = query_partitions
                            ) -> list[str]:
    """Fit every rule's SLURM request to its partition before anything is submitted.

    Runs in the head process of a SLURM run (a rule names a ``slurm_partition``); a local
    run and the job processes are left alone. Notes go to ``log``; a request that cannot
    run raises :class:`RequestError` naming the rule, the resource and the limit.
    """
    from snakemake_interface_executor_plugins.settings import ExecMode

    if workflow.workflow_settings.exec_mode != ExecMode.DEFAULT:
        return []
    submitted = [rule for rule in workflow.rules if not _runs_locally(workflow, rule)]
    requests = [r for r in map(_rule_request, submitted) if r is not None]
    if not requests:
        return []
    if shutil.which("scontrol") is None:
        log("SLURM requests not checked against the partitions: scontrol not found")
        return []
    try:
        partitions = query()
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or error
        log(f"SLURM requests not checked against the partitions: scontrol failed: {detail}")
        return []
    default_partition = _concrete(
        workflow.resource_settings._parsed_default_resources.get("slurm_partition"),
        "slurm_partition", None)
    on_cpu = (config.get("train") or {}).get("device") == "cpu"
    fitted, notes = fit_requests(requests, partitions, on_cpu=on_cpu,
                                 cpu_partition=default_partition or None)
    rules = {rule.name: rule for rule in workflow.rules}
    for before, after in zip(requests, fitted, strict=True):
        rule = rules[before.rule]
        if after.partition != before.partition:
            _set(workflow, rule, "slurm_partition", after.partition, after.partition)
        if after.threads != before.threads:
            _set(workflow, rule, "_cores", after.threads, after.threads)
        if after.mem_mb != before.mem_mb:
            key = "mem_mb" if "mem_mb" in rule.resources else "mem"
            _set(workflow, rule, key, after.mem_mb, after.mem_mb)
        if after.runtime_min != before.runtime_min:
            _set(workflow, rule, "runtime", after.runtime_min, after.runtime_min)
        if after.gpus != before.gpus:
            _set(workflow, rule, "gpu", after.gpus, after.gpus)
        if after.gres != before.gres:
            _set(workflow, rule, "gres", "", "''")
    for note in notes:
        log(note)
    return notes
