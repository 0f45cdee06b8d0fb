# Glue shared by all stages: config validation, result paths, small input functions.
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from chexdino.config import PROMPT_KEYS, validate_config
from chexdino.job_env import export_source_folder, put_planning_environment_first
from chexdino.code_version import code_version
from chexdino.slurm_check import RequestError, processes_per_node, slurm_requests

# Schema plus cross-key and file checks; every problem is named by its dotted key.
validate_config(
    config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
)

R = config["results"]


# On SLURM (the profile's default-resources name a slurm_partition): the partitions, asked
# of scontrol once; each submitted rule's threads: and resources: come from SLURM below,
# fitted to its partition (chexdino.slurm_check).
SLURM = slurm_requests(workflow, config, logger.warning)


# Jobs run the chexdino of the environment that planned them, whatever the user's PATH.
put_planning_environment_first(sys.executable)
# With --software-deployment-method conda, environment.post-deploy.sh installs chexdino from
# this folder into the environment Snakemake builds from environment.yml.
export_source_folder(workflow.basedir)


wildcard_constraints:
    dataset="mimic|chexpert_test|rsna_pneumonia|siim_pneumothorax|chexpert_5x200",
    evalset="mimic_test|chexpert_test|rsna_pneumonia|siim_pneumothorax|chexpert_5x200",
    dataset_split="mimic_train|mimic_validate|mimic_test|chexpert_test",
    scatteritem=r"\d+-of-\d+",


def as_json(value):
    """A config section as one shell-quoted JSON argument for a chexdino subcommand."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def stage_code(module):
    """The version of the code a stage runs (its chexdino module and every module that imports),
    as a parameter: a change of behaviour reruns the stage and everything downstream of it; a
    comment, a docstring, formatting or a touched file reruns nothing (chexdino.code_version).
    """
    return code_version(module)


def image_shards(dataset):
    """How many shard jobs convert a data set's images: ``images.shards`` is one count for
    every data set or a mapping per data set (377k MIMIC-CXR films, 500 CheXpert ones).
    """
    shards = config["images"]["shards"]
    return shards[dataset] if isinstance(shards, dict) else shards


def image_shard_files(suffix):
    """Input function: the shard files (``1-of-N`` ... ``N-of-N``) of the data set gathered."""

    def files(wildcards):
        n = image_shards(wildcards.dataset)
        return [
            f"{R}/{wildcards.dataset}/shards/{i}-of-{n}{suffix}"
            for i in range(1, n + 1)
        ]

    return files


# The extra zero-shot sets (chexdino.evalsets), each on when its config section is set.
EXTRA_EVAL_SETS = ("rsna_pneumonia", "siim_pneumothorax", "chexpert_5x200")


def extra_eval_sets():
    """The extra zero-shot sets configured (RSNA Pneumonia, SIIM-ACR, CheXpert 5x200)."""
    return [name for name in EXTRA_EVAL_SETS if config.get(name)]


def eval_sets():
    """MIMIC-CXR's test split always; the CheXpert test set and the extra sets when configured."""
    sets = ["mimic_test"]
    if config.get("chexpert_test"):
        sets.append("chexpert_test")
    return sets + extra_eval_sets()


def probe_eval_sets():
    """The sets the linear probe is scored on: MIMIC-CXR's test split and, when configured,
    the CheXpert test set (both carry the 14 CheXpert labels the probe learns)."""
    return [s for s in eval_sets() if s in ("mimic_test", "chexpert_test")]


def eval_store(wildcards):
    """The image store an evaluation set reads (MIMIC's test rows live in the MIMIC store)."""
    dataset = "mimic" if wildcards.evalset == "mimic_test" else wildcards.evalset
    return f"{R}/{dataset}/cxr.h5"


def eval_settings(evalset, **changes):
    """The evaluate section an evaluation set is scored with: an extra set's own ``labels``
    and ``prompt_overrides`` (over evaluate's) replace the shared ones; MIMIC-CXR and the
    CheXpert test set get the evaluate section unchanged."""
    settings = {**config["evaluate"], **changes}
    if evalset in EXTRA_EVAL_SETS:
        section = config[evalset]
        settings["labels"] = section["labels"]
        overrides = section.get("prompt_overrides")
        if overrides:
            settings["prompt_overrides"] = {
                **(settings.get("prompt_overrides") or {}),
                **overrides,
            }
    return settings


