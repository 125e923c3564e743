#!/usr/bin/env python3
"""Generates clip-optim's parity fixtures with PyTorch and transformers.

tests/fixtures/optim/adamw.safetensors holds:
  main run (60 steps): torch.optim.AdamW with two groups (different lr and weight
    decay), get_cosine_schedule_with_warmup(6, 60), clip_grad_norm_(max_norm=1.0),
    fixed gradients per step:
      init.p{i}, grad.{s}.p{i}, param.{s}.p{i} (after step s), lr.{s} [2], norm.{s}
  amsgrad run (20 steps, one group): ams.init.p, ams.grad.{s}, ams.param.{s}
  clip_grad_norm_ with non-finite gradients: nonfinite.{in,out}.{i}, nonfinite.norm
  GradScaler (init 65536, growth 2 every 3 finite steps, backoff 0.5) over 25 steps
    with infs injected at INF_STEPS, AdamW lr 0.01:
      scaler.init.p, scaler.w, scaler.scale [25] (after update), scaler.skipped [25],
      scaler.param.{s}

Run with the setup venv: .venv/bin/python scripts/gen_optim_fixtures.py
"""
import os

import torch
from safetensors.torch import save_file
from transformers import get_cosine_schedule_with_warmup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "optim")
SHAPES = [(6, 5), (5,), (3, 4, 2), (7,)]
STEPS = 60
INF_STEPS = {4, 5, 11, 20}


def main():
    torch.manual_seed(0)
    out = {}
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    for i, p in enumerate(params):
        out[f"init.p{i}"] = p.detach().clone()
    opt = torch.optim.AdamW(
        [
            {"params": params[:2], "lr": 1e-2, "weight_decay": 0.1},
            {"params": params[2:], "lr": 3e-3, "weight_decay": 0.0},
        ],
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    sched = get_cosine_schedule_with_warmup(opt, 6, STEPS)
    for s in range(STEPS):
        out[f"lr.{s}"] = torch.tensor([g["lr"] for g in opt.param_groups], dtype=torch.float64)
        for i, p in enumerate(params):
            g = torch.randn(p.shape) * (0.05 + 0.2 * (s % 5))
            out[f"grad.{s}.p{i}"] = g.clone()
            p.grad = g
        out[f"norm.{s}"] = torch.nn.utils.clip_grad_norm_(params, 1.0).reshape(1)
        opt.step()
        sched.step()
        opt.zero_grad()
        for i, p in enumerate(params):
            out[f"param.{s}.p{i}"] = p.detach().clone()

    p = torch.nn.Parameter(torch.randn(9))
    out["ams.init.p"] = p.detach().clone()
    opt = torch.optim.AdamW([p], lr=5e-3, weight_decay=0.05, amsgrad=True)
    for s in range(20):
        g = torch.randn(9) * (1.0 if s % 3 else 0.1)
        out[f"ams.grad.{s}"] = g.clone()
        p.grad = g
        opt.step()
        out[f"ams.param.{s}"] = p.detach().clone()

    grads = [torch.randn(4), torch.randn(2, 3)]
    grads[1][0, 1] = float("inf")
    ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for i, (q, g) in enumerate(zip(ps, grads)):
        q.grad = g.clone()
        out[f"nonfinite.in.{i}"] = g.clone()
    out["nonfinite.norm"] = torch.nn.utils.clip_grad_norm_(ps, 1.0).reshape(1)
    for i, q in enumerate(ps):
        out[f"nonfinite.out.{i}"] = q.grad.clone()

    p = torch.nn.Parameter(torch.randn(3))
    w = torch.randn(3)
    out["scaler.init.p"] = p.detach().clone()
    out["scaler.w"] = w
    opt = torch.optim.AdamW([p], lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    scales, skipped = [], []
    for s in range(25):
        before = p.detach().clone()
        loss = (p * w).sum() * (1.0 + 0.1 * s)
        scaler.scale(loss).backward()
        if s in INF_STEPS:
            p.grad[0] = float("inf")
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        scales.append(scaler.get_scale())
        skipped.append(int(torch.equal(before, p.detach())))
        out[f"scaler.param.{s}"] = p.detach().clone()
    out["scaler.scale"] = torch.tensor(scales, dtype=torch.float64)
    out["scaler.skipped"] = torch.tensor(skipped, dtype=torch.int64)

    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "adamw.safetensors"))
    print(f"{len(out)} tensors -> {OUT}/adamw.safetensors; scales {scales}; skipped {skipped}")


if __name__ == "__main__":
    main()
