# chexdino: MIMIC-CXR images + reports -> CLIP-style model -> zero-shot AUROC scorecard.
# This file is a table of contents; each stage lives in workflow/rules/, logic in src/chexdino.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/images.smk"
include: "workflow/rules/impressions.smk"
include: "workflow/rules/leakage.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/linear_probe.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/export.smk"


# Jobs of seconds and little memory run in the Snakemake process itself, not as cluster jobs
# that wait in a queue: plots, summaries, comparison tables, the export and its model card,
# the 500-row CheXpert test selection, the CheXpert 5x200 draw and its accuracy. The rest go
# to SLURM with the profile's requests.
localrules:
    all,
    select_chexpert_test,
    select_chexpert_5x200,
    accuracy_5x200,
    leakage_check,
    plot_training,
    run_summary,
    compare_published,
    compare_models,
    export,


rule all:
    default_target: True
    input:
        get_final_output(),


# On SLURM: each rule's request checked against its partition before anything is submitted.
check_slurm_requests()
