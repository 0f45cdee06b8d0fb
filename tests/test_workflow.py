"""The whole DAG end to end with Snakemake on a small synthetic MIMIC-CXR (real parts only)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import run_configs, snakemake, write_run_overlay

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def overlay(small_demo, tmp_path_factory):
    """Demo config pointed at the small dataset, with a few training steps."""
    return write_run_overlay(small_demo, tmp_path_factory.mktemp("run") / "results")


@pytest.fixture(scope="module")
def finished_run(overlay):
    configs = run_configs(overlay)
    snakemake("all", *configs)
    return Path(yaml.safe_load(overlay.read_text())["results"]), configs


def test_dag_runs_and_accounts_for_every_record(finished_run, small_demo):
    results, _ = finished_run
    _, demo = small_demo
    summary = json.loads((results / "mimic" / "dataset_summary.json").read_text())
    meta = pd.read_csv(small_demo[0] / "mimic" / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert summary["input_records"] == len(meta)
    assert summary["kept"] + summary["rejected"] == len(meta)
    rejects = pd.read_csv(results / "mimic" / "rejects.csv", dtype=str, keep_default_na=False)
    bad = demo["bad_ids"]  # kind -> list of dicom_ids (images) or study_ids (reports)
    for kind, reason in (("truncated_dicom", "truncated"), ("not_dicom", "not a DICOM file")):
        rows = rejects[rejects["dicom_id"].isin(bad[kind])]
        assert len(rows) == len(bad[kind]) > 0, kind
        assert (rows["stage"] == "images").all() and rows["reason"].str.contains(reason).all()
    no_report = rejects[rejects["study_id"].isin(bad["missing_report"])]
    assert len(no_report) and (no_report["reason"] == "report file not found").all()
    empty = rejects[rejects["study_id"].isin(bad["empty_report"])]
    assert len(empty) and empty["reason"].str.contains("no usable text").all()
    # Every data-stage job names where it ran in the provenance table (here: locally).
    provenance = pd.read_csv(results / "provenance.csv", keep_default_na=False)
    table = provenance.set_index("item")
    shards = {dataset: [c for c in table.columns if c.startswith(f"image_shard {dataset} (")]
              for dataset in ("mimic", "chexpert_test")}
    assert all(len(columns) == 1 for columns in shards.values()), list(table.columns)
    data_jobs = ["select_mimic", "select_chexpert_test", "gather_images mimic",
                 "gather_images chexpert_test", "impressions", "tokens", "dataset_summary",
                 *shards["mimic"], *shards["chexpert_test"]]
    assert set(data_jobs) <= set(table.columns), list(table.columns)
    for job in data_jobs:
        assert (table.loc["executor", job], table.loc["slurm_job_id", job],
                table.loc["gpu", job]) == ("local", "local", "none"), job
        assert table.loc["chexdino", job] == table.loc["chexdino", "report"], job
    assert "Executor: local (no SLURM), on " in (results / "run_summary.rst").read_text()


def test_image_store_and_tokens_are_row_aligned(finished_run):
    results, _ = finished_run
    with h5py.File(results / "mimic" / "cxr.h5") as f:
        cxr = f["cxr"]
        assert cxr.dtype == np.uint8 and cxr.shape[1:] == (320, 320) and cxr.chunks is None
        ids = f["dicom_id"].asstr()[()]
        assert cxr[()].reshape(len(cxr), -1).max(1).min() > 0  # no all-black image stored
    with h5py.File(results / "mimic" / "tokens.h5") as f:
        assert list(f["dicom_id"].asstr()[()]) == list(ids)
        assert f["tokens"].shape == (len(ids), 77)
    manifest = pd.read_csv(results / "mimic" / "manifest.csv", dtype=str)
    image_rejects = pd.read_csv(results / "mimic" / "image_rejects.csv", dtype=str)
    assert len(ids) + len(image_rejects) == len(manifest)
    kept = manifest[~manifest["dicom_id"].isin(image_rejects["dicom_id"])]
    assert list(kept["dicom_id"]) == list(ids)  # manifest order survives scatter/gather


def test_scorecards_and_report(finished_run, tmp_path):
    results, configs = finished_run
    for evalset in ("mimic_test", "chexpert_test"):
        table = pd.read_csv(results / "eval" / evalset / "auroc.csv")
        assert len(table) == 14
        summary = json.loads((results / "eval" / evalset / "summary.json").read_text())
        assert "mean_auroc_competition" in summary["headline"]
        probs = pd.read_csv(results / "eval" / evalset / "probabilities.csv")
        assert probs.filter(like="prob_").to_numpy().min() >= 0
    val = pd.read_csv(results / "train" / "validation.csv")
    assert list(val["step"]) == [2, 4]
    # Provenance: the training job's environment and the merged configuration.
    trained = json.loads((results / "train" / "checkpoints.json").read_text())
    assert trained["steps"] == 4 and trained["best_step"] in (2, 4)
    assert trained["environment"]["packages"]["torch"] in torch.__version__
    run_config = yaml.safe_load((results / "run_config.yaml").read_text())
    assert run_config["train"]["steps"] == 4 and run_config["results"] == str(results)
    provenance = pd.read_csv(results / "provenance.csv", keep_default_na=False)
    assert {"item", "report", "train", "evaluate mimic_test"} <= set(provenance.columns)
    # Retrieval beside the MIMIC scorecard, CheXzero beside the CheXpert one, the export.
    recall = pd.read_csv(results / "eval" / "mimic_test" / "retrieval.csv")
    assert len(recall) == 6 and recall["recall"].between(0, 1).all()
    assert (recall["n_queries"] > 0).all()
    published = pd.read_csv(results / "eval" / "chexpert_test" / "published_comparison.csv")
    assert published["published"].round(3).tolist() == [0.812, 0.913, 0.890, 0.899, 0.932,
                                                         0.889]
    from chexdino.model_files import load_exported

    assert load_exported(results / "export",
                         device="cpu").cfg.to_dict()["vision"] == run_config["model"][
        "vision"]
    card = (results / "export" / "README.md").read_text()
    assert "## Zero-shot scorecard" in card and "image to report" in card
    report = tmp_path / "report.html"
    snakemake("--report", str(report), *configs)
    text = report.read_text(errors="ignore")
    for needle in ("auroc.csv", "roc.png", "curves.png", "dataset_summary.png", "README.md",
                   "retrieval.csv", "published_comparison.csv", "Comparison with CheXzero"):
        assert needle in text
    # Nothing left to do: a second run is a no-op.
    dry = snakemake("-n", "all", *configs)
    assert "Nothing to be done" in dry.stdout


def test_changing_an_eval_setting_reruns_only_evaluation(finished_run, tmp_path):
    _, configs = finished_run
    change = tmp_path / "change.yaml"
    change.write_text(yaml.safe_dump({"evaluate": {"uncertain": "positive"}}))
    dry = snakemake("-n", "all", *configs, str(change))
    out = dry.stdout
    assert "rule evaluate" in out and "rule run_summary" in out
    for upstream in ("rule train", "rule image_shard", "rule tokens", "rule impressions"):
        assert upstream not in out


def test_logs_hold_no_report_text(finished_run):
    """Logs carry counts and paths; the impressions themselves stay in the results only."""
    results, _ = finished_run
    impressions = pd.read_csv(results / "mimic" / "impressions.csv", keep_default_na=False)
    logs = "\n".join(p.read_text(errors="ignore") for p in (results / "logs").rglob("*.log"))
    assert logs
    leaked = [t for t in impressions["impression"] if len(t) > 25 and t in logs]
    assert not leaked, leaked[:3]


def planned_rules(dry_run_output: str) -> set[str]:
    """Rules ``snakemake -n`` plans (``rule x:`` / ``localrule x:`` headers), less ``all``."""
    return set(re.findall(r"(?m)^(?:local)?rule (\w+):$", dry_run_output)) - {"all"}


def dry_run_with_edits(configs, edits: dict[str, str]) -> set[str]:
    """The rules planned with each named module's source passed through an edit, restored."""
    from chexdino.code_version import PACKAGE_DIR

    saved = {}
    try:
        for name, kind in edits.items():
            path = PACKAGE_DIR / name
            saved[path] = (path.read_bytes(), path.stat())
            source = path.read_text()
            if kind == "harmless":
                source = ('# a comment\n' + source.replace('"""', '"""Reworded. ', 1)
                          + "\n\n# the end\n")
            else:
                source += "\nAN_EDIT = 1\n"
            path.write_text(source)
        return planned_rules(snakemake("-n", "all", *configs).stdout)
    finally:
        for path, (data, stat) in saved.items():
            path.write_bytes(data)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_code_edits_rerun_exactly_their_stages(finished_run):
    """A comment or docstring anywhere reruns nothing; a real edit of the model card, predict,
    the training figure or the SLURM check never reruns training or evaluation; one of image
    decoding reruns the images stage and everything after it (docs/reruns.md)."""
    _, configs = finished_run
    modules = ("modelcard.py", "train.py", "predict.py", "export.py", "plots.py",
               "slurm_check.py", "evaluate.py", "dicom.py", "model.py")
    assert dry_run_with_edits(configs, dict.fromkeys(modules, "harmless")) == set()
    assert dry_run_with_edits(configs, dict.fromkeys(
        ("modelcard.py", "predict.py", "plots.py", "slurm_check.py"), "real")) == {
        "export", "plot_training"}
    decoded = dry_run_with_edits(configs, {"dicom.py": "real"})
    assert {"image_shard", "gather_images", "tokens", "dataset_summary", "train", "evaluate",
            "export"} <= decoded
    assert not decoded & {"select_mimic", "select_chexpert_test", "impressions"}
