#!/usr/bin/env python3
"""Distributions of torchvision's random augmentation parameters, for the
statistical test in crates/data/tests/draws.rs (our draws come from another
generator, so their statistics, not their values, must agree).

tests/fixtures/data/draws.json, from N draws of torchvision's own get_params:
  random_resized_crop[]  per (width, height, scale, ratio): mean / std / 10-50-90%
                         quantiles of the area fraction h*w/(W*H) and of log(w/h),
                         the mean of the crop's centre (x, y) / (W, H), and the share
                         of draws that return the central fallback box
  color_jitter           ColorJitter(0.4, 0.4, 0.4).get_params: mean / std / min /
                         max of the brightness factor, P(brightness applied first)
  random_rotation        RandomRotation(15).get_params: mean / std / min / max

Run with the setup venv:  .venv/bin/python scripts/gen_draw_fixtures.py
"""
import json
import math
import os

import numpy as np
import torch
from torchvision.transforms import ColorJitter, RandomResizedCrop, RandomRotation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "data", "draws.json")
N = 100_000
RATIO = [3 / 4, 4 / 3]
CASES = [
    (224, 224, [0.8, 1.0], RATIO),    # the tutorial's RandomResizedCrop(224, scale=(0.8, 1.0))
    (500, 375, [0.8, 1.0], RATIO),
    (500, 375, [0.08, 1.0], RATIO),   # torchvision's default scale
    (120, 400, [0.8, 1.0], RATIO),    # tall: most draws fail, the fallback is common
]


def stats(x):
    x = np.asarray(x, dtype=np.float64)
    q = np.quantile(x, [0.1, 0.5, 0.9])
    return {"mean": x.mean(), "std": x.std(), "q10": q[0], "q50": q[1], "q90": q[2], "min": x.min(), "max": x.max()}


def fallback_box(w, h, ratio):
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return ((h - ch) // 2, (w - cw) // 2, ch, cw)


def main():
    torch.manual_seed(0)
    out = {"draws": N, "random_resized_crop": []}
    for w, h, scale, ratio in CASES:
        img = torch.zeros(3, h, w)
        boxes = [RandomResizedCrop.get_params(img, scale, ratio) for _ in range(N)]
        fb = fallback_box(w, h, ratio)
        area = [bh * bw / (w * h) for _, _, bh, bw in boxes]
        log_ratio = [math.log(bw / bh) for _, _, bh, bw in boxes]
        cx = [(j + bw / 2) / w for _, j, _, bw in boxes]
        cy = [(i + bh / 2) / h for i, _, bh, _ in boxes]
        out["random_resized_crop"].append({
            "width": w, "height": h, "scale": scale, "ratio": ratio,
            "area": stats(area), "log_ratio": stats(log_ratio),
            "center_x": float(np.mean(cx)), "center_y": float(np.mean(cy)),
            "fallback": sum(b == fb for b in boxes) / N,
        })
    jitter = ColorJitter(0.4, 0.4, 0.4)
    draws = [ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) for _ in range(N)]
    out["color_jitter"] = {
        "brightness": stats([d[1] for d in draws]),
        "brightness_first": sum(int(d[0][0]) == 0 for d in draws) / N,
    }
    rot = RandomRotation(15)
    out["random_rotation"] = stats([RandomRotation.get_params(rot.degrees) for _ in range(N)])
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{N} draws per case -> {OUT}")


if __name__ == "__main__":
    main()
