"""Which PyTorch operators launch the kernels of one compiled training step (one GPU).

CUDA graphs hide the operator behind each kernel, so this compiles the step without them
(``torch.compile`` mode ``default``), profiles a few steps with input shapes, and prints
the ``aten::`` operators that launched GPU work, largest first: the kernels that run
outside Inductor's generated code (library calls and fallbacks) and where they come from.

    python bench/step_ops.py --out $OUT
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chexdino.model import build_model, contrastive_loss
from ddp_throughput import FULL_MODEL


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(FULL_MODEL).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, fused=True)

    def forward_loss(images, tokens):
        with torch.autocast("cuda", torch.bfloat16):
            img, txt, scale = model(images, tokens)
        return contrastive_loss(img, txt, scale)

    step_fn = torch.compile(forward_loss)
    images = torch.randn(64, 3, 224, 224, device=device)
    tokens = torch.randint(1, 49000, (64, 77), device=device)

    def step():
        loss = step_fn(images, tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                 record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages(group_by_input_shape=True)
              if e.key.startswith("aten::") and e.device_time_total > 0]
    events.sort(key=lambda e: -e.device_time_total)
    lines = [f"{'operator':<40}{'ms/step':>9}{'calls/step':>11}  input shapes"]
    for e in events[:25]:
        lines.append(f"{e.key:<40}{e.device_time_total / 1e3 / args.steps:>9.3f}"
                     f"{e.count / args.steps:>11.1f}  {str(e.input_shapes)[:120]}")
    report = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_ops.txt").write_text(report + "\n\n" + prof.key_averages().table(
        sort_by="self_device_time_total", row_limit=40, max_name_column_width=70))
    print(report)


if __name__ == "__main__":
    main()
