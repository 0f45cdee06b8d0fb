# Stage 1: choose images from the official tables (manifest + select rejects). The job's
# environment (for the provenance table) goes to a JSON beside the tables.


rule select_mimic:
    input:
        split=config["mimic"]["split_csv"],
        metadata=config["mimic"]["metadata_csv"],
        chexpert=config["mimic"]["chexpert_csv"],
    output:
        manifest=f"{R}/mimic/manifest.csv",
        rejects=f"{R}/mimic/select_rejects.csv",
        environment=f"{R}/mimic/select_environment.json",
    log:
        f"{R}/logs/select_mimic.log",
    conda:
        "../../environment.yml"
    resources:
        **SLURM.resources("select_mimic", threads=1, mem_mb=16000),
    params:
        code=stage_code("selection"),
        # Folders holding many files (not inputs of this rule): passed as plain values.
        image_root=lambda wildcards: config["mimic"]["image_root"],
        image_suffix=config["mimic"]["image_suffix"],
        report_root=lambda wildcards: config["mimic"]["report_root"],
        select=as_json(config["select"]),
    shell:
        "chexdino select-mimic --split {input.split} --metadata {input.metadata}"
        " --chexpert {input.chexpert} --image-root {params.image_root}"
        " --image-suffix {params.image_suffix} --report-root {params.report_root}"
        " --select {params.select} --manifest {output.manifest} --rejects {output.rejects}"
        " --environment {output.environment} > {log} 2>&1"


rule select_chexpert_test:
    input:
        groundtruth=(
            config["chexpert_test"]["groundtruth_csv"]
            if config.get("chexpert_test")
            else []
        ),
    output:
        manifest=f"{R}/chexpert_test/manifest.csv",
        rejects=f"{R}/chexpert_test/select_rejects.csv",
        environment=f"{R}/chexpert_test/select_environment.json",
    log:
        f"{R}/logs/select_chexpert_test.log",
    conda:
        "../../environment.yml"
    params:
        code=stage_code("selection"),
        image_root=(config.get("chexpert_test") or {}).get("image_root", ""),
    shell:
        "chexdino select-chexpert --groundtruth {input.groundtruth}"
        " --image-root {params.image_root} --manifest {output.manifest}"
        " --rejects {output.rejects} --environment {output.environment} > {log} 2>&1"


# The extra zero-shot sets (chexdino.evalsets), each from its official layout; the CheXpert
# 5x200 draw is also written as a reusable Path, class list.
rule select_rsna_pneumonia:
    input:
        table=evalset_table("rsna_pneumonia", "labels_csv"),
    output:
        manifest=f"{R}/rsna_pneumonia/manifest.csv",
        rejects=f"{R}/rsna_pneumonia/select_rejects.csv",
        environment=f"{R}/rsna_pneumonia/select_environment.json",
    log:
        f"{R}/logs/select_rsna_pneumonia.log",
    conda:
        "../../environment.yml"
    resources:
        **SLURM.resources("select_rsna_pneumonia", threads=1, mem_mb=8000),
    params:
        code=stage_code("evalsets"),
        settings=evalset_selection("rsna_pneumonia"),
    shell:
        "chexdino select-evalset --evalset rsna_pneumonia --settings {params.settings}"
        " --manifest {output.manifest} --rejects {output.rejects}"
        " --environment {output.environment} > {log} 2>&1"


rule select_siim_pneumothorax:
    input:
        table=evalset_table("siim_pneumothorax", "rle_csv"),
    output:
        manifest=f"{R}/siim_pneumothorax/manifest.csv",
        rejects=f"{R}/siim_pneumothorax/select_rejects.csv",
        environment=f"{R}/siim_pneumothorax/select_environment.json",
    log:
        f"{R}/logs/select_siim_pneumothorax.log",
    conda:
        "../../environment.yml"
    resources:
        **SLURM.resources("select_siim_pneumothorax", threads=1, mem_mb=8000),
    params:
        code=stage_code("evalsets"),
        settings=evalset_selection("siim_pneumothorax"),
    shell:
        "chexdino select-evalset --evalset siim_pneumothorax --settings {params.settings}"
        " --manifest {output.manifest} --rejects {output.rejects}"
        " --environment {output.environment} > {log} 2>&1"


rule select_chexpert_5x200:
    input:
        table=evalset_table("chexpert_5x200", "train_csv"),
    output:
        manifest=f"{R}/chexpert_5x200/manifest.csv",
        rejects=f"{R}/chexpert_5x200/select_rejects.csv",
        environment=f"{R}/chexpert_5x200/select_environment.json",
        selection=report(
            f"{R}/chexpert_5x200/chexpert_5x200.csv",
            caption="../report/chexpert_5x200.rst",
            category="3. Zero-shot evaluation",
            subcategory="chexpert_5x200",
        ),
    log:
        f"{R}/logs/select_chexpert_5x200.log",
    conda:
        "../../environment.yml"
    params:
        code=stage_code("evalsets"),
        settings=evalset_selection("chexpert_5x200"),
    shell:
        "chexdino select-evalset --evalset chexpert_5x200 --settings {params.settings}"
        " --manifest {output.manifest} --rejects {output.rejects}"
        " --selection {output.selection} --environment {output.environment} > {log} 2>&1"
