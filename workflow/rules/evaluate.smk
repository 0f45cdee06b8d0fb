# Stage 5: zero-shot AUROC scorecard (GPU rule) on each evaluation set.


rule evaluate:
    input:
        model=f"{R}/train/best.pt",
        checkpoints=f"{R}/train/checkpoints.json",
        cxr=eval_store,
    output:
        summary=f"{R}/eval/{{evalset}}/summary.json",
        table=report(
            f"{R}/eval/{{evalset}}/auroc.csv",
            caption="../report/auroc.rst",
            category="3. Zero-shot evaluation",
            subcategory="{evalset}",
        ),
        roc=report(
            f"{R}/eval/{{evalset}}/roc.png",
            caption="../report/roc.rst",
            category="3. Zero-shot evaluation",
            subcategory="{evalset}",
        ),
        probabilities=report(
            f"{R}/eval/{{evalset}}/probabilities.csv",
            caption="../report/probabilities.rst",
            category="3. Zero-shot evaluation",
            subcategory="{evalset}",
        ),
    log:
        f"{R}/logs/evaluate/{{evalset}}.log",
    conda:
        "../../environment.yml"
    # Capped at --cores locally; on SLURM fitted to the partition's nodes (common.smk).
    threads: SLURM.threads("evaluate", 8, gpu=1, mem_mb=64000, runtime="2h")
    resources:
        **SLURM.resources("evaluate", threads=8, gpu=1, mem_mb=64000, runtime="2h"),
    # Input size, precision and device come with the checkpoint (what training used).
    params:
        code=stage_code("evaluate"),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
        # An extra set's own labels and prompts (eval_settings): a change reruns that set only.
        evaluate=lambda wc: as_json(eval_settings(wc.evalset)),
        split=lambda wc: "test" if wc.evalset == "mimic_test" else "",
    shell:
        "chexdino evaluate --model {input.model} --checkpoints {input.checkpoints}"
        " --cxr {input.cxr} --split '{params.split}' --evaluate {params.evaluate}"
        " --out-dir {params.out_dir} > {log} 2>&1"


# Image-report retrieval (Recall@1/5/10 both ways, study level) on MIMIC-CXR's test split.
rule retrieval:
    input:
        model=f"{R}/train/best.pt",
        cxr=f"{R}/mimic/cxr.h5",
        tokens=f"{R}/mimic/tokens.h5",
    output:
        table=report(
            f"{R}/eval/mimic_test/retrieval.csv",
            caption="../report/retrieval.rst",
            category="3. Zero-shot evaluation",
            subcategory="mimic_test",
        ),
        summary=f"{R}/eval/mimic_test/retrieval.json",
    log:
        f"{R}/logs/retrieval.log",
    conda:
        "../../environment.yml"
    threads: SLURM.threads("retrieval", 8, gpu=1)
    resources:
        **SLURM.resources("retrieval", threads=8, gpu=1),
    # Only the evaluate keys retrieval reads (other settings do not rerun it); input size,
    # precision and device come with the checkpoint.
    params:
        code=stage_code("retrieval"),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
        evaluate=as_json(
            {k: config["evaluate"][k] for k in ("bootstrap", "seed", "batch_size")}
        ),
    shell:
        "chexdino retrieval --model {input.model} --cxr {input.cxr} --tokens {input.tokens}"
        " --split test --evaluate {params.evaluate} --out-dir {params.out_dir} > {log} 2>&1"


# CheXzero's published AUROCs (one data file with their source) beside our CheXpert scorecard.
rule compare_published:
    input:
        auroc=f"{R}/eval/chexpert_test/auroc.csv",
        summary=f"{R}/eval/chexpert_test/summary.json",
        published=os.path.join(
            workflow.basedir, "workflow/resources/published_auroc.csv"
        ),
    output:
        report(
            f"{R}/eval/chexpert_test/published_comparison.csv",
            caption="../report/published.rst",
            category="3. Zero-shot evaluation",
            subcategory="chexpert_test",
        ),
    log:
        f"{R}/logs/compare_published.log",
    conda:
        "../../environment.yml"
    params:
        code=stage_code("published"),
    shell:
        "chexdino compare-published --auroc {input.auroc} --summary {input.summary}"
        " --published {input.published} --eval-set chexpert_test --out {output}"
        " > {log} 2>&1"


