"""SLURM requests against partitions (chexdino.slurm_check), from scontrol's own text.

The records below are `scontrol --oneliner show partition` / `show node` output in the form
slurm-wlm 22.05 prints (the first two taken from tests/slurm/cluster.sh's cluster, the GPU
node shaped as a typical site's). tests/test_slurm.py runs the same check on a live cluster.
"""

from __future__ import annotations

import pytest

from chexdino.slurm_check import (
    Request,
    RequestError,
    SlurmRequests,
    fit_request,
    fit_requests,
    gpu_count,
    parse_partitions,
    parse_time_min,
)

PARTITIONS = (
    "PartitionName=cpu AllowGroups=ALL AllowAccounts=ALL Default=YES QoS=N/A DefaultTime=NONE "
    "MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 MaxCPUsPerNode=UNLIMITED Nodes=vm "
    "State=UP TotalCPUs=2 TotalNodes=1 DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED "
    "TRES=cpu=2,mem=22000M,node=1,billing=2\n"
    "PartitionName=gpu AllowGroups=ALL AllowAccounts=ALL Default=NO QoS=N/A DefaultTime=NONE "
    "MaxNodes=UNLIMITED MaxTime=2-00:00:00 MinNodes=0 MaxCPUsPerNode=32 Nodes=vm,g[01-02] "
    "State=UP TotalCPUs=130 TotalNodes=3 DefMemPerNode=UNLIMITED MaxMemPerNode=256000 "
    "TRES=cpu=130,mem=534000M,node=3\n"
    "PartitionName=debug AllowGroups=ALL Default=NO MaxTime=30:00 Nodes=(null) State=DOWN "
    "TotalCPUs=0 TotalNodes=0\n"
)
NODES = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=1.03 "
    "Gres=(null) NodeAddr=127.0.0.1 RealMemory=22000 AllocMem=0 State=IDLE Partitions=cpu,gpu\n"
    "NodeName=g01 Arch=x86_64 CPUTot=64 Gres=gpu:a100:4(S:0-1) RealMemory=512000 State=MIXED "
    "Partitions=gpu\n"
    "NodeName=g02 Arch=x86_64 CPUTot=64 Gres=gpu:a100:2,gpu:v100:2 RealMemory=256000 "
    "State=IDLE Partitions=gpu\n"
)


@pytest.fixture
def partitions():
    return parse_partitions(PARTITIONS, NODES)


def test_partitions_offer_their_largest_node_within_the_partition_limits(partitions):
    cpu, gpu, debug = partitions["cpu"], partitions["gpu"], partitions["debug"]
    assert (cpu.nodes, cpu.cpus, cpu.mem_mb, cpu.gpus, cpu.max_time_min) == (
        ("vm",), 2, 22000, 0, None)
    # MaxCPUsPerNode and MaxMemPerNode cap the 64-CPU, 512 GB node; 4 GPUs on each big node.
    assert (gpu.nodes, gpu.cpus, gpu.mem_mb, gpu.gpus, gpu.max_time_min) == (
        ("vm", "g01", "g02"), 32, 256000, 4, 2 * 24 * 60)
    assert debug.nodes == () and debug.state == "DOWN" and debug.max_time_min == 30


@pytest.mark.parametrize("text, minutes", [
    ("UNLIMITED", None), ("INFINITE", None), ("30", 30), ("30:00", 30), ("30:01", 31),
    ("02:00:00", 120), ("1-00:00:00", 1440), ("2-12", 3600), ("1-01:30", 1530)])
def test_slurm_time_formats_in_minutes(text, minutes):
    assert parse_time_min(text) == minutes


@pytest.mark.parametrize("gres, n", [("(null)", 0), ("", 0), ("gpu:1", 1), ("gpu", 1),
                                     ("gpu:a100:4(S:0-1)", 4), ("gpu:a100:2,gpu:v100:2", 4),
                                     ("shard:8,gpu:2", 2)])
def test_gpus_counted_from_a_nodes_gres(gres, n):
    assert gpu_count(gres) == n


def profile_request(rule, partition, **kw):
    """profiles/slurm/config.yaml's sizes for the whole MIMIC-CXR."""
    sizes = {"threads": 8, "mem_mb": 16000, "runtime_min": 240, "gpus": 0}
    sizes.update(kw)
    return Request(rule=rule, partition=partition, **sizes)


