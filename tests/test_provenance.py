"""Provenance: versions, source revision and the landing-page summary of a run."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from chexdino import LABELS, __version__, h5store
from chexdino.config import ReportsConfig
from chexdino.provenance import (
    environment,
    executor,
    package_versions,
    source_revision,
    write_job_record,
)
from chexdino.run_summary import (
    data_stage_environments,
    group_environments,
    landing_summary,
    where_jobs_ran,
    write_run_summary,
)
from chexdino.tokens import build_tokens

REPO = Path(__file__).resolve().parents[1]


def test_package_versions_are_the_installed_ones():
    versions = package_versions(("torch", "no-such-distribution-xyz"))
    assert versions["torch"] in (torch.__version__, torch.__version__.split("+")[0])
    assert versions["no-such-distribution-xyz"] == "not installed"


def test_source_revision_names_this_checkout_and_its_dirty_state(tmp_path):
    revision = source_revision(REPO)
    if not (REPO / ".git").exists():
        assert revision == "unknown"
        return
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", revision)
    assert revision.startswith(head)
    assert source_revision(tmp_path) == "unknown"  # not a git checkout


def test_source_revision_marks_uncommitted_source_changes(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    assert not source_revision(tmp_path).endswith("+dirty")
    (tmp_path / "src" / "m.py").write_text("x = 2\n")
    assert source_revision(tmp_path).endswith("+dirty")


def test_cpu_jobs_name_the_processor_and_its_cores():
    described = environment()["hardware"]
    assert described.startswith("CPU: ") and described.endswith(f"{os.cpu_count()} logical cores")


def scorecard(mean, low=None, high=None, undefined=()):
    return {"mean_auroc_competition": mean, "mean_auroc_competition_ci": [low, high],
            "competition_undefined": list(undefined), "mean_auroc_all": mean,
            "n_labels_defined": 14 - len(undefined), "n_images": 500,
            "environment": environment()}


def test_landing_summary_puts_headline_numbers_and_versions_first():
    dataset = {"input_records": 1000, "kept": 990, "rejected": 10}
    training = {"steps": 25000, "best_step": 24500, "select_by": "val_auroc",
                "environment": {"chexdino": __version__, "source_revision": "abc",
                                "hardware": "1 x NVIDIA H100", "packages": {"torch": "9.9"}}}
    text = landing_summary(dataset, training, {"chexpert_test": scorecard(0.8123, 0.8, 0.83),
                                               "mimic_test": scorecard(None, undefined=["Edema"])})
    assert text.startswith("Headline results")
    assert "``chexpert_test`` (500 images): **0.812** [0.800, 0.830]" in text
    assert "``mimic_test`` (500 images): undefined (only one class present for Edema)" in text
    assert "1000 input records, 990 kept, 10 rejected" in text
    assert "step 24500 of 25000 by val_auroc on 1 x NVIDIA H100" in text
    assert "source ``abc``" in text and "torch 9.9" in text


def test_run_summary_writes_a_column_per_job_and_the_exact_config(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"input_records": 3, "kept": 2, "rejected": 1}))
    train_env = dict(environment(), hardware="2 x GPU")
    (tmp_path / "checkpoints.json").write_text(json.dumps(
        {"steps": 4, "best_step": 4, "select_by": "val_loss", "environment": train_env}))
    (tmp_path / "eval" / "chexpert_test").mkdir(parents=True)
    summary_path = tmp_path / "eval" / "chexpert_test" / "summary.json"
    summary_path.write_text(json.dumps({"headline": scorecard(0.7, 0.6, 0.8), "per_label": {}}))
    config = {"results": "r", "train": {"steps": 4, "lr": 1e-4}}
    write_run_summary(tmp_path / "dataset.json", tmp_path / "checkpoints.json",
                      {"chexpert_test": summary_path}, config, tmp_path / "landing.rst",
                      tmp_path / "provenance.csv", tmp_path / "run_config.yaml")
    table = pd.read_csv(tmp_path / "provenance.csv", keep_default_na=False).set_index("item")
    assert list(table.columns) == ["report", "train", "evaluate chexpert_test"]
    assert table.loc["hardware", "train"] == "2 x GPU"
    assert table.loc["torch", "report"] == package_versions(("torch",))["torch"]
    assert yaml.safe_load((tmp_path / "run_config.yaml").read_text()) == config
    assert "**0.700** [0.600, 0.800]" in (tmp_path / "landing.rst").read_text()
    if "SLURM_JOB_ID" not in os.environ:
        assert table.loc["slurm_job_id"].tolist() == ["local"] * 3
        assert "Executor: local (no SLURM)" in (tmp_path / "landing.rst").read_text()


def test_a_job_outside_slurm_says_local_and_its_host(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURMD_NODENAME"):
        monkeypatch.delenv(name, raising=False)
    here = executor()
    assert here == {"executor": "local", "slurm_job_id": "local", "slurm_partition": "local",
                    "node": socket.gethostname()}
    assert environment()["gpu"] == "none"  # a CPU job


def test_a_slurm_job_records_its_job_id_partition_and_node(monkeypatch):
    # The variables SLURM sets for every task of a job (tests/test_slurm.py reads them back
    # from a real cluster's jobs).
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "gpu")
    monkeypatch.setenv("SLURMD_NODENAME", "g01")
    env = environment()
    assert {k: env[k] for k in ("executor", "slurm_job_id", "slurm_partition", "node")} == {
        "executor": "SLURM", "slurm_job_id": "4711", "slurm_partition": "gpu", "node": "g01"}


def test_landing_page_says_where_the_jobs_ran():
    slurm = {"executor": "SLURM", "slurm_job_id": "12", "slurm_partition": "gpu",
             "node": "g01", "gpu": "NVIDIA H200"}
    local = {"executor": "local", "slurm_job_id": "local", "slurm_partition": "local",
             "node": "laptop", "gpu": "none"}
    assert where_jobs_ran({"train": slurm, "report": dict(slurm, slurm_job_id="13")}) == (
        "Executor: SLURM (``train`` job 12 on partition gpu, node g01, GPU NVIDIA H200; "
        "``report`` job 13 on partition gpu, node g01, GPU NVIDIA H200).")
    assert where_jobs_ran({"train": local, "report": local}) == (
        "Executor: local (no SLURM), on laptop.")
    # Results from before executors were recorded.
    assert where_jobs_ran({"train": {"hardware": "CPU"}}) == "Executor: not recorded."


def test_landing_summary_states_the_training_path_and_its_speed():
    dataset = {"input_records": 10, "kept": 10, "rejected": 0}
    training = {"steps": 25000, "best_step": 7500, "select_by": "val_auroc",
                "training_path": {"compile": "reduce-overhead", "precision": "bf16",
                                  "processes": 2, "median_img_per_s": 3078.4},
                "environment": {"hardware": "2 x NVIDIA H200"}}
    text = landing_summary(dataset, training, {})
    assert ("on 2 x NVIDIA H200, torch.compile reduce-overhead, bf16, 2 processes, "
            "3,078 img/s (median).") in text
    training["training_path"] = {"compile": "eager", "precision": "fp32", "processes": 1,
                                 "median_img_per_s": None}
    assert "on 2 x NVIDIA H200, eager, fp32, 1 process." in landing_summary(dataset, training, {})


def test_module_closure_follows_subpackages_and_their_init(tmp_path, monkeypatch):
    """A stage importing from a subpackage depends on that module and the package's __init__."""
    from chexdino import code_version

    package = tmp_path / "chexdino"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__", "a", "b", "sub/__init__", "sub/x", "sub/y"):
        (package / f"{name}.py").write_text("")
    (package / "a.py").write_text("from chexdino.sub.x import f\nfrom chexdino.sub import y\n")
    (package / "sub" / "x.py").write_text("from chexdino import b\n")
    monkeypatch.setattr(code_version, "PACKAGE_DIR", package)
    closure = [p.relative_to(package).as_posix() for p in code_version.module_closure("a")]
    assert closure == ["a.py", "b.py", "sub/__init__.py", "sub/x.py", "sub/y.py"]
    before = code_version.code_version("a")
    (package / "sub" / "y.py").write_text("z = 1\n")
    assert code_version.code_version("a") != before
    assert set(code_version.closure_versions("a")) == {"a", "b", "sub", "sub.x", "sub.y"}


