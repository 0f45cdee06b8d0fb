# Stage 1: choose images from the official tables (manifest + select rejects). The job's
# environment (for the provenance table) goes to a JSON beside the tables.


rule select_mimic:
    input:
        code=stage_code("selection"),
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
        code=stage_code("selection"),
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
        image_root=(config.get("chexpert_test") or {}).get("image_root", ""),
    shell:
        "chexdino select-chexpert --groundtruth {input.groundtruth}"
        " --image-root {params.image_root} --manifest {output.manifest}"
        " --rejects {output.rejects} --environment {output.environment} > {log} 2>&1"
