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

The parsing and the fitting are plain functions of ``scontrol``'s text. The workflow applies
them through public Snakemake surfaces only: :func:`slurm_requests` reads the profile's
``default-resources`` and the rules ask :class:`SlurmRequests` for their ``threads:`` and
``resources:`` values, so the fitted request is what the rule itself declares.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
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
                "with GPUs in profiles/slurm/config.yaml (default-resources: "
                "slurm_gpu_partition), ask for fewer GPUs, or set train.device: cpu to run "
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


# --- The workflow's side: requests fitted once, handed to the rules as resource values -----

PARTITIONS_ENV = "CHEXDINO_SLURM_PARTITIONS"


def partitions_to_json(partitions: dict[str, Partition]) -> str:
    return json.dumps({name: asdict(p) for name, p in partitions.items()}, sort_keys=True)


def partitions_from_json(text: str) -> dict[str, Partition]:
    return {name: Partition(**{**fields, "nodes": tuple(fields["nodes"])})
            for name, fields in json.loads(text).items()}


def profile_value(resource: Any) -> Any:
    """A ``default-resources`` value outside any job (``"cpu"``, ``"1h"`` -> 60, 8000); None
    where it depends on the job (an expression of its input size)."""
    from snakemake.resources import Resource

    if resource is None:
        return None
    if not resource.is_evaluable():
        return resource.value
    if not isinstance(resource.raw, str):
        return None
    try:
        value = Resource.cli_evaluator(resource.name, resource.raw, wildcards=None,
                                       input=None, attempt=1, async_run=None)
    except Exception:  # an expression of the job's input: known only per job
        return None
    return (Resource.parse_human_friendly(resource.name, value) if isinstance(value, str)
            else value)


class SlurmRequests:
    """Each submitted rule's SLURM request, fitted to its partition once per process.

    The rules ask through :meth:`threads` and :meth:`resources` (their ``threads:`` and
    ``resources:``), so what Snakemake hands to the SLURM plugin is already what the cluster
    can run; nothing is changed after the rules are read. ``partitions`` is None where the
    run is not on SLURM (or the cluster could not be asked): the requests then pass as
    written. ``log`` gets one note per change, in the head process only.
    """

    def __init__(self, partitions: dict[str, Partition] | None, *, cpu_partition: str | None,
                 gpu_partition: str | None, models_on_cpu: bool, slurm: bool,
                 log: Callable[[str], None] | None = None,
                 defaults: dict[str, Any] | None = None):
        self.partitions = partitions
        self.cpu_partition = cpu_partition
        self.gpu_partition = gpu_partition or cpu_partition
        self.models_on_cpu = models_on_cpu
        self.slurm = slurm
        self.log = log
        self.defaults = defaults or {}
        self.fitted: dict[str, Request] = {}
        self.errors: dict[str, str] = {}

    def request(self, rule: str, *, threads: int, gpu: int = 0, gres: str = "",
                mem_mb: int | None = None, runtime: str | int | None = None) -> Request:
        """The rule's request as it will be submitted (fitted; computed once per rule)."""
        if rule in self.fitted:
            return self.fitted[rule]
        asked = Request(rule=rule, partition=str(
            (self.gpu_partition if gpu or gres else self.cpu_partition) or ""),
            threads=threads, mem_mb=mem_mb if mem_mb is not None else self.defaults.get("mem_mb"),
            runtime_min=minutes(runtime) if runtime is not None else self.defaults.get("runtime"),
            gpus=gpu, gres=gres)
        done = asked
        if self.models_on_cpu and (gpu or gres):
            done = replace(asked, gpus=0, gres="", partition=self.cpu_partition or "")
        if self.partitions is not None:
            try:
                done, notes = fit_request(asked, self.partitions, on_cpu=self.models_on_cpu,
                                          cpu_partition=self.cpu_partition)
            except RequestError as error:
                self.errors[rule] = str(error)
                notes = []
            for note in notes:
                if self.log is not None:
                    self.log(note)
        self.fitted[rule] = done
        return done

    def threads(self, rule: str, threads: int, *, local: int | None = None, **request: Any
                ) -> int:
        """The rule's ``threads:``: fitted on SLURM; ``local`` (or ``threads``) elsewhere."""
        if not self.slurm:
            return threads if local is None else local
        fitted = self.request(rule, threads=threads, **request).threads
        return threads if fitted is None else fitted

    def resources(self, rule: str, *, threads: int, gpu: int = 0, gres: str = "",
                  mem_mb: int | None = None, runtime: str | int | None = None
                  ) -> dict[str, Any]:
        """The rule's ``resources:`` (``**`` them in): the GPU request as the models need it
        and, on SLURM, the partition, memory and wall time fitted to that partition."""
        if not self.slurm:
            on_gpu = not self.models_on_cpu
            return {"gpu": gpu if on_gpu else 0, **({"gres": gres} if gres and on_gpu else {})}
        done = self.request(rule, threads=threads, gpu=gpu, gres=gres, mem_mb=mem_mb,
                            runtime=runtime)
        values: dict[str, Any] = {"slurm_partition": done.partition, "gpu": done.gpus}
        if done.gres:
            values["gres"] = done.gres
        if done.mem_mb is not None:
            values["mem_mb"] = done.mem_mb
        if done.runtime_min is not None:
            values["runtime"] = done.runtime_min
        return values

    def check(self) -> None:
        """:class:`RequestError` naming every rule whose request no node can meet."""
        if self.errors:
            raise RequestError("SLURM requests that no node can meet, nothing was submitted:"
                               "\n  " + "\n  ".join(self.errors.values()))