def embed_store(wildcards):
    """The image store a cached embedding split reads (linear probe)."""
    dataset = "chexpert_test" if wildcards.dataset_split == "chexpert_test" else "mimic"
    return f"{R}/{dataset}/cxr.h5"


def linear_probe_output():
    """The linear probe's table and figure, unless ``linear_probe.enabled`` is false."""
    if not config.get("linear_probe", {}).get("enabled", False):
        return []
    return [f"{R}/linear_probe/auroc.csv", f"{R}/linear_probe/auroc_vs_fraction.png"]


def job_records():
    """Outputs carrying the data-stage jobs' environment, for run_summary's provenance table:
    each data set's selection record and image store (with its shards'), the reports' two.
    """
    datasets = ["mimic"] + (["chexpert_test"] if config.get("chexpert_test") else [])
    datasets += extra_eval_sets()
    return [
        *(
            f"{R}/{d}/{name}"
            for d in datasets
            for name in ("select_environment.json", "cxr.h5")
        ),
        f"{R}/mimic/impressions_environment.json",
        f"{R}/mimic/tokens.h5",
    ]


def validation_prompts():
    """The prompt settings training needs for its validation AUROC (model selection).

    Only these reach the train rule, so changing another evaluation setting (uncertain-label
    policy, bootstrap, ensemble) reruns evaluation, not training.
    """
    return {k: config["evaluate"][k] for k in PROMPT_KEYS if k in config["evaluate"]}


def published_comparison():
    """CheXzero's published AUROCs beside ours, when the CheXpert test set is configured."""
    if config.get("chexpert_test"):
        return [f"{R}/eval/chexpert_test/published_comparison.csv"]
    return []


def evalset_table(name, key):
    """The table an extra set reads, when the set is configured."""
    return config[name][key] if config.get(name) else []


def evalset_selection(name):
    """An extra set's selection settings, as one JSON argument: its prompts are left out, so
    changing them reruns its evaluation, not its selection and images."""
    section = config.get(name) or {}
    return as_json({k: v for k, v in section.items() if k != "prompt_overrides"})


def accuracy_tables():
    """The N-way zero-shot accuracy of CheXpert 5x200, when configured."""
    if config.get("chexpert_5x200"):
        return [f"{R}/eval/chexpert_5x200/accuracy.csv"]
    return []


def compared_models():
    """Names of the other models scored beside this run's (``compare_models``)."""
    return sorted(config.get("compare_models") or {})


def model_comparisons():
    """One side-by-side table per evaluation set when other models are configured."""
    if not compared_models():
        return []
    return expand(f"{R}/eval/{{evalset}}/model_comparison.csv", evalset=eval_sets())


def get_final_output():
    return [
        f"{R}/mimic/dataset_summary.json",
        f"{R}/train/curves.png",
        *expand(f"{R}/eval/{{evalset}}/summary.json", evalset=eval_sets()),
        f"{R}/run_summary.rst",
        f"{R}/export/model.safetensors",
        f"{R}/model_summary.rst",
        *model_comparisons(),
        *accuracy_tables(),
        *linear_probe_output(),
    ]


def check_slurm_requests():
    """On SLURM, stop before submitting anything where a rule's request cannot run on its
    partition, every such rule named (chexdino.slurm_check). Called at the end of the
    Snakefile, once every rule has asked for its resources.
    """
    try:
        SLURM.check()
    except RequestError as error:
        raise WorkflowError(str(error)) from None


onstart:
    slurm_log_folder()


def slurm_log_folder():
    """SLURM's job logs go where the plugin's slurm-logdir setting says (the profile:
    results/logs/slurm, the default results folder's). A warning where that is not under
    this config's results folder, with the option that puts them there."""
    settings = workflow.executor_settings
    if not hasattr(settings, "logdir"):
        return  # not SLURM
    folder = Path(settings.logdir or ".snakemake/slurm_logs").resolve()
    if not folder.is_relative_to(Path(R).resolve()):
        logger.warning(
            f"SLURM job logs: in {folder}, not under {R}; "
            f"--slurm-logdir {R}/logs/slurm puts them with the results"
        )
