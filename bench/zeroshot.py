"""Zero-shot scoring throughput on one GPU: full-size model, uint8 store -> probabilities.

Measures the evaluate stage's hot path (``embed_images`` over a 320x320 uint8 store, prompt
embedding, CheXzero probabilities, AUROC table with 1000 bootstraps) for eager and compiled
image towers at a few batch sizes.

    python bench/zeroshot.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chexdino import LABELS, h5store, metrics
from chexdino.config import PromptConfig
from chexdino.inference import embed_images, zero_shot_probs
from chexdino.model import build_model
from synthetic import make_store

FULL_MODEL = {"vision": {"weights": None, "random_init": True},
              "text": {"weights": None, "random_init": True}}


def time_embedding(model, images: torch.Tensor, batch: int, repeats: int = 2) -> float:
    """img/s of embed_images over the whole (GPU-resident) uint8 array, after a warm-up."""
    embed_images(model, images[:batch * 2], 224, images.device, batch, "bf16")
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        embed_images(model, images, 224, images.device, batch, "bf16")
        torch.cuda.synchronize()
        best = max(best, len(images) / (time.perf_counter() - t0))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/chexdino-zs"))
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--batches", default="256,512")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cxr, _ = make_store(args.work, args.images, 0)
    t0 = time.perf_counter()
    images = torch.from_numpy(h5store.load_cxr_array(cxr)).cuda()
    load_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(FULL_MODEL).cuda().eval()
    rows = {}
    for batch in map(int, args.batches.split(",")):
        rows[f"eager b{batch}"] = time_embedding(model, images, batch)
        print(f"eager b{batch}", rows[f"eager b{batch}"], flush=True)
    compiled = build_model(FULL_MODEL, load_weights=False).cuda().eval()
    compiled.load_state_dict(model.state_dict())
    compiled.visual = torch.compile(compiled.visual)
    for batch in map(int, args.batches.split(",")):
        rows[f"compiled b{batch}"] = time_embedding(compiled, images, batch)
        print(f"compiled b{batch}", rows[f"compiled b{batch}"], flush=True)
    # The rest of the stage, once: prompts, probabilities, metrics with 1000 bootstraps.
    t0 = time.perf_counter()
    emb = embed_images(compiled, images, 224, images.device, 512, "bf16")
    probs = zero_shot_probs(model, emb, list(LABELS), PromptConfig.from_section(),
                            images.device, "bf16")
    targets = (np.random.default_rng(0).random(probs.shape) < 0.3).astype(float)
    table = metrics.auroc_table(probs, targets, list(LABELS), 1000, 0)
    stage_s = time.perf_counter() - t0
    info = {"card": torch.cuda.get_device_name(), "torch": torch.__version__,
            "images": args.images, "load_s": load_s, "img_per_s": rows,
            "stage_s_compiled_b512": stage_s, "labels_defined": int(table["auroc"].notna().sum())}
    (args.out / "zeroshot.json").write_text(json.dumps(info, indent=2))
    print(f"\n{info['card']}  torch {info['torch']}  {args.images} images")
    for name, value in rows.items():
        print(f"{name:<16}{value:>9.0f} img/s")
    print(f"whole stage (embed + prompts + probs + AUROC/1000 bootstraps): {stage_s:.1f} s "
          f"= {args.images / stage_s:.0f} img/s")


if __name__ == "__main__":
    main()
