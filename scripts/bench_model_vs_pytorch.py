#!/usr/bin/env python3
"""PyTorch side of the clip-model benchmark: transformers' CLIP vision tower +
visual_projection + L2 norm + linear head, vit-b-32, batch 8, fp32, CPU; forward
(no grad) and forward+backward, median seconds over N runs and images/s.
Compare with `cargo bench -p clip-model --bench vision` (same shapes).

.venv/bin/python scripts/bench_model_vs_pytorch.py [--runs 10]
"""
import argparse
import statistics
import time

import torch
from transformers import CLIPConfig, CLIPModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig())  # defaults = openai/clip-vit-base-patch32
    head = torch.nn.Linear(512, 10)
    x = torch.randn(args.batch, 3, 224, 224)

    def forward():
        f = model.get_image_features(pixel_values=x)
        f = f.pooler_output if hasattr(f, "pooler_output") else f
        return head(f / f.norm(dim=-1, keepdim=True)) * 14.3

    def timed(fn):
        fn()
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    with torch.no_grad():
        fwd = timed(forward)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        forward().sum().backward()

    fb = timed(fwd_bwd)
    print(f"pytorch {torch.__version__} threads={torch.get_num_threads()} batch={args.batch}")
    print(f"forward:          {fwd * 1e3:8.1f} ms  {args.batch / fwd:6.2f} images/s")
    print(f"forward+backward: {fb * 1e3:8.1f} ms  {args.batch / fb:6.2f} images/s")


if __name__ == "__main__":
    main()
