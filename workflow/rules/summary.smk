# Stage 6: the dataset accounting (input = kept + rejected) and the report's dataset page.


rule dataset_summary:
    input:
        manifest=f"{R}/mimic/manifest.csv",
        select_rejects=f"{R}/mimic/select_rejects.csv",
        cxr=f"{R}/mimic/cxr.h5",
        image_rejects=f"{R}/mimic/image_rejects.csv",
        impressions=f"{R}/mimic/impressions.csv",
        report_rejects=f"{R}/mimic/report_rejects.csv",
        tokens=f"{R}/mimic/tokens.h5",
    output:
        summary=f"{R}/mimic/dataset_summary.json",
        rejects=report(
            f"{R}/mimic/rejects.csv",
            caption="../report/rejects.rst",
            category="1. Dataset",
        ),
        figure=report(
            f"{R}/mimic/dataset_summary.png",
            caption="../report/dataset.rst",
            category="1. Dataset",
        ),
    log:
        f"{R}/logs/dataset_summary.log",
    conda:
        "../../environment.yml"
    resources:
        **SLURM.resources("dataset_summary", threads=1, mem_mb=16000),
    params:
        code=stage_code("dataset_summary"),
        report=as_json(config.get("report") or {}),
    shell:
        "chexdino summarize --manifest {input.manifest}"
        " --select-rejects {input.select_rejects} --cxr {input.cxr}"
        " --image-rejects {input.image_rejects} --impressions {input.impressions}"
        " --report-rejects {input.report_rejects} --tokens {input.tokens}"
        " --report {params.report} --out {output.summary}"
        " --rejects {output.rejects} --figure {output.figure} > {log} 2>&1"


rule run_summary:
    input:
        dataset=f"{R}/mimic/dataset_summary.json",
        checkpoints=f"{R}/train/checkpoints.json",
        leakage=f"{R}/mimic/leakage.json",
        scorecards=expand(f"{R}/eval/{{evalset}}/summary.json", evalset=eval_sets()),
        # Outputs of the data stages that carry their jobs' environment.
        records=job_records(),
    output:
        landing=f"{R}/run_summary.rst",
        provenance=report(
            f"{R}/provenance.csv",
            caption="../report/provenance.rst",
            category="4. Provenance",
        ),
        config=report(
            f"{R}/run_config.yaml",
            caption="../report/config.rst",
            category="4. Provenance",
        ),
    log:
        f"{R}/logs/run_summary.log",
    conda:
        "../../environment.yml"
    params:
        code=stage_code("run_summary"),
        config=as_json(config),
    shell:
        "chexdino run-summary --dataset {input.dataset} --checkpoints {input.checkpoints}"
        " --eval-summaries {input.scorecards} --config {params.config}"
        " --out {output.landing} --provenance {output.provenance}"
        " --config-out {output.config} --job-records {input.records}"
        " --leakage {input.leakage} > {log} 2>&1"
