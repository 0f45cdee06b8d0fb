# Stage 4: contrastive training (GPU rule). Resumes from its checkpoints when rerun.
import signal

# SLURM's pre-timeout USR1 reaches every process of the job step: the Snakemake process
# running this job must survive it so that only the trainer (exec'd below) reacts, writes
# its checkpoint and exits 75 for the retry.
signal.signal(signal.SIGUSR1, signal.SIG_IGN)


# The whole MIMIC-CXR: the uint8 store (~38.6 GB) is held in RAM / GPU memory; 25k steps
# take 20-35 min on one H100, the rest of the 24 h is margin. More GPUs: README, "Several GPUs".
TRAIN_REQUEST = dict(threads=8, gpu=1, mem_mb=96000, runtime="24h")


rule train:
    input:
        cxr=f"{R}/mimic/cxr.h5",
        tokens=f"{R}/mimic/tokens.h5",
        # The leakage guard (leakage.smk) passed: no training patient in validate or test.
        leakage=f"{R}/mimic/leakage.json",
    output:
        model=f"{R}/train/best.pt",
        checkpoints=f"{R}/train/checkpoints.json",
        metrics=f"{R}/train/metrics.csv",
        validation=f"{R}/train/validation.csv",
    log:
        f"{R}/logs/train.log",
    conda:
        "../../environment.yml"
    # Capped at --cores locally; on SLURM fitted to the partition's nodes (common.smk).
    threads: SLURM.threads("train", **TRAIN_REQUEST)
    resources:
        **SLURM.resources("train", **TRAIN_REQUEST),
        nodes=1,
    params:
        code=stage_code("train"),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        nproc=lambda wildcards, resources: processes_per_node(
            resources.gpu, resources.get("gres", ""), resources.nodes
        ),
        model=as_json(config["model"]),
        train=as_json(config["train"]),
        prompts=as_json(validation_prompts()),
    shell:
        # exec: the trainer itself receives SLURM's USR1 (not a shell that would die of it);
        # with several GPUs it waits for torchrun and exits 75 when the trainers stopped.
        "exec chexdino train --cxr {input.cxr} --tokens {input.tokens} --out-dir {params.out_dir}"
        " --model {params.model} --train {params.train} --evaluate {params.prompts}"
        " --nproc {params.nproc} --nodes {resources.nodes}"
        " > {log} 2>&1"


rule plot_training:
    input:
        metrics=f"{R}/train/metrics.csv",
        validation=f"{R}/train/validation.csv",
    output:
        report(
            f"{R}/train/curves.png",
            caption="../report/training.rst",
            category="2. Training",
        ),
    log:
        f"{R}/logs/plot_training.log",
    conda:
        "../../environment.yml"
    params:
        code=stage_code("plots"),
    shell:
        "chexdino plot-training --metrics {input.metrics} --validation {input.validation}"
        " --out {output} > {log} 2>&1"