def test_a_small_node_gets_fitted_requests_and_a_note_for_each_change(partitions):
    fitted, notes = fit_request(
        profile_request("train", "cpu", mem_mb=96000, runtime_min=1440), partitions)
    assert (fitted.threads, fitted.mem_mb, fitted.runtime_min) == (2, 22000, 1440)
    assert notes == [
        "rule train: threads 8 -> 2, the most CPUs a node of partition cpu has",
        "rule train: mem_mb 96000 -> 22000, the most memory a node of partition cpu offers "
        "(a job that needs more is stopped by SLURM with an out-of-memory error)"]
    same, none = fit_request(profile_request("tokens", "gpu", threads=1, mem_mb=8000),
                             partitions)
    assert same == profile_request("tokens", "gpu", threads=1, mem_mb=8000) and none == []


def test_wall_time_is_cut_to_the_partition_limit(partitions):
    fitted, notes = fit_request(profile_request("train", "gpu", gpus=1, runtime_min=1440 * 3),
                                partitions)
    assert fitted.runtime_min == 2880 and fitted.gpus == 1
    assert notes == ["rule train: runtime 4320 min -> 2880 min, the MaxTime of partition gpu"]


def test_a_gpu_request_where_no_node_has_one_stops_with_rule_resource_and_limit(partitions):
    with pytest.raises(RequestError) as error:
        fit_request(profile_request("train", "cpu", gpus=1), partitions)
    assert str(error.value).startswith(
        "rule train: gpu=1 but the nodes of partition cpu have 0 GPUs at most.")
    assert "train.device: cpu" in str(error.value)
    with pytest.raises(RequestError, match="gpu=8 but the nodes of partition gpu have 4 GPUs"):
        fit_request(profile_request("train", "gpu", gpus=8), partitions)


def test_models_on_the_cpu_drop_the_gpu_request_and_move_to_the_cpu_partition(partitions):
    fitted, notes = fit_request(profile_request("evaluate", "gpu", gpus=1, gres="gpu:1"),
                                partitions, on_cpu=True, cpu_partition="cpu")
    assert (fitted.partition, fitted.gpus, fitted.gres, fitted.threads) == ("cpu", 0, "", 2)
    assert notes[0] == ("rule evaluate: no GPU requested (gpu=1, gres=gpu:1 dropped) and "
                        "partition cpu: the models run on the CPU (train.device: cpu)")
    # CPU rules are not moved.
    kept, _ = fit_request(profile_request("tokens", "gpu"), partitions, on_cpu=True,
                          cpu_partition="cpu")
    assert kept.partition == "gpu"


def test_every_impossible_request_is_named_in_one_error(partitions):
    requests = [profile_request("select_mimic", "cpux"), profile_request("train", "debug"),
                profile_request("tokens", "cpu")]
    with pytest.raises(RequestError) as error:
        fit_requests(requests, partitions)
    message = str(error.value)
    assert message.splitlines() == [
        "SLURM requests that no node can meet, nothing was submitted:",
        "  rule select_mimic: slurm_partition 'cpux' does not exist on this cluster "
        "(partitions: cpu, debug, gpu); set it in profiles/slurm/config.yaml",
        "  rule train: partition debug has no nodes"]


def requests_on(partitions, *, models_on_cpu=False, log=None):
    return SlurmRequests(partitions, cpu_partition="cpu", gpu_partition="gpu",
                         models_on_cpu=models_on_cpu, slurm=True, log=log,
                         defaults={"mem_mb": 8000, "runtime": 60})


def test_rules_declare_their_fitted_request_and_each_note_is_logged_once(partitions):
    """What a rule's ``threads:`` / ``resources:`` receive on SLURM: the fitted request, the
    partition chosen by the GPU request; the note comes once, however often it is asked."""
    logged = []
    requests = requests_on(partitions, log=logged.append)
    train = dict(threads=8, gpu=1, mem_mb=96000, runtime="4d")
    assert requests.threads("train", **train) == 8  # the gpu partition's nodes: 32 CPUs
    assert requests.resources("train", **train) == {
        "slurm_partition": "gpu", "gpu": 1, "mem_mb": 96000, "runtime": 2880}
    assert logged == ["rule train: runtime 5760 min -> 2880 min, the MaxTime of partition gpu"]
    # A rule without sizes gets the profile's default-resources, fitted too.
    assert requests.resources("tokens", threads=1) == {
        "slurm_partition": "cpu", "gpu": 0, "mem_mb": 8000, "runtime": 60}
    assert requests.threads("image_shard", 8, local=2) == 2  # the cpu partition's 2 CPUs
    assert logged[-1] == ("rule image_shard: threads 8 -> 2, the most CPUs a node of partition "
                          "cpu has")
    requests.check()  # nothing impossible