# --- the data stages' jobs -------------------------------------------------------------------

def on_slurm(monkeypatch, job: str, node: str, partition: str = "cpu") -> dict:
    """This process's environment() as SLURM would make it for job ``job`` on ``node``."""
    monkeypatch.setenv("SLURM_JOB_ID", job)
    monkeypatch.setenv("SLURM_JOB_PARTITION", partition)
    monkeypatch.setenv("SLURMD_NODENAME", node)
    return environment()


def image_rows(first: int, n: int) -> tuple[np.ndarray, pd.DataFrame]:
    ids = range(first, first + n)
    meta = pd.DataFrame({"dicom_id": [f"d{i}" for i in ids], "study_id": [str(i) for i in ids],
                         "subject_id": "9", "split": "train", "view": "PA", "source_rows": 10,
                         "source_cols": 10})
    for label in LABELS:
        meta[label] = np.nan
    pixels = (np.arange(n * 64).reshape(n, 8, 8) + first).astype(np.uint8)
    return pixels, meta


def gathered_store(folder: Path, monkeypatch, shard_jobs: list[tuple[str, str]],
                   gather_job: str = "200") -> Path:
    """Shard stores written by the given (job id, node) jobs, gathered by job ``gather_job``."""
    shards = []
    for k, (job, node) in enumerate(shard_jobs):
        pixels, meta = image_rows(first=10 * k, n=2)
        shards.append(folder / f"{k + 1}-of-{len(shard_jobs)}.h5")
        h5store.write_store(shards[-1], pixels, meta, 8, on_slurm(monkeypatch, job, node))
    cxr = folder / "mimic" / "cxr.h5"
    h5store.gather_stores(shards, cxr, on_slurm(monkeypatch, gather_job, "n9"))
    return cxr


