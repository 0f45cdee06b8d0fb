# Glue shared by all stages: config validation, result paths, small input functions.
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from chexdino.config import validate_config
from chexdino.provenance import module_closure
from chexdino.slurm_check import RequestError, check_workflow_requests

# Schema plus cross-key and file checks; every problem is named by its dotted key.
validate_config(
    config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
)

R = config["results"]


def use_planning_environment():
    """Every job's shell finds the ``chexdino`` of the environment that planned the run.

    A SLURM job starts with the user's login PATH, which need not hold the virtual
    environment (``.venv/bin/snakemake`` runs without activating it). Snakemake starts each
    job with the interpreter that runs this file, so the folder of that interpreter goes
    first on PATH, here and in every job process.
    """
    bindir = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(bindir, "chexdino")):
        path = os.environ.get("PATH", "")
        if path.split(os.pathsep)[0] != bindir:
            os.environ["PATH"] = bindir + os.pathsep + path


use_planning_environment()


scattergather:
    images=config["images"]["shards"],


wildcard_constraints:
    dataset="mimic|chexpert_test",
    evalset="mimic_test|chexpert_test",


def as_json(value):
    """A config section as one shell-quoted JSON argument for a chexdino subcommand."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def stage_code(module):
    """Source files a stage runs (its chexdino module and what that imports), as inputs:
    editing one reruns the stage and everything downstream of it."""
    return [str(path) for path in module_closure(module)]


def eval_sets():
    """MIMIC-CXR's test split always; the CheXpert test set when configured."""
    sets = ["mimic_test"]
    if config.get("chexpert_test"):
        sets.append("chexpert_test")
    return sets


def eval_store(wildcards):
    """The image store an evaluation set reads (MIMIC's test rows live in the MIMIC store)."""
    dataset = "mimic" if wildcards.evalset == "mimic_test" else "chexpert_test"
    return f"{R}/{dataset}/cxr.h5"


def validation_prompts():
    """The prompt settings training needs for its validation AUROC (model selection).

    Only these reach the train rule, so changing another evaluation setting (uncertain-label
    policy, bootstrap, ensemble) reruns evaluation, not training.
    """
    keys = ("positive_templates", "negative_templates", "prompt_overrides")
    return {k: config["evaluate"][k] for k in keys if k in config["evaluate"]}


def get_final_output():
    return [
        f"{R}/mimic/dataset_summary.json",
        f"{R}/train/curves.png",
        *expand(f"{R}/eval/{{evalset}}/summary.json", evalset=eval_sets()),
        f"{R}/run_summary.rst",
    ]


def check_slurm_requests():
    """On SLURM, fit each rule's request to its partition or stop before submitting anything
    (chexdino.slurm_check). Called at the end of the Snakefile, once every rule exists.
    """
    try:
        check_workflow_requests(workflow, config, logger.warning)
    except RequestError as error:
        raise WorkflowError(str(error)) from None


onstart:
    slurm_logs_follow_results()


def slurm_logs_follow_results():
    """SLURM's job logs go to <results>/logs/slurm unless slurm-logdir is set."""
    settings = workflow.executor_settings
    executor = getattr(workflow.scheduler, "_executor", None)
    if getattr(settings, "logdir", True) is None and hasattr(executor, "slurm_logdir"):
        executor.slurm_logdir = Path(R, "logs", "slurm").resolve()
