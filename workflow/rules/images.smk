# Stage 2: images -> 320x320 uint8 HDF5, scattered over shards and gathered into one store.


rule image_shard:
    input:
        code=stage_code("images"),
        manifest=f"{R}/{{dataset}}/manifest.csv",
    output:
        h5=f"{R}/{{dataset}}/shards/{{scatteritem}}.h5",
        rejects=f"{R}/{{dataset}}/shards/{{scatteritem}}.rejects.csv",
    log:
        f"{R}/logs/image_shard/{{dataset}}/{{scatteritem}}.log",
    conda:
        "../envs/chexdino.yaml"
    threads: 2
    params:
        images=as_json(config["images"]),
    shell:
        "chexdino images --manifest {input.manifest} --shard {wildcards.scatteritem}"
        " --images {params.images} --threads {threads} --out {output.h5}"
        " --rejects {output.rejects} > {log} 2>&1"


rule gather_images:
    input:
        code=stage_code("h5store"),
        h5=gather.images(f"{R}/{{{{dataset}}}}/shards/{{scatteritem}}.h5"),
        rejects=gather.images(f"{R}/{{{{dataset}}}}/shards/{{scatteritem}}.rejects.csv"),
    output:
        h5=f"{R}/{{dataset}}/cxr.h5",
        rejects=f"{R}/{{dataset}}/image_rejects.csv",
    log:
        f"{R}/logs/gather_images/{{dataset}}.log",
    conda:
        "../envs/chexdino.yaml"
    shell:
        "chexdino gather --shards {input.h5} --shard-rejects {input.rejects}"
        " --out {output.h5} --rejects {output.rejects} > {log} 2>&1"
