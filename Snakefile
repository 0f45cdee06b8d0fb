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
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        get_final_output(),


# On SLURM: each rule's request checked against its partition before anything is submitted.
check_slurm_requests()
