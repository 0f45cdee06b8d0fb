# Stage 7: hand the trained model over: an open_clip model folder with its model card, and
# the landing page's block on retrieval, the published comparison and where the folder is.


rule export:
    input:
        model=f"{R}/train/best.pt",
        checkpoints=f"{R}/train/checkpoints.json",
        dataset=f"{R}/mimic/dataset_summary.json",
        scorecards=expand(f"{R}/eval/{{evalset}}/auroc.csv", evalset=eval_sets()),
        retrieval=f"{R}/eval/mimic_test/retrieval.csv",
        published=published_comparison(),
        comparisons=model_comparisons(),
    output:
        weights=f"{R}/export/model.safetensors",
        config=f"{R}/export/open_clip_config.json",
        card=report(
            f"{R}/export/README.md",
            caption="../report/export.rst",
            category="5. Exported model",
        ),
        landing=f"{R}/model_summary.rst",
    log:
        f"{R}/logs/export.log",
    conda:
        "../../environment.yml"
    params:
        code=stage_code("export"),
        results=lambda wildcards, input: os.path.dirname(
            os.path.dirname(input.checkpoints)
        ),
        evaluate=as_json(config["evaluate"]),
        select=as_json(config["select"]),
        out_dir=lambda wildcards, output: os.path.dirname(output.weights),
    shell:
        "chexdino export --model {input.model} --results {params.results}"
        " --out-dir {params.out_dir} --landing {output.landing}"
        " --evaluate {params.evaluate} --select {params.select} > {log} 2>&1"