def test_the_gathered_store_keeps_each_deleted_shard_jobs_record(tmp_path, monkeypatch):
    cxr = gathered_store(tmp_path, monkeypatch, [("101", "n1"), ("102", "n2"), ("104", "n1")])
    for shard in tmp_path.glob("*-of-3.h5"):
        shard.unlink()  # as Snakemake deletes the temporary shards
    jobs = data_stage_environments([cxr])
    assert list(jobs) == ["image_shard mimic (3 jobs)", "gather_images mimic"]
    shards = jobs["image_shard mimic (3 jobs)"]
    assert (shards["executor"], shards["slurm_job_id"], shards["slurm_partition"],
            shards["node"], shards["gpu"]) == ("SLURM", "101-102, 104", "cpu", "n1, n2", "none")
    assert shards["packages"]["h5py"] == package_versions(("h5py",))["h5py"]
    assert jobs["gather_images mimic"]["slurm_job_id"] == "200"
    # The records are attributes beside the data: the rows are the shards' rows, in order.
    with h5py.File(cxr, "r") as store:
        assert store["dicom_id"].asstr()[()].tolist() == ["d0", "d1", "d10", "d11", "d20",
                                                          "d21"]
        assert np.array_equal(store["cxr"][2:4], image_rows(first=10, n=2)[0])


def test_group_environments_keeps_every_distinct_value_compactly():
    records = [{"slurm_job_id": job, "node": node, "packages": {"torch": "2.1"}}
               for job, node in (("7", "a"), ("5", "b"), ("6", "a"), ("local", "c"))]
    assert group_environments(records) == {"slurm_job_id": "5-7, local", "node": "a, b, c",
                                           "packages": {"torch": "2.1"}}


