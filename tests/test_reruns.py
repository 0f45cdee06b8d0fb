"""What a changed setting reruns: Snakemake's own plan (``-n``) after a real preprocessing run.

The module runs the real preprocessing DAG once (select, image shards, gather, impressions,
tokens, dataset summary) on the small synthetic MIMIC-CXR; each test then dry-runs ``all``
with one setting changed and reads the plan. Training and evaluation are never run here:
they are planned for their missing outputs in every dry run, and a changed upstream setting
shows up as one more reason on them ("Input files updated by another job: .../cxr.h5").
"""

from __future__ import annotations

import gzip
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexdino import LABELS
from conftest import REPO, run_configs, write_config, write_run_overlay
from conftest import snakemake as run_snakemake

PREPROCESSING = ("select_mimic", "select_chexpert_test", "image_shard", "gather_images",
                 "impressions", "tokens", "dataset_summary", "leakage_check")
UPDATED_INPUT = "Input files updated by another job"

pytestmark = pytest.mark.slow


def snakemake(*args: str) -> str:
    """Run snakemake from the repository (conftest's runner); its whole output."""
    return run_snakemake(*args).stdout


def planned_jobs(dry_run_output: str) -> dict[str, list[str]]:
    """Rule name -> the ``reason:`` line of each of its planned jobs, from ``snakemake -n``."""
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in dry_run_output.splitlines():
        header = re.match(r"(?:local)?rule (\w+):$", line.strip())
        if header:
            rule = header.group(1)
            jobs.setdefault(rule, [])
        elif rule and line.strip().startswith("reason:"):
            jobs[rule].append(line.strip().removeprefix("reason:").strip())
    return jobs


@pytest.fixture(scope="module")
def preprocessed(small_demo, tmp_path_factory) -> tuple[Path, list[str]]:
    """The real preprocessing DAG run once; returns (results dir, config-file arguments)."""
    results = tmp_path_factory.mktemp("rerun") / "results"
    configs = run_configs(write_run_overlay(small_demo, results, tiny_training=False))
    snakemake(str(results / "mimic" / "dataset_summary.json"),
              str(results / "mimic" / "leakage.json"),
              str(results / "chexpert_test" / "cxr.h5"), *configs)
    return results, configs


CHANGES = {
    "unchanged": {},
    "image_size": {"images": {"size": 256}},
    "views": {"select": {"views": ["PA"]}},
    "context_length": {"reports": {"context_length": 64}},
    "shard_counts": {"images": {"shards": {"mimic": 3, "chexpert_test": 1}}},
}


@pytest.fixture(scope="module")
def snakemake_answers(preprocessed, tmp_path_factory) -> dict[tuple[str, str], str]:
    """(change, "plan" | "params") -> the output of ``snakemake -n all`` / ``--list-changes
    params`` with that change, all started at once: a snakemake start-up is seconds of
    imports (and plugin probes), and these runs only read the workflow's state."""
    _, configs = preprocessed
    folder = tmp_path_factory.mktemp("changes")
    calls = {}
    for name, change in CHANGES.items():
        overlay = str(write_config(folder / f"{name}.yaml", change))
        calls[name, "plan"] = ("-n", "all", *configs, overlay)
        calls[name, "params"] = ("--list-changes", "params", *configs, overlay)
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        outputs = pool.map(lambda args: snakemake(*args), calls.values())
        return dict(zip(calls, outputs, strict=True))


def plan(snakemake_answers, change: str) -> dict[str, list[str]]:
    return planned_jobs(snakemake_answers[change, "plan"])


def params_changes(snakemake_answers, preprocessed, change: str) -> set[str]:
    """Files ``--list-changes params`` prints, relative to the results folder.

    Snakemake 9.27.1 also prints the *last* output of every job whose params did not change
    (``ParamsChange.__or__`` keeps the file set of a no-change), so the tests below only ask
    about first outputs (a shard's ``.h5``, ``impressions.csv``, ``manifest.csv``).
    """
    results, _ = preprocessed
    listed = snakemake_answers[change, "params"].splitlines()
    return {str(Path(line).relative_to(results)) for line in listed
            if line.startswith(str(results))}


def assert_reruns_downstream_of_images(jobs: dict[str, list[str]], datasets: int) -> None:
    """Gather, tokens and the summary rerun, and the model stages see the new image store."""
    assert len(jobs["gather_images"]) == datasets
    assert all(UPDATED_INPUT in reason for reason in jobs["gather_images"])
    for rule in ("tokens", "dataset_summary"):
        assert rule in jobs and "cxr.h5" in jobs[rule][0], rule
    assert UPDATED_INPUT in jobs["train"][0] and "mimic/cxr.h5" in jobs["train"][0]
    assert all(UPDATED_INPUT in reason for reason in jobs["evaluate"])


