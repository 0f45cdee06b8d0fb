# Stage 2: images -> 320x320 uint8 HDF5, scattered over shards and gathered into one store.
# Shards are temporary: once gathered they are deleted, so the store (~39 GB for MIMIC-CXR)
# is not on disk twice. Snakemake keeps their records: a changed setting or an edited module
# still reruns them (and the gather), a rerun with nothing changed does not.


rule image_shard:
    input:
        manifest=f"{R}/{{dataset}}/manifest.csv",
    output:
        h5=temp(f"{R}/{{dataset}}/shards/{{scatteritem}}.h5"),
        rejects=temp(f"{R}/{{dataset}}/shards/{{scatteritem}}.rejects.csv"),
    log:
        f"{R}/logs/image_shard/{{dataset}}/{{scatteritem}}.log",
    conda:
        "../../environment.yml"
    # 2 decode threads locally (shards run side by side), 8 per SLURM job, fitted there.
    threads: SLURM.threads("image_shard", 8, local=2, mem_mb=16000, runtime="4h")
    resources:
        **SLURM.resources("image_shard", threads=8, mem_mb=16000, runtime="4h"),
    params:
        code=stage_code("images"),
        images=as_json(config["images"]),
    shell:
        "chexdino images --manifest {input.manifest} --shard {wildcards.scatteritem}"
        " --images {params.images} --threads {threads} --out {output.h5}"
        " --rejects {output.rejects} > {log} 2>&1"


rule gather_images:
    input:
        h5=image_shard_files(".h5"),
        rejects=image_shard_files(".rejects.csv"),
    output:
        h5=f"{R}/{{dataset}}/cxr.h5",
        rejects=f"{R}/{{dataset}}/image_rejects.csv",
    log:
        f"{R}/logs/gather_images/{{dataset}}.log",
    conda:
        "../../environment.yml"
    resources:
        **SLURM.resources("gather_images", threads=1, mem_mb=16000, runtime="4h"),
    params:
        code=stage_code("h5store"),
    shell:
        "chexdino gather --shards {input.h5} --shard-rejects {input.rejects}"
        " --out {output.h5} --rejects {output.rejects} > {log} 2>&1"
