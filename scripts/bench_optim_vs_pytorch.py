#!/usr/bin/env python3
"""PyTorch side of the AdamW benchmark: one torch.optim.AdamW step over the
parameters of the vit-b-32 vision tower (transformers' CLIPVisionModel shapes,
87.5M parameters), foreach=True (and fused=True for reference), median ms over N
steps. Compare with `cargo bench -p clip-optim --bench adamw`.

.venv/bin/python scripts/bench_optim_vs_pytorch.py [--runs 20] [--ours-ms X]
"""
import argparse
import statistics
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--ours-ms", type=float, help="our median step time, to print the ratio")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = CLIPVisionModel(CLIPVisionConfig())
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    n = sum(p.numel() for p in params)
    print(f"pytorch {torch.__version__} threads={torch.get_num_threads()} params={n}")
    for name, kw in [("foreach", {"foreach": True}), ("fused", {"fused": True})]:
        opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, **kw)
        opt.step()
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1e3
        ratio = f"  ratio (pytorch / ours) {ms / args.ours_ms:.2f}x" if args.ours_ms else ""
        print(f"AdamW {name:8s}: {ms:8.1f} ms per step{ratio}")


if __name__ == "__main__":
    main()
