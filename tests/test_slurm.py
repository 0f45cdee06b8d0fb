"""The workflow on a real SLURM cluster: docs/slurm.md's demo command on the small demo data.

A module fixture starts a single-node cluster (tests/slurm/cluster.sh: Debian's slurm-wlm and
munge, a CPU and a GPU partition named as in profiles/slurm/config.yaml, a job completion log)
sized as this machine is (its CPUs and memory, no GPU), and stops every daemon it started, by
PID. Snakemake runs as a new user would start it: `.venv/bin/snakemake` with the environment's
folder not on PATH. Needs root and apt (or SLURM already installed); skipped with the reason
otherwise.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

from conftest import BINDIR, REPO, run_configs, write_run_overlay
from conftest import snakemake as run_snakemake

PROFILE = REPO / "profiles" / "slurm"
SLURM_DOC = REPO / "docs" / "slurm.md"
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
DAEMONS = ("slurmd", "slurmctld", "munged")
GPU_RULES = {"train", "evaluate"}
# Test-only settings on top of the real profile: poll soon after submission (the profile's
# 40 s suits a busy cluster), no long waits for files.
FAST = ["--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5"]


def logs_with(results: Path) -> list[str]:
    """The option the run's start-up warning names: SLURM's job logs under the results."""
    return ["--slurm-logdir", str(results / "logs" / "slurm")]


def _why_no_cluster() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "the SLURM integration test starts slurmctld/slurmd/munged: it needs root"
    installed = all(shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and not shutil.which("apt-get"):
        return "SLURM (slurm-wlm, munge) is not installed and apt-get is unavailable"
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.is_symlink():
        return f"{SYSTEM_CONF} exists: this machine belongs to a real SLURM cluster"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_why_no_cluster() is not None, reason=str(_why_no_cluster())),
]


def profile_partitions() -> tuple[str, str]:
    """The CPU and GPU partition names, read from the one place the profile sets them."""
    defaults = yaml.safe_load((PROFILE / "config.yaml").read_text())["default-resources"]
    cpu, gpu = defaults["slurm_partition"], defaults["slurm_gpu_partition"]
    return str(cpu), str(gpu)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    dir: Path
    env: dict

    def jobcomp(self) -> dict[str, dict[str, str]]:
        """Finished jobs from slurmctld's job completion log: job id -> fields."""
        path = self.dir / "jobcomp.log"
        jobs = {}
        for line in path.read_text().splitlines() if path.exists() else []:
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            jobs[fields["JobId"]] = fields
        return jobs

    def node(self) -> dict[str, str]:
        """slurmctld's record of the cluster's one node (CPUTot, RealMemory, Gres, ...)."""
        out = subprocess.run(["scontrol", "--oneliner", "show", "node"], env=self.env,
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0]))

    def queue(self) -> list[str]:
        """Jobs slurmctld still holds as pending or running."""
        out = subprocess.run(["squeue", "-h", "-t", "pending,running", "-o", "%i"],
                             env=self.env, capture_output=True, text=True, check=True,
                             timeout=30).stdout
        return out.split()

    def job(self, job_id: str) -> dict[str, str]:
        """slurmctld's record of a job (kept for MinJobAge after it ends)."""
        out = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], env=self.env,
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stop_daemons(cluster_dir: Path) -> None:
    """Every daemon cluster.sh started, by the PID it recorded (TERM, then KILL)."""
    subprocess.run(["bash", str(CLUSTER_SH), "stop", str(cluster_dir)],
                   capture_output=True, timeout=120)
    for name in DAEMONS:
        pid_file = cluster_dir / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text())
        # Only a process that is still ours: its command line names this cluster's files.
        if str(cluster_dir) in _cmdline(pid):
            os.kill(pid, signal.SIGKILL)
    if SYSTEM_CONF.is_symlink() and os.readlink(SYSTEM_CONF) == str(cluster_dir / "slurm.conf"):
        SYSTEM_CONF.unlink()


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    cluster_dir = Path(tempfile.mkdtemp(prefix="chexdino-slurm.", dir="/tmp"))
    cpu, gpu = profile_partitions()
    env = dict(os.environ, CPU_PARTITION=cpu, GPU_PARTITION=gpu,
               SLURMCTLD_PORT=str(_free_port()), SLURMD_PORT=str(_free_port()))
    try:
        started = subprocess.run(["bash", str(CLUSTER_SH), "start", str(cluster_dir)], env=env,
                                 capture_output=True, text=True, timeout=1200)
        if started.returncode != 0:
            logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}"
                             for p in sorted((cluster_dir / "log").glob("*.log")))
            pytest.fail(f"cluster.sh start failed:\n{started.stdout}\n{started.stderr}\n{logs}")
        for name in DAEMONS:
            pid = int((cluster_dir / f"{name}.pid").read_text())
            assert str(cluster_dir) in _cmdline(pid), f"{name} (pid {pid}) is not running"
        yield Cluster(cluster_dir, dict(os.environ, SLURM_CONF=str(cluster_dir / "slurm.conf")))
    finally:
        _stop_daemons(cluster_dir)
        pids = [int(p.read_text()) for p in cluster_dir.glob("*.pid") if p.read_text().strip()]
        for pid in pids:
            for _ in range(40):
                if str(cluster_dir) not in _cmdline(pid):
                    break
                time.sleep(0.25)
            assert str(cluster_dir) not in _cmdline(pid), f"pid {pid} survived the teardown"
        shutil.rmtree(cluster_dir, ignore_errors=True)