def test_unchanged_config_plans_only_the_stages_never_run(snakemake_answers, preprocessed):
    # the baseline the other tests compare with: preprocessing is up to date, and the model
    # stages are planned for their missing outputs only
    results, _ = preprocessed
    # the shards are temporary: gathered, then deleted, and not missed by a rerun
    assert (results / "mimic" / "cxr.h5").is_file()
    assert not list(results.glob("*/shards/*")), list(results.glob("*/shards/*"))
    jobs = plan(snakemake_answers, "unchanged")
    assert not set(jobs) & set(PREPROCESSING)
    assert set(jobs) == {"train", "evaluate", "plot_training", "retrieval", "compare_published",
                         "run_summary", "export", "embed", "linear_probe", "all"}
    assert UPDATED_INPUT not in jobs["train"][0]


def test_image_size_reruns_images_and_downstream_but_not_selection_or_reports(
    snakemake_answers, preprocessed
):
    jobs = plan(snakemake_answers, "image_size")
    # 2 shards x (MIMIC, CheXpert test): deleted once gathered, their records still say with
    # which settings they were made
    assert len(jobs["image_shard"]) == 4
    assert all("Params have changed" in r and "320" in r and "256" in r
               for r in jobs["image_shard"]), jobs["image_shard"]
    assert_reruns_downstream_of_images(jobs, datasets=2)
    for upstream in ("select_mimic", "select_chexpert_test", "impressions"):
        assert upstream not in jobs
    listed = params_changes(snakemake_answers, preprocessed, "image_size")
    assert {"mimic/shards/1-of-2.h5", "chexpert_test/shards/2-of-2.h5"} <= listed
    assert not {"mimic/impressions.csv", "mimic/manifest.csv"} & listed


def test_view_filter_reruns_selection_images_and_downstream_but_not_reports(
    snakemake_answers, preprocessed
):
    jobs = plan(snakemake_answers, "views")
    assert jobs["select_mimic"][0].startswith("Params have changed")
    assert "select_chexpert_test" not in jobs and "impressions" not in jobs
    assert len(jobs["image_shard"]) == 2  # only MIMIC's shards read the MIMIC manifest
    assert all(UPDATED_INPUT in reason and "mimic/manifest.csv" in reason
               for reason in jobs["image_shard"])
    assert_reruns_downstream_of_images(jobs, datasets=1)
    listed = params_changes(snakemake_answers, preprocessed, "views")
    assert "mimic/manifest.csv" in listed
    assert not {"mimic/shards/1-of-2.h5", "mimic/impressions.csv"} & listed


def test_context_length_reruns_tokens_and_downstream_only(snakemake_answers, preprocessed):
    jobs = plan(snakemake_answers, "context_length")
    assert jobs["tokens"][0].startswith("Params have changed")
    assert "dataset_summary" in jobs
    assert UPDATED_INPUT in jobs["train"][0] and "tokens.h5" in jobs["train"][0]
    for upstream in ("select_mimic", "select_chexpert_test", "image_shard", "gather_images",
                     "impressions"):
        assert upstream not in jobs
    listed = params_changes(snakemake_answers, preprocessed, "context_length")
    assert not {"mimic/shards/1-of-2.h5", "mimic/impressions.csv", "mimic/manifest.csv"} & listed


def test_shard_counts_per_data_set_replan_the_images_of_each(snakemake_answers):
    """``images.shards`` as a mapping: 3 MIMIC shards and 1 CheXpert shard where there were 2
    and 2; each gather sees its new set of shards, nothing upstream of the images reruns."""
    out = snakemake_answers["shard_counts", "plan"]
    jobs = planned_jobs(out)
    assert len(jobs["image_shard"]) == 4 and len(jobs["gather_images"]) == 2
    shards = set(re.findall(r"/(\w+)/shards/(\d+-of-\d+)\.h5", out))
    assert shards == {("mimic", "1-of-3"), ("mimic", "2-of-3"), ("mimic", "3-of-3"),
                      ("chexpert_test", "1-of-1")}
    assert all("Set of input files has changed" in r for r in jobs["gather_images"]), \
        jobs["gather_images"]
    assert_reruns_downstream_of_images(jobs, datasets=2)
    for upstream in ("select_mimic", "select_chexpert_test", "impressions"):
        assert upstream not in jobs


def test_editing_a_stage_module_reruns_that_stage_and_downstream_only(preprocessed):
    """Rules pass the version of the code they run as a parameter: a statement added to
    impressions.py reruns the impressions, then tokens and the models, but no image stage; a
    touch, a comment or a reworded docstring reruns nothing."""
    _, configs = preprocessed
    module = REPO / "src" / "chexdino" / "impressions.py"
    source, stat = module.read_bytes(), module.stat()
    try:
        os.utime(module, (stat.st_atime, time.time()))
        module.write_bytes(source.replace(b'"""', b'"""Reworded. ', 1) + b"\n# a comment\n")
        harmless = planned_jobs(snakemake("-n", "all", *configs))
        module.write_bytes(source + b"\nAN_EDIT = 1\n")
        edited = planned_jobs(snakemake("-n", "all", *configs))
    finally:
        module.write_bytes(source)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "impressions" not in harmless and "tokens" not in harmless
    assert "Params have changed" in edited["impressions"][0], edited["impressions"]
    assert UPDATED_INPUT in edited["tokens"][0] and "impressions.csv" in edited["tokens"][0]
    assert "dataset_summary" in edited and "train" in edited
    for upstream in ("select_mimic", "select_chexpert_test", "image_shard", "gather_images"):
        assert upstream not in edited


