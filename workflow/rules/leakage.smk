# Before training: no patient of the training split in an evaluation set of the same source
# (MIMIC-CXR's validate/test splits). A leaking custom split stops the run here.


rule leakage_check:
    input:
        manifest=f"{R}/mimic/manifest.csv",
    output:
        report(
            f"{R}/mimic/leakage.json",
            caption="../report/leakage.rst",
            category="1. Dataset",
        ),
    log:
        f"{R}/logs/leakage_check.log",
    conda:
        "../../environment.yml"
    params:
        code=stage_code("leakage"),
    shell:
        "chexdino leakage-check --manifest {input.manifest} --out {output} > {log} 2>&1"