# Another model (compare_models: an exported or any open_clip model folder), same protocol.
rule evaluate_model:
    input:
        model=lambda wildcards: config["compare_models"][wildcards.other],
        cxr=eval_store,
    output:
        summary=f"{R}/eval/{{evalset}}/models/{{other}}/summary.json",
        table=f"{R}/eval/{{evalset}}/models/{{other}}/auroc.csv",
        probabilities=f"{R}/eval/{{evalset}}/models/{{other}}/probabilities.csv",
        roc=f"{R}/eval/{{evalset}}/models/{{other}}/roc.png",
    log:
        f"{R}/logs/evaluate/{{evalset}}-{{other}}.log",
    wildcard_constraints:
        other="[A-Za-z0-9_-]+",
    conda:
        "../../environment.yml"
    threads: SLURM.threads("evaluate_model", 8, gpu=1)
    resources:
        **SLURM.resources("evaluate_model", threads=8, gpu=1),
    # The folder brings its input size (and a chexdino export its precision).
    params:
        code=stage_code("evaluate"),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
        evaluate=lambda wc: as_json(eval_settings(wc.evalset, ensemble_top_k=1)),
        split=lambda wc: "test" if wc.evalset == "mimic_test" else "",
    shell:
        "chexdino evaluate --model {input.model} --cxr {input.cxr}"
        " --split '{params.split}' --evaluate {params.evaluate}"
        " --out-dir {params.out_dir} > {log} 2>&1"


# This run's scorecard and every compared model's, a column each.
rule compare_models:
    input:
        ours=f"{R}/eval/{{evalset}}/auroc.csv",
        others=lambda wildcards: expand(
            f"{R}/eval/{wildcards.evalset}/models/{{other}}/auroc.csv",
            other=compared_models(),
        ),
    output:
        report(
            f"{R}/eval/{{evalset}}/model_comparison.csv",
            caption="../report/model_comparison.rst",
            category="3. Zero-shot evaluation",
            subcategory="{evalset}",
        ),
    log:
        f"{R}/logs/compare_models/{{evalset}}.log",
    conda:
        "../../environment.yml"
    params:
        code=stage_code("published"),
        names=lambda wildcards: " ".join(["this-run", *compared_models()]),
        folders=lambda wildcards, input: " ".join(
            os.path.dirname(p) for p in [input.ours, *input.others]
        ),
    shell:
        "chexdino compare-models --names {params.names} --scorecards {params.folders}"
        " --out {output} > {log} 2>&1"


# CheXpert 5x200: N-way zero-shot accuracy (argmax of the pair probabilities over its classes).
rule accuracy_5x200:
    input:
        probabilities=f"{R}/eval/chexpert_5x200/probabilities.csv",
        manifest=f"{R}/chexpert_5x200/manifest.csv",
    output:
        report(
            f"{R}/eval/chexpert_5x200/accuracy.csv",
            caption="../report/accuracy.rst",
            category="3. Zero-shot evaluation",
            subcategory="chexpert_5x200",
        ),
    log:
        f"{R}/logs/accuracy_5x200.log",
    conda:
        "../../environment.yml"
    params:
        code=stage_code("evalsets"),
        evaluate=lambda wc: as_json(eval_settings("chexpert_5x200")),
    shell:
        "chexdino accuracy --probabilities {input.probabilities}"
        " --manifest {input.manifest} --evaluate {params.evaluate} --out {output}"
        " > {log} 2>&1"
