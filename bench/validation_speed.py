"""One validation pass of the full-size model: the earlier path against the current one.

Earlier: validation films in (pinned) host memory, embedded in batches of 256. Current: films
where the training films are (GPU memory when they fit), batches of 512, and with N training
processes each embeds 1/N of them (run under torchrun to see that split). Prints the best of
three passes of each, image embedding plus text embedding, on 5,000 synthetic 320 px films:

    python bench/validation_speed.py --out $OUT
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

from chexdino.data import ImageBank
from chexdino.device import autocast
from chexdino.inference import embed_images
from chexdino.model import build_model
from ddp_throughput import FULL_MODEL
from synthetic import make_store


def one_pass(model, bank: ImageBank, tokens: torch.Tensor, batch: int) -> float:
    device = bank.device
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        embed_images(model, bank.batch(np.arange(len(bank))), 224, device, batch, "bf16",
                     "clip")
        for s in range(0, len(tokens), batch):
            with autocast(device, "bf16"):
                model.encode_text(tokens[s:s + batch]).float()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/chexdino-val"))
    p.add_argument("--images", type=int, default=5_000)
    p.add_argument("--eager-only", action="store_true", help="leave out the compiled row")
    args = p.parse_args()
    store = args.work / "store"
    if not (store / "tokens.h5").exists():
        make_store(store, 64, args.images)
    from chexdino.h5store import read_meta
    from chexdino.tokens import read_tokens

    device = torch.device("cuda")
    rows = np.flatnonzero((read_meta(store / "cxr.h5")["split"] == "validate").to_numpy())
    tokens = torch.from_numpy(read_tokens(store / "tokens.h5")[0][rows]).long().to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(FULL_MODEL).to(device)
    results = {}
    for name, mode, batch in (("host memory, batch 256 (before)", "host", 256),
                              ("GPU memory, batch 512 (now)", "gpu", 512),
                              ("GPU memory, batch 512, image tower compiled", "gpu", 512)):
        if "compiled" in name and args.eager_only:
            continue
        if "compiled" in name:
            model.visual.compile(dynamic=False)  # two graphs: batches of 512 and the rest
        bank = ImageBank(store / "cxr.h5", rows, device, mode)
        first = one_pass(model, bank, tokens, batch)  # warm-up: cuDNN choices, compilation
        best = min(one_pass(model, bank, tokens, batch) for _ in range(3))
        results[name] = {"best_s": best, "first_s": first}
        print(f"validation pass, {len(rows)} films, {name}: {best:.2f} s "
              f"({len(rows) / best:.0f} img/s), first pass {first:.1f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "validation_speed.json").write_text(json.dumps(
        {"card": torch.cuda.get_device_name(), "images": len(rows), "seconds": results},
        indent=2))


if __name__ == "__main__":
    main()
