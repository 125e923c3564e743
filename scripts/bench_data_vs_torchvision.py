#!/usr/bin/env python3
"""Data pipeline, ours vs torchvision + PIL, one process, one core each, same images.

Per image: decode a 500x375 JPEG, then the tutorial's training augmentation
(RandomResizedCrop 224 scale 0.8-1, flip, ColorJitter 0.4/0.4/0.4, rotation 15,
ToTensor, Normalize), CLIP's eval preprocessing (resize 224 bicubic, center crop,
ToTensor, Normalize), or RandomResizedCrop 224 + flip + TrivialAugmentWide + ToTensor +
Normalize; and decoding alone. Prints median milliseconds per image and the ratio.

.venv/bin/python scripts/bench_data_vs_torchvision.py [--images 32] [--repeat 5] [--files PHOTO...]

--files times these images instead of generated ones (real photos: decoding weighs
more). The `draft` rows are ours with `data.loader.decode = "draft"` (JPEGs at 1/4 or
1/8 scale where the pipeline allows), against torchvision's exact path, with the mean
and largest pixel difference to our exact path in 8-bit levels.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_images(d, n):
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        y, x = np.mgrid[0:375, 0:500]
        img = np.stack([x % 256, y % 256, (x + y + 40 * i) % 256], -1).astype(np.float32)
        img += rng.normal(0, 20, img.shape)
        f = os.path.join(d, f"{i}.jpg")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f, quality=90)
        files.append(f)
    return files


def time_torchvision(files, pipeline, repeat):
    per = []
    for _ in range(repeat):
        t = time.perf_counter()
        for f in files:
            with Image.open(f) as im:
                pipeline(im.convert("RGB"))
        per.append((time.perf_counter() - t) * 1e3 / len(files))
    return statistics.median(per)


def time_torchvision_decoded(files, pipeline, repeat):
    """The pipeline alone, on images decoded beforehand."""
    images = []
    for f in files:
        with Image.open(f) as im:
            images.append(im.convert("RGB"))
    per = []
    for _ in range(repeat):
        t = time.perf_counter()
        for im in images:
            pipeline(im)
        per.append((time.perf_counter() - t) * 1e3 / len(files))
    return statistics.median(per)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--files", nargs="+", help="images to time instead of generated ones")
    args = ap.parse_args()
    torch.set_num_threads(1)
    norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train = T.Compose([
        T.RandomResizedCrop(224, scale=(0.8, 1.0)), T.RandomHorizontalFlip(),
        T.ColorJitter(0.4, 0.4, 0.4), T.RandomRotation(15), T.ToTensor(), norm,
    ])
    clip_norm = T.Normalize([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
    evaluation = T.Compose([T.Resize(224, T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(), clip_norm])
    trivial = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.TrivialAugmentWide(), T.ToTensor(), norm])
    with tempfile.TemporaryDirectory() as d:
        files = args.files or make_images(d, args.images)
        subprocess.run(["cargo", "build", "-q", "--release", "-p", "clip-data", "--example", "pipeline_bench"], cwd=ROOT, check=True)
        exe = os.path.join(ROOT, "target", "release", "examples", "pipeline_bench")
        ours = json.loads(subprocess.run([exe, *files, "--repeat", str(args.repeat)], check=True, capture_output=True, text=True, env={**os.environ, "RAYON_NUM_THREADS": "1"}).stdout)
        for name, pipe in [("decode", lambda im: im), ("train", train), ("eval", evaluation), ("trivial", trivial)]:
            tv = time_torchvision(files, pipe, args.repeat)
            us = ours[f"{name}_ms_per_image"]
            print(f"{name:7s}: torchvision+PIL {tv:6.2f} ms/image, ours {us:6.2f} ms/image, ratio {tv / us:.2f}x")
            if name == "train":
                # After decoding: the steps alone, on decoded images (ours: the sum
                # of the pipeline_bench breakdown, each step added to the last).
                tv_after = time_torchvision_decoded(files, pipe, args.repeat)
                steps = {k: v for k, v in ours.items() if k.startswith("step_")}
                us_after = sum(steps.values())
                print(f"train after decode: torchvision {tv_after:6.2f} ms/image, ours {us_after:6.2f} ms/image, "
                      f"ratio {tv_after / us_after:.2f}x; ours whole / decode alone {us / ours['decode_ms_per_image']:.2f}x; "
                      f"steps {', '.join(f'{k[5:-3]} {v:.3f}' for k, v in steps.items())} ms")
            if f"{name}_draft_ms_per_image" in ours:
                dr = ours[f"{name}_draft_ms_per_image"]
                print(f"{name + ' draft':13s}: ours {dr:6.2f} ms/image, ratio {tv / dr:.2f}x; "
                      f"{ours[f'{name}_draft_reduced_images']} of {len(files)} images reduced, pixel difference to our exact path "
                      f"mean {ours[f'{name}_draft_mean_abs_levels']:.2f}, max {ours[f'{name}_draft_max_abs_levels']:.0f} levels")


if __name__ == "__main__":
    main()