def path_without_environment(path: str) -> str:
    """PATH as a new user has it: without the folder of this environment's scripts."""
    kept = [p for p in path.split(os.pathsep) if p and Path(p).resolve() != BINDIR.resolve()]
    return os.pathsep.join(kept)


def readme_demo_command() -> list[str]:
    """The SLURM demo command of docs/slurm.md (its first `.venv/bin/snakemake --profile` line),
    with `.venv/bin` standing for this environment's folder."""
    section = SLURM_DOC.read_text()
    line = next(line for line in section.splitlines()
                if line.startswith(".venv/bin/snakemake --profile profiles/slurm"))
    words = shlex.split(line.split("#", 1)[0])
    return [str(BINDIR / "snakemake"), *words[1:]]


def snakemake(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    """conftest's runner as a new user would start Snakemake: the environment not on PATH."""
    env = dict(env, PATH=path_without_environment(env["PATH"]))
    assert shutil.which("chexdino", path=env["PATH"]) is None, "chexdino is on PATH elsewhere"
    words = args[1:] if args[0].endswith("snakemake") else args
    return run_snakemake(*words, check=False, cores=None, env=env, timeout=timeout)


def job_stats(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table (rule -> number of jobs) from its output."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="module")
def slurm_run(cluster, small_demo, tmp_path_factory):
    """docs/slurm.md's demo command (plus the small data and short training as one more config
    file, and quick polling), and the same configuration run locally."""
    base = tmp_path_factory.mktemp("slurm-run")
    results = base / "results"
    # The probe's five jobs (embeddings, fits) run end to end in test_workflow.py's and
    # test_report.py's runs; through this cluster's queue they would only add minutes.
    overlay = write_run_overlay(small_demo, results, linear_probe={"enabled": False})
    command = readme_demo_command()
    assert command[-2:] == ["--configfile", "tests/demo/config.yaml"], command
    started = time.monotonic()
    run = snakemake([*command, str(overlay), *FAST, *logs_with(results)], cluster.env)
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-10000:]
    logdir = results / "logs" / "slurm"  # --slurm-logdir, as the start-up warning would say
    assert "SLURM job logs: in" not in run.stdout  # no warning: they are under the results

    local = base / "local"
    local_overlay = write_run_overlay(small_demo, local)
    targets = [str(local / "mimic" / "tokens.h5"), str(local / "chexpert_test" / "cxr.h5")]
    ref = snakemake(["--cores", "2", *targets, *run_configs(local_overlay)], dict(os.environ))
    assert ref.returncode == 0, ref.stdout[-6000:]
    return {"results": results, "local": local, "logdir": logdir, "output": run.stdout,
            "seconds": seconds}


def slurm_jobs_by_rule(logdir: Path) -> dict[str, list[str]]:
    """rule -> SLURM job ids, from the plugin's log layout rule_<rule>/<wildcards>/<id>.log."""
    jobs: dict[str, list[str]] = {}
    for log in logdir.glob("rule_*/**/*.log"):
        rule = log.relative_to(logdir).parts[0].removeprefix("rule_")
        jobs.setdefault(rule, []).append(log.stem)
    return jobs


def test_every_job_went_through_sbatch_fitted_to_the_cluster(slurm_run, cluster):
    """The demo (train.device: cpu) on a cluster without GPUs: every job in the CPU
    partition without a GPU, each request lowered to what the node has, with a note."""
    cpu, _ = profile_partitions()
    out = slurm_run["output"]
    # The jobs of seconds (the Snakefile's localrules) run in the head process, unsubmitted.
    local = set(re.findall(r"^localrule (\w+):$", out, flags=re.M))
    assert local == {"all", "select_chexpert_test", "leakage_check", "plot_training",
                     "run_summary", "compare_published", "export"}, local
    expected = {rule: n for rule, n in job_stats(out).items() if rule not in local}
    by_rule = slurm_jobs_by_rule(slurm_run["logdir"])
    assert {rule: len(ids) for rule, ids in by_rule.items()} == expected
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    assert sorted(submitted) == sorted(i for ids in by_rule.values() for i in ids)

    node = cluster.node()
    node_cpus, node_mem = int(node["CPUTot"]), int(node["RealMemory"])
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    finished = cluster.jobcomp()
    for rule, ids in by_rule.items():
        for job_id in ids:
            job = finished[job_id]
            assert job["Name"] == run_id and job["JobState"] == "COMPLETED", job
            gres = cluster.job(job_id).get("TresPerJob", "")
            assert job["Partition"] == cpu and "gpu" not in gres, (rule, job, gres)
    for rule in GPU_RULES:
        assert (f"rule {rule}: no GPU requested (gpu=1 dropped) and partition {cpu}: the "
                "models run on the CPU (train.device: cpu)") in out
    # The train rule asks 8 CPUs and 96000 MB for 24 h: what the node cannot give
    # is lowered to what it has, with a note; the rest reaches SLURM as asked.
    (train_id,) = by_rule["train"]
    assert finished[train_id]["ProcCnt"] == str(min(8, node_cpus))
    assert f"mem={min(96000, node_mem)}M" in finished[train_id]["Tres"]
    assert finished[train_id]["TimeLimit"] == "1440"
    if node_cpus < 8:
        assert (f"rule train: threads 8 -> {node_cpus}, the most CPUs a node of partition "
                f"{cpu} has") in out
    if node_mem < 96000:
        assert f"rule train: mem_mb 96000 -> {node_mem}, the most memory" in out


def test_report_provenance_names_each_jobs_slurm_job_partition_and_node(slurm_run, cluster):
    results, logdir = slurm_run["results"], slurm_run["logdir"]
    table = pd.read_csv(results / "provenance.csv", keep_default_na=False).set_index("item")
    by_rule = slurm_jobs_by_rule(logdir)
    finished = cluster.jobcomp()
    jobs = {"train": by_rule["train"][0]}
    for evalset in ("mimic_test", "chexpert_test"):
        log = next(logdir.glob(f"rule_evaluate/{evalset}/*.log"))
        jobs[f"evaluate {evalset}"] = log.stem
    # The data stages: one column per job, the image shards of a data set in one column.
    for rule in ("select_mimic", "impressions", "tokens", "dataset_summary"):
        (jobs[rule],) = by_rule[rule]
    shards = {}
    for dataset in ("mimic", "chexpert_test"):
        gather = next(logdir.glob(f"rule_gather_images/{dataset}/*.log"))
        jobs[f"gather_images {dataset}"] = gather.stem
        ids = sorted(log.stem for log in logdir.glob(f"rule_image_shard/{dataset}_*/*.log"))
        shards[f"image_shard {dataset} ({len(ids)} jobs)"] = ids
    local = ["select_chexpert_test", "report"]  # local rules: run in the head process
    assert sorted(table.columns) == sorted([*jobs, *shards, *local])
    for column in local:
        assert table[column]["executor"] == "local", table[column]
    assert "run_summary" not in by_rule and "select_chexpert_test" not in by_rule
    for column, job_id in jobs.items():
        recorded = table[column]
        assert recorded["executor"] == "SLURM" and recorded["slurm_job_id"] == job_id, column
        assert recorded["slurm_partition"] == finished[job_id]["Partition"], column
        assert recorded["node"] == finished[job_id]["NodeList"], column
        assert recorded["gpu"] == "none", column  # the demo computes on the CPU
    for column, ids in shards.items():
        recorded = table[column]
        assert len(ids) > 1 and recorded["executor"] == "SLURM", column
        assert expand_job_ids(recorded["slurm_job_id"]) == ids, (column, recorded)
        for item, field in (("slurm_partition", "Partition"), ("node", "NodeList")):
            assert set(recorded[item].split(", ")) == {finished[i][field] for i in ids}, column
        assert recorded["gpu"] == "none", column
    landing = (results / "run_summary.rst").read_text()
    assert f"Executor: SLURM (``train`` job {jobs['train']} on partition" in landing
    assert "; data preparation (select_mimic, image_shard mimic (" in landing
    assert "; run locally: select_chexpert_test, report)." in landing


def expand_job_ids(text: str) -> list[str]:
    """``"101-103, 105"`` (the provenance table's ranges) -> the job ids, sorted."""
    ids = []
    for part in text.split(", "):
        first, _, last = part.partition("-")
        ids += [str(i) for i in range(int(first), int(last or first) + 1)]
    return sorted(ids)


def test_a_gpu_request_on_a_cluster_without_gpus_stops_at_once(cluster, small_demo, tmp_path):
    """The real-run default (train.device: auto) asks a GPU for train and evaluate; this
    cluster has none: a clear message naming rule, resource and limit, nothing submitted."""
    results = tmp_path / "results"
    overlay = write_run_overlay(small_demo, results, train={"device": "auto"})
    jobs_before = set(cluster.jobcomp())
    started = time.monotonic()
    run = snakemake([*readme_demo_command(), str(overlay), *FAST], cluster.env, timeout=60)
    seconds = time.monotonic() - started
    assert run.returncode != 0 and seconds < 60, (seconds, run.stdout[-3000:])
    _, gpu = profile_partitions()
    for rule in GPU_RULES:
        assert (f"rule {rule}: gpu=1 but the nodes of partition {gpu} have 0 GPUs at most."
                in run.stdout), run.stdout[-3000:]
    assert "set train.device: cpu" in run.stdout
    assert "submitted with SLURM jobid" not in run.stdout
    assert set(cluster.jobcomp()) == jobs_before and not cluster.queue()


def test_images_and_tokens_are_bitwise_identical_to_a_local_run(slurm_run):
    for name, array in (("mimic/cxr.h5", "cxr"), ("chexpert_test/cxr.h5", "cxr"),
                        ("mimic/tokens.h5", "tokens")):
        with h5py.File(slurm_run["results"] / name) as a, h5py.File(slurm_run["local"] / name) as b:
            x, y = a[array][()], b[array][()]
            assert x.dtype == y.dtype and x.shape == y.shape and len(x), (name, x.shape, y.shape)
            assert x.tobytes() == y.tobytes(), f"{name}:{array} differs from the local run"
            assert list(a["dicom_id"].asstr()[()]) == list(b["dicom_id"].asstr()[()]), name
    assert (slurm_run["results"] / "eval" / "chexpert_test" / "summary.json").exists()
    assert (slurm_run["results"] / "train" / "curves.png").exists()


def test_a_failing_job_fails_the_run_and_shows_its_error(cluster, small_demo, tmp_path):
    broken = tmp_path / "metadata.csv.gz"
    broken.write_bytes(b"this is not a gzip file\n")
    results = tmp_path / "results"
    overlay = write_run_overlay(small_demo, results, mimic={"metadata_csv": str(broken)})
    run = snakemake(["--profile", str(PROFILE.relative_to(REPO)),
                     str(results / "mimic" / "manifest.csv"), *run_configs(overlay),
                     "--retries", "0", *FAST, *logs_with(results)], cluster.env)
    assert run.returncode != 0
    assert "Error in rule select_mimic" in run.stdout
    (log,) = (results / "logs" / "slurm").glob("rule_select_mimic/*.log")
    assert str(log) in run.stdout, run.stdout[-6000:]
    job = cluster.jobcomp()[log.stem]
    assert job["JobState"] == "FAILED" and job["Partition"] == profile_partitions()[0]
    # The rule's own log holds the reason, and its end is on the screen (show-failed-logs).
    rule_log = results / "logs" / "select_mimic.log"
    assert str(rule_log) in run.stdout
    reason = rule_log.read_text().strip().splitlines()[-1]
    assert reason and reason in run.stdout, (reason, run.stdout[-6000:])


def _running_job(cluster: Cluster, comment: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-t", "running", "-o", "%i|%k"], env=cluster.env,
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            job_id, job_comment = line.split("|", 1)
            if job_comment == comment:
                return job_id
        time.sleep(0.5)
    raise AssertionError(f"no running SLURM job with comment {comment} after {timeout}s")


def _wait_for_text(path: Path, pattern: str, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text() if path.exists() else "")
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{pattern!r} not in {path} after {timeout}s")


def _finished_job(cluster: Cluster, job_id: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = cluster.jobcomp().get(job_id)
        if job:
            return job
        time.sleep(0.5)
    raise AssertionError(f"SLURM job {job_id} did not end within {timeout}s")


def test_training_stops_on_the_slurm_signal_and_the_retry_resumes(slurm_run, cluster, small_demo,
                                                                   tmp_path):
    """What happens before the wall-time limit: SLURM sends USR1 to the job's steps (the
    profile's --signal=USR1@600; here at once, with scancel), the trainer checkpoints and exits
    75, the job fails, and the profile's retries resubmit it; training resumes from there."""
    results = tmp_path / "results"
    logdir = results / "logs" / "slurm"
    shutil.copytree(slurm_run["results"] / "mimic", results / "mimic")  # train's inputs
    overlay = write_run_overlay(small_demo, results, train={"steps": 60, "val_every": 30,
                                                            "ckpt_every": 10, "log_every": 1})
    env = dict(cluster.env, HF_HUB_OFFLINE="1", PATH=path_without_environment(cluster.env["PATH"]))
    cmd = [str(BINDIR / "snakemake"), "--profile", str(PROFILE.relative_to(REPO)),
           str(results / "train" / "best.pt"), *run_configs(overlay), *FAST, *logs_with(results)]
    out_file = tmp_path / "snakemake.out"
    with out_file.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        first = _running_job(cluster, "rule_train", timeout=120)
        _wait_for_text(results / "logs" / "train.log", r"step 1[2-9] ", timeout=120)
        subprocess.run(["scancel", "--signal=USR1", first], env=cluster.env, check=True,
                       timeout=30)
        stopped = _finished_job(cluster, first, timeout=120)
        assert stopped["JobState"] == "FAILED", stopped  # exit 75: "resubmit me"
        # Only the trainer may react to the signal. A step whose Snakemake process was killed
        # by it reads DerivedExitCode=0:<signal>, and its trainer is orphaned mid-checkpoint.
        assert stopped["DerivedExitCode"] != f"0:{int(signal.SIGUSR1)}", stopped
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
    output = out_file.read_text()
    assert proc.returncode == 0, output[-8000:]
    assert "slurm_extra=--signal=USR1@600" in output  # the profile's request reached the job

    train_jobs = sorted(slurm_jobs_by_rule(logdir)["train"], key=int)
    assert train_jobs[0] == first and len(train_jobs) == 2, train_jobs
    assert cluster.jobcomp()[train_jobs[1]]["JobState"] == "COMPLETED"
    resumed = _wait_for_text(results / "logs" / "train.log", r"resumed from \S+ at step (\d+)", 1)
    assert int(resumed.group(1)) >= 12  # the signal's checkpoint, not the periodic one at 10
    assert not [p for p in Path("/proc").glob("[0-9]*") if str(results) in _cmdline(int(p.name))]


def test_head_job_script_runs_snakemake_as_a_job_on_the_cpu_partition(cluster, small_demo,
                                                                      tmp_path):
    """profiles/slurm/head-job.sh: the head process as a SLURM job (here a dry run)."""
    overlay = write_run_overlay(small_demo, tmp_path / "results")
    env = dict(cluster.env, HEAD_LOG_DIR=str(tmp_path / "logs"), PYTHON=sys.executable)
    submitted = subprocess.run(["bash", str(PROFILE / "head-job.sh"), "-n", "all",
                                *run_configs(overlay)], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    job_id = re.search(r"head job (\d+)", submitted.stdout).group(1)
    job = _finished_job(cluster, job_id, timeout=120)
    log = (tmp_path / "logs" / f"head-{job_id}.log").read_text()
    assert job["JobState"] == "COMPLETED", log[-4000:]
    assert job["Name"] == "chexdino-head" and job["Partition"] == profile_partitions()[0]
    assert "This was a dry-run" in log and re.search(r"train\s+1", log)


def test_two_srun_tasks_train_as_one_process_does(cluster, tmp_path, tiny_model_cfg):
    """The multi-node path on the test cluster: ``srun -n 2`` starts two trainers (gloo on
    CPU); ranks come from SLURM's variables and the rendezvous from the job's node list, and
    the weights equal a one-process run at the same global batch."""
    import json

    import torch

    from conftest import build_tiny_store
    from test_train import make_trainer, train_cfg

    store = build_tiny_store(tmp_path)
    settings = train_cfg(steps=4, val_every=2, ckpt_every=2)
    reference = make_trainer(store, tmp_path / "one", tiny_model_cfg, steps=4, val_every=2,
                             ckpt_every=2)
    reference.run()
    cpu, _ = profile_partitions()
    cmd = ["srun", f"--partition={cpu}", "--ntasks=2", "--cpus-per-task=1", "--time=10",
           str(BINDIR / "chexdino"), "train", "--cxr", str(store[0]), "--tokens",
           str(store[1]), "--out-dir", str(tmp_path / "srun"), "--model",
           json.dumps(tiny_model_cfg), "--train", json.dumps(settings), "--evaluate", "{}"]
    env = dict(cluster.env, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("MASTER_ADDR", None)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "training process 1 of 2" in done.stderr and "training process 2 of 2" in done.stderr
    got = torch.load(tmp_path / "srun" / "checkpoints" / "step_0000004.pt", weights_only=True)
    for name, value in reference.model.state_dict().items():
        assert torch.allclose(got["model"][name], value, atol=1e-5), name