def minutes(runtime: str | int) -> int:
    """A rule's wall time (``"24h"``, ``"30m"``, ``"1d"``, or minutes) in minutes."""
    if isinstance(runtime, int):
        return runtime
    from snakemake.resources import Resource

    return int(Resource.parse_human_friendly("runtime", runtime))


def slurm_requests(workflow: Any, config: dict, log: Callable[[str], None],
                   query: Callable[[], dict[str, Partition]] = query_partitions
                   ) -> SlurmRequests:
    """The workflow's :class:`SlurmRequests`, from public Snakemake settings only.

    A SLURM run is one whose ``default-resources`` name a ``slurm_partition`` (the profile's
    CPU partition); ``slurm_gpu_partition`` there names the GPU one. Whether the models run
    on the CPU is decided once, from ``train.device`` (evaluation runs the checkpoint on the
    device training used). The head process asks ``scontrol`` and passes the partitions to
    its jobs in their environment (``sbatch --export=ALL``), so a job computes the same
    threads as the head submitted.
    """
    defaults = workflow.resource_settings.default_resources
    values = {name: profile_value(defaults.get(name)) if defaults is not None else None
              for name in ("slurm_partition", "slurm_gpu_partition", "mem_mb", "runtime")}
    models_on_cpu = (config.get("train") or {}).get("device") == "cpu"
    cpu_partition = values["slurm_partition"]
    if not cpu_partition:
        return SlurmRequests(None, cpu_partition=None, gpu_partition=None,
                             models_on_cpu=models_on_cpu, slurm=False)
    head = workflow.is_main_process
    partitions = None
    if os.environ.get(PARTITIONS_ENV) and not head:
        partitions = partitions_from_json(os.environ[PARTITIONS_ENV])
    elif head and shutil.which("scontrol") is None:
        log("SLURM requests not checked against the partitions: scontrol not found")
    elif head:
        try:
            partitions = query()
            os.environ[PARTITIONS_ENV] = partitions_to_json(partitions)
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", None) or error
            log(f"SLURM requests not checked against the partitions: scontrol failed: "
                f"{detail}")
    sizes = {k: v for k in ("mem_mb", "runtime") if isinstance(v := values[k], int)}
    return SlurmRequests(partitions, cpu_partition=str(cpu_partition),
                         gpu_partition=str(values["slurm_gpu_partition"] or cpu_partition),
                         models_on_cpu=models_on_cpu, slurm=True,
                         log=log if head else None, defaults=sizes)