def test_run_summary_has_a_column_per_data_stage_job(tmp_path, monkeypatch):
    """Select, image shards, gather, impressions, tokens and the dataset summary each name
    the SLURM job, partition, node and GPU they ran on, beside training and evaluation."""
    mimic = tmp_path / "mimic"
    mimic.mkdir()
    on_slurm(monkeypatch, "11", "n1")
    write_job_record(mimic / "select_environment.json")
    cxr = gathered_store(tmp_path, monkeypatch, [(str(20 + k), "n2") for k in range(64)], "90")
    on_slurm(monkeypatch, "91", "n3")
    write_job_record(mimic / "impressions_environment.json")
    impressions = mimic / "impressions.csv"
    pd.DataFrame({"study_id": ["0"], "impression": ["No effusion."],
                  "impression_source": ["impression"]}).to_csv(impressions, index=False)
    build_tokens(cxr, impressions, mimic / "tokens.h5", ReportsConfig.from_section(),
                 on_slurm(monkeypatch, "92", "n3"))
    (mimic / "dataset_summary.json").write_text(json.dumps(
        {"input_records": 3, "kept": 2, "rejected": 1,
         "environment": on_slurm(monkeypatch, "93", "n3")}))
    (tmp_path / "checkpoints.json").write_text(json.dumps(
        {"steps": 4, "best_step": 4, "select_by": "val_loss",
         "environment": on_slurm(monkeypatch, "94", "g1", "gpu")}))
    for name in ("SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURMD_NODENAME"):
        monkeypatch.delenv(name)  # the report's own job runs in the head process
    records = [mimic / "select_environment.json", cxr, mimic / "impressions_environment.json",
               mimic / "tokens.h5"]
    write_run_summary(mimic / "dataset_summary.json", tmp_path / "checkpoints.json", {}, {},
                      tmp_path / "landing.rst", tmp_path / "provenance.csv",
                      tmp_path / "run_config.yaml", records)
    table = pd.read_csv(tmp_path / "provenance.csv", keep_default_na=False).set_index("item")
    assert list(table.columns) == [
        "report", "select_mimic", "image_shard mimic (64 jobs)", "gather_images mimic",
        "impressions", "tokens", "dataset_summary", "train"]
    assert table.loc["slurm_job_id"].tolist() == [
        "local", "11", "20-83", "90", "91", "92", "93", "94"]
    assert table.loc["node", "image_shard mimic (64 jobs)"] == "n2"
    assert set(table.loc["slurm_partition"]) == {"local", "cpu", "gpu"}
    assert set(table.loc["gpu"]) == {"none"}  # every job of this test computed on the CPU
    landing = (tmp_path / "landing.rst").read_text()
    assert ("Executor: SLURM (``train`` job 94 on partition gpu, node g1, GPU none; "
            "data preparation (select_mimic, image_shard mimic (64 jobs), gather_images mimic, "
            "impressions, tokens, dataset_summary) on partition cpu, node n1, n2, n3, n9; "
            "run locally: report).") in landing


def test_a_data_output_without_its_jobs_record_is_an_error_naming_it(tmp_path):
    pixels, meta = image_rows(first=0, n=2)
    h5store.write_store(tmp_path / "tokens.h5", pixels, meta, 8)  # no environment given
    with pytest.raises(ValueError, match=r"tokens\.h5: no 'environment' attribute"):
        data_stage_environments([tmp_path / "tokens.h5"])
    h5store.gather_stores([tmp_path / "tokens.h5"], tmp_path / "cxr.h5", environment())
    with pytest.raises(ValueError, match=r"cxr\.h5: an image shard without an 'environment'"):
        data_stage_environments([tmp_path / "cxr.h5"])
    (tmp_path / "select_environment.json").write_text("{}")
    with pytest.raises(ValueError, match=r"select_environment\.json: no 'environment'"):
        data_stage_environments([tmp_path / "select_environment.json"])
