"""The run_summary stage: every job's environment, the counts and headline AUROCs in one place.

Each job records :func:`chexdino.provenance.environment` in an output it writes; this stage
reads those records (the data stages' from their stores and small JSON files, training's
from ``checkpoints.json``, evaluation's from ``summary.json``) and writes the report's
landing-page summary (``run_summary.rst``), the provenance table (``provenance.csv``, a
column per job) and the merged configuration (``run_config.yaml``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from chexdino import __version__
from chexdino.provenance import environment


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


def _flag_text(summary: dict[str, Any]) -> str:
    """"; **worse than chance** ...: No Finding (CI below 0.5)" or "" (metrics.chance_flags)."""
    flags = summary.get("flags") or {}
    named = [f"{lab} (CI below 0.5)" for lab in flags.get("below_chance", [])]
    named += [f"{lab} (AUROC < 0.5)" for lab in flags.get("auroc_below_half", [])]
    if not named:
        return ""
    return (f"; **worse than chance** (check the prompts or the label polarity): "
            f"{', '.join(named)}")


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
                     f"{_fmt_auroc(summary)}; all labels: {all_text}{_flag_text(summary)}")
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
                      job_records: Sequence[Path] = (),
                      leakage_json: Path | None = None) -> None:
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
    landing = landing_summary(dataset, training, scorecards, environments)
    if leakage_json is not None:
        from chexdino.leakage import leakage_text

        landing += leakage_text(json.loads(Path(leakage_json).read_text())) + "\n"
    Path(out_rst).write_text(landing)
    provenance_table(environments).to_csv(out_table, index=False)
    Path(out_config).write_text(
        "# The configuration this run used (defaults, --configfile and --config merged).\n"
        + yaml.safe_dump(config, sort_keys=False))
