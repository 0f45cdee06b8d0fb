# Linear probe: frozen image embeddings of the best checkpoint, cached once per split (embed),
# then one logistic regression per label at each label fraction (linear_probe). The probe's
# settings are params of linear_probe only: changing them never re-embeds.


rule embed:
    input:
        model=f"{R}/train/best.pt",
        cxr=embed_store,
    output:
        f"{R}/embeddings/{{dataset_split}}.npz",
    log:
        f"{R}/logs/embed/{{dataset_split}}.log",
    conda:
        "../../environment.yml"
    threads: SLURM.threads("embed", 8, gpu=1, mem_mb=64000, runtime="2h")
    resources:
        **SLURM.resources("embed", threads=8, gpu=1, mem_mb=64000, runtime="2h"),
    # Input size, precision and device come with the checkpoint (what training used).
    params:
        code=stage_code("embeddings"),
        split=lambda wc: (
            wc.dataset_split.removeprefix("mimic_")
            if wc.dataset_split.startswith("mimic_")
            else ""
        ),
        batch_size=config["evaluate"]["batch_size"],
    shell:
        "chexdino embed --model {input.model} --cxr {input.cxr} --split '{params.split}'"
        " --batch-size {params.batch_size} --out {output} > {log} 2>&1"


rule linear_probe:
    input:
        train=f"{R}/embeddings/mimic_train.npz",
        validate=f"{R}/embeddings/mimic_validate.npz",
        tests=expand(f"{R}/embeddings/{{evalset}}.npz", evalset=probe_eval_sets()),
        zero_shot=expand(
            f"{R}/eval/{{evalset}}/summary.json", evalset=probe_eval_sets()
        ),
    output:
        table=report(
            f"{R}/linear_probe/auroc.csv",
            caption="../report/linear_probe.rst",
            category="3. Zero-shot evaluation",
            subcategory="linear probe",
        ),
        figure=report(
            f"{R}/linear_probe/auroc_vs_fraction.png",
            caption="../report/linear_probe.rst",
            category="3. Zero-shot evaluation",
            subcategory="linear probe",
        ),
        summary=f"{R}/linear_probe/summary.json",
    log:
        f"{R}/logs/linear_probe.log",
    conda:
        "../../environment.yml"
    threads: SLURM.threads("linear_probe", 4, mem_mb=16000)
    resources:
        **SLURM.resources("linear_probe", threads=4, mem_mb=16000),
    params:
        code=stage_code("linear_probe"),
        probe=as_json(config["linear_probe"]),
        # Labels, uncertain-label policy and bootstrap seed are the zero-shot scorecard's.
        evaluate=as_json(
            {k: config["evaluate"][k] for k in ("labels", "uncertain", "seed")}
        ),
        names=" ".join(probe_eval_sets()),
    shell:
        "chexdino linear-probe --train {input.train} --validate {input.validate}"
        " --tests {input.tests} --names {params.names} --zero-shot {input.zero_shot}"
        " --linear-probe {params.probe} --evaluate {params.evaluate}"
        " --out {output.table} --summary {output.summary} --figure {output.figure}"
        " > {log} 2>&1"
