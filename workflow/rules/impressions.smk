# Stage 3: reports -> impressions -> CLIP BPE tokens (row-aligned with the image store).


# Every study of the official split table, not the manifest's: the view / split / max_images
# selection then reruns the image stages only (tokens join impressions by study_id).
rule impressions:
    input:
        split=config["mimic"]["split_csv"],
    output:
        impressions=f"{R}/mimic/impressions.csv",
        rejects=f"{R}/mimic/report_rejects.csv",
        environment=f"{R}/mimic/impressions_environment.json",
    log:
        f"{R}/logs/impressions.log",
    conda:
        "../../environment.yml"
    resources:
        **SLURM.resources("impressions", threads=1, mem_mb=8000, runtime="2h"),
    params:
        code=stage_code("impressions"),
        report_root=lambda wildcards: config["mimic"]["report_root"],
    shell:
        "chexdino impressions --split {input.split} --report-root {params.report_root}"
        " --out {output.impressions} --rejects {output.rejects}"
        " --environment {output.environment} > {log} 2>&1"


rule tokens:
    input:
        cxr=f"{R}/mimic/cxr.h5",
        impressions=f"{R}/mimic/impressions.csv",
    output:
        f"{R}/mimic/tokens.h5",
    log:
        f"{R}/logs/tokens.log",
    conda:
        "../../environment.yml"
    resources:
        **SLURM.resources("tokens", threads=1, mem_mb=16000),
    params:
        code=stage_code("tokens"),
        reports=as_json(config["reports"]),
    shell:
        "chexdino tokens --cxr {input.cxr} --impressions {input.impressions}"
        " --reports {params.reports} --out {output} > {log} 2>&1"
