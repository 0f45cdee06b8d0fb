# Glue shared by all stages: config validation, result paths, small input functions.
import json
import os
import shlex

from chexdino.config import validate_config
from chexdino.provenance import module_closure

# Schema plus cross-key and file checks; every problem is named by its dotted key.
validate_config(
    config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
)

R = config["results"]


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


def published_comparison():
    """CheXzero's published AUROCs beside ours, when the CheXpert test set is configured."""
    if config.get("chexpert_test"):
        return [f"{R}/eval/chexpert_test/published_comparison.csv"]
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
    ]