def test_models_on_the_cpu_put_gpu_rules_in_the_cpu_partition_without_a_gpu(partitions):
    logged = []
    requests = requests_on(partitions, models_on_cpu=True, log=logged.append)
    assert requests.resources("evaluate", threads=8, gpu=1, mem_mb=64000) == {
        "slurm_partition": "cpu", "gpu": 0, "mem_mb": 22000, "runtime": 60}
    assert logged[0] == ("rule evaluate: no GPU requested (gpu=1 dropped) and partition cpu: "
                         "the models run on the CPU (train.device: cpu)")
    # Not on SLURM: no partition, memory or wall time; the GPU as the models need it.
    local = SlurmRequests(None, cpu_partition=None, gpu_partition=None, models_on_cpu=True,
                          slurm=False)
    assert local.resources("train", threads=8, gpu=1, mem_mb=96000) == {"gpu": 0}
    assert local.threads("image_shard", 8, local=2) == 2 and local.threads("train", 8) == 8
    on_gpu = SlurmRequests(None, cpu_partition=None, gpu_partition=None, models_on_cpu=False,
                           slurm=False)
    assert on_gpu.resources("train", threads=8, gpu=2) == {"gpu": 2}


def test_every_rule_that_cannot_run_is_named_when_the_workflow_checks(partitions):
    """A GPU request on a partition without GPUs, from any rule: each one named in one error,
    raised by check() at the end of the Snakefile; the other rules are fitted as usual."""
    requests = SlurmRequests(partitions, cpu_partition="cpu", gpu_partition="cpu",
                             models_on_cpu=False, slurm=True)
    for rule in ("train", "evaluate"):
        requests.resources(rule, threads=8, gpu=1)
    assert requests.resources("tokens", threads=1, mem_mb=96000)["mem_mb"] == 22000
    with pytest.raises(RequestError) as error:
        requests.check()
    lines = str(error.value).splitlines()
    assert lines[0] == "SLURM requests that no node can meet, nothing was submitted:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["rule train", "rule evaluate"]
    assert all("gpu=1 but the nodes of partition cpu have 0 GPUs at most" in line
               for line in lines[1:])


def test_a_job_computes_the_threads_its_head_submitted(partitions, monkeypatch):
    """The head asks scontrol once and hands the partitions to its jobs in their environment:
    a job process fits the same way without asking SLURM again, and logs nothing."""
    from types import SimpleNamespace

    from snakemake.resources import Resources

    from chexdino import slurm_check

    def workflow(main):
        return SimpleNamespace(
            is_main_process=main,
            resource_settings=SimpleNamespace(default_resources=Resources.from_mapping(
                {"slurm_partition": "cpu", "slurm_gpu_partition": "gpu", "runtime": "1h"})))

    monkeypatch.delenv(slurm_check.PARTITIONS_ENV, raising=False)
    monkeypatch.setattr(slurm_check.shutil, "which", lambda name: f"/usr/bin/{name}")
    asked, logged = [], []
    head = slurm_check.slurm_requests(workflow(True), {"train": {"device": "cpu"}},
                                      logged.append, query=lambda: asked.append(1) or partitions)
    assert head.threads("train", 8, gpu=1) == 2 and asked == [1] and len(logged) == 2
    assert head.resources("train", threads=8, gpu=1)["runtime"] == 60

    def no_query():
        raise AssertionError("a job asked scontrol")

    job = slurm_check.slurm_requests(workflow(False), {"train": {"device": "cpu"}},
                                     logged.append, query=no_query)
    assert job.threads("train", 8, gpu=1) == 2 and len(logged) == 2
    assert job.resources("train", threads=8, gpu=1) == head.resources("train", threads=8, gpu=1)
    # Not a SLURM run (no slurm_partition among the default resources): nothing is asked.
    local = slurm_check.slurm_requests(
        SimpleNamespace(is_main_process=True,
                        resource_settings=SimpleNamespace(default_resources=None)),
        {"train": {"device": "auto"}}, logged.append, query=no_query)
    assert local.resources("train", threads=8, gpu=1) == {"gpu": 1}