def test_editing_the_image_module_reruns_the_deleted_shards(preprocessed):
    """The shards are gone once gathered, yet an edit of the module that makes them still
    plans every shard again (their records keep the code's version), then each gather."""
    results, configs = preprocessed
    assert not list(results.glob("*/shards/*.h5"))
    module = REPO / "src" / "chexdino" / "dicom.py"  # imported by images.py
    source, stat = module.read_bytes(), module.stat()
    try:
        module.write_bytes(source + b"\nAN_EDIT = 1\n")
        edited = planned_jobs(snakemake("-n", "all", *configs))
    finally:
        module.write_bytes(source)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert len(edited["image_shard"]) == 4, edited.get("image_shard")
    assert all("Params have changed" in r for r in edited["image_shard"]), edited["image_shard"]
    assert_reruns_downstream_of_images(edited, datasets=2)
    for upstream in ("select_mimic", "select_chexpert_test", "impressions"):
        assert upstream not in edited


# --- planning at MIMIC-CXR's size ---------------------------------------------------------

N_IMAGES, N_STUDIES, N_SUBJECTS = 377_110, 227_835, 65_379  # MIMIC-CXR 2.0.0


def write_csv_gz(table: pd.DataFrame, path: Path) -> Path:
    with gzip.open(path, "wt", compresslevel=1) as f:
        table.to_csv(f, index=False)
    return path


def mimic_sized_tables(folder: Path) -> dict[str, Path]:
    """The three official tables with MIMIC-CXR's row counts (random ids and labels)."""
    rng = np.random.default_rng(0)
    study_ids = rng.choice(np.arange(50_000_000, 60_000_000), N_STUDIES, replace=False)
    subject_of_study = rng.integers(10_000_000, 10_000_000 + N_SUBJECTS, N_STUDIES)
    study_of_image = np.sort(rng.integers(0, N_STUDIES, N_IMAGES))
    dicom_ids = [f"{i:08x}-00000000-00000000-00000000-00000000" for i in range(N_IMAGES)]
    images = pd.DataFrame({"dicom_id": dicom_ids, "study_id": study_ids[study_of_image],
                           "subject_id": subject_of_study[study_of_image]})
    split = images.assign(split=rng.choice(["train", "validate", "test"], N_IMAGES,
                                           p=[0.97, 0.01, 0.02]))
    views = rng.choice(["PA", "AP", "LATERAL", "LL", ""], N_IMAGES, p=[.25, .4, .25, .06, .04])
    metadata = images.assign(ViewPosition=views)
    labels = rng.choice([1.0, 0.0, -1.0, np.nan], (N_STUDIES, len(LABELS)))
    chexpert = pd.DataFrame(labels, columns=list(LABELS))
    chexpert.insert(0, "study_id", study_ids)
    chexpert.insert(0, "subject_id", subject_of_study)
    return {"split_csv": write_csv_gz(split, folder / "mimic-cxr-2.0.0-split.csv.gz"),
            "metadata_csv": write_csv_gz(metadata, folder / "mimic-cxr-2.0.0-metadata.csv.gz"),
            "chexpert_csv": write_csv_gz(chexpert, folder / "mimic-cxr-2.0.0-chexpert.csv.gz")}


def test_mimic_sized_config_plans_64_shard_jobs_in_seconds(tmp_path):
    tables = mimic_sized_tables(tmp_path)
    overlay = write_config(tmp_path / "mimic.yaml", {
        "results": str(tmp_path / "results"),
        "mimic": {"image_root": str(tmp_path), "report_root": str(tmp_path),
                  "image_suffix": ".jpg", **{k: str(v) for k, v in tables.items()}},
        "chexpert_test": None, "rsna_pneumonia": None, "siim_pneumothorax": None,
        "chexpert_5x200": None,
        "images": {"shards": {"mimic": 64}},  # the shipped count, per data set
    })
    t0 = time.perf_counter()
    out = snakemake("-n", "all", "--configfile", "config.yaml", "tests/demo/config.yaml",
                    str(overlay))
    seconds = time.perf_counter() - t0
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.MULTILINE))
    assert stats["image_shard"] == "64" and stats["gather_images"] == "1"
    assert int(stats["total"]) < 100  # 64 shards + one job per stage: none per image or study
    assert seconds < 60, f"dry run of a {N_IMAGES:,}-image config took {seconds:.0f} s"
