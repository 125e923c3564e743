#!/usr/bin/env python3
"""Training step throughput and peak memory, PyTorch eager vs `train-cli bench`.

Both sides: the vit-b-32 CLIP (transformers' CLIPModel, as the tutorial loads it)
with a linear head on the normalised image features, cross-entropy with label
smoothing 0.1, clipping at 1.0, AdamW over the vision tower, its projection and the
head (LLRD groups on our side, one group in PyTorch), same batch and precision
(fp32, or bf16 through CPU autocast). PyTorch runs on pre-made tensors (no data
loading); `train-cli bench` includes its loader (decode, resize, crop, normalise
on background threads). Each side runs in its own process, one after the other;
peak memory is that process's peak RSS.

    .venv/bin/python scripts/bench_vs_pytorch.py [--batches 8,32] [--precisions fp32,bf16] [--steps 6]

Last line: the loader alone (tutorial augmentation, all threads) against the
fastest of those training steps.

Needs `cargo build --release -p train-cli` first.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_worker(batch, precision, steps, warmup):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig())  # defaults = openai/clip-vit-base-patch32
    head = torch.nn.Linear(512, 10)
    params = (
        list(model.vision_model.parameters())
        + list(model.visual_projection.parameters())
        + list(head.parameters())
    )
    for p in model.text_model.parameters():
        p.requires_grad_(False)
    model.text_projection.weight.requires_grad_(False)
    model.logit_scale.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 10, (batch,))
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            f = model.get_image_features(pixel_values=x)
            f = f.pooler_output if hasattr(f, "pooler_output") else f
            logits = head(f / f.norm(dim=-1, keepdim=True)) * 14.3
            loss = loss_fn(logits.float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"train_images_per_s": batch * len(times) / sum(times), "median_step_s": med, "peak_memory_mib": peak}))


def make_images(root, classes=4, per_class=12):
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    for k in range(classes):
        d = os.path.join(root, f"class{k}")
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
            Image.fromarray(a).save(os.path.join(d, f"{i}.jpg"), quality=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--torch-worker", nargs=2, metavar=("BATCH", "PRECISION"))
    args = ap.parse_args()
    if args.torch_worker:
        torch_worker(int(args.torch_worker[0]), args.torch_worker[1], args.steps, args.warmup)
        return
    cli = os.path.join(ROOT, "target", "release", "train-cli")
    if not os.path.exists(cli):
        sys.exit("build first: cargo build --release -p train-cli")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "images")
        make_images(data)
        fastest = 0.0
        print(f"{'batch':>5} {'prec':>5} | {'pytorch img/s':>13} {'ours img/s':>10} {'ratio':>6} | {'pytorch MiB':>11} {'ours MiB':>9}")
        for b in [int(v) for v in args.batches.split(",")]:
            for prec in args.precisions.split(","):
                t = subprocess.run(
                    [sys.executable, __file__, "--torch-worker", str(b), prec, "--steps", str(args.steps), "--warmup", str(args.warmup)],
                    check=True, capture_output=True, text=True,
                )
                torch_r = json.loads(t.stdout.strip().splitlines()[-1])
                o = subprocess.run(
                    [cli, "bench", "--config", os.path.join(ROOT, "configs", "bench-vit-b-32.toml"),
                     "--steps", str(args.steps), "--warmup", str(args.warmup),
                     "--set", f'data.train={{kind="image_folder", path="{data}"}}',
                     "--set", f"data.loader.batch_size={b}",
                     "--set", f'train.precision="{prec}"', "--quiet"],
                    check=True, capture_output=True, text=True,
                )
                ours = json.loads(o.stdout)
                ratio = ours["train_images_per_s"] / torch_r["train_images_per_s"]
                print(f"{b:>5} {prec:>5} | {torch_r['train_images_per_s']:>13.2f} {ours['train_images_per_s']:>10.2f} {ratio:>5.2f}x | "
                      f"{torch_r['peak_memory_mib']:>11.0f} {ours['peak_memory_mib']:>9.0f}", flush=True)
                fastest = max(fastest, ours["train_images_per_s"])
        # The loader alone on all threads with the tutorial's augmentation, against
        # the fastest training step above.
        tutorial = ('[{op="random_resized_crop", size=224, scale=[0.8, 1.0]}, {op="random_horizontal_flip"}, '
                    '{op="color_jitter", brightness=0.4, contrast=0.4, saturation=0.4}, '
                    '{op="random_rotation", degrees=15}, {op="normalize"}]')
        o = subprocess.run(
            [cli, "bench", "--config", os.path.join(ROOT, "configs", "bench-vit-b-32.toml"),
             "--steps", "2", "--warmup", "1",
             "--set", f'data.train={{kind="image_folder", path="{data}"}}',
             "--set", f"data.train_transforms={tutorial}", "--quiet"],
            check=True, capture_output=True, text=True,
        )
        loader = json.loads(o.stdout)["loader_images_per_s"]
        print(f"loader, tutorial augmentation, all threads: {loader:.0f} img/s = {loader / fastest:.0f}x the fastest step above ({fastest:.2f} img/s)")


if __name__ == "__main__":
    main()
