#!/usr/bin/env python3
"""Training step throughput and peak memory, PyTorch eager vs `train-cli bench`.

Both sides: the vit-b-32 CLIP (transformers' CLIPModel, as the tutorial loads it)
with a linear head on the normalised image features, cross-entropy with label
smoothing 0.1, clipping at 1.0, AdamW over the vision tower, its projection and the
head (LLRD groups on our side, one group in PyTorch), same batch and precision
(fp32, or bf16 through CPU autocast). PyTorch runs on pre-made tensors (no data
loading); `train-cli bench` includes its loader (decode, resize, crop, normalise
on background threads). Each side runs in its own process, one after the other;
peak memory is the process's peak RSS on the CPU (ours over the timed steps: `bench`
resets it there; PyTorch's over the whole process), and on CUDA the caching
allocator's peak allocated bytes over the timed steps (torch.cuda.max_memory_allocated
on both sides: ours reads the same allocator through libtorch).

    .venv/bin/python scripts/bench_vs_pytorch.py [--batches 8,32] [--precisions fp32,bf16] [--steps 6]
    .venv/bin/python scripts/bench_vs_pytorch.py --device cuda --batches 256 --precisions bf16

With --device cuda: CUDA timing synchronises around every PyTorch step; our side
feeds byte batches (`data.loader.output = "u8"`, normalised on the GPU) decoded from
256x256 JPEGs by the loader threads, so its figure includes the loader (printed
beside it: a loader slower than the step is the bottleneck, not the model). Model
FLOPs utilisation (MFU) assumes 8.8 GFLOP per 224x224 image for vit-b-32's vision
tower forward and 3x that for a training step (forward + backward), against the
GPU's dense bf16 peak (--peak-tflops; H100/H200 SXM: 989).

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


TRAIN_GFLOP_PER_IMAGE = 3 * 8.8


def torch_worker(batch, precision, steps, warmup, device):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).to(device)  # defaults = openai/clip-vit-base-patch32
    head = torch.nn.Linear(512, 10).to(device)
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
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    model.train()
    cuda = device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
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
        if i == warmup and cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t = time.perf_counter()
        step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"train_images_per_s": batch * len(times) / sum(times), "median_step_s": med, "peak_memory_mib": peak}))


def peak_tflops(device, given):
    """The GPU's dense bf16 peak, TFLOP/s: given, or known from its name."""
    if given:
        return given
    if device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(0)
    for key, tflops in [("H200", 989.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0), ("A10", 125.0)]:
        if key in name:
            return tflops
    return None


def make_images(root, classes=4, per_class=12, size=(375, 500)):
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    for k in range(classes):
        d = os.path.join(root, f"class{k}")
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
            Image.fromarray(a).save(os.path.join(d, f"{i}.jpg"), quality=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: known from its name)")
    ap.add_argument("--torch-worker", nargs=2, metavar=("BATCH", "PRECISION"))
    args = ap.parse_args()
    if args.torch_worker:
        torch_worker(int(args.torch_worker[0]), args.torch_worker[1], args.steps, args.warmup, args.device)
        return
    cli = os.path.join(ROOT, "target", "release", "train-cli")
    if not os.path.exists(cli):
        sys.exit("build first: cargo build --release -p train-cli")
    cuda = args.device == "cuda"
    batches = [int(v) for v in args.batches.split(",")]
    tflops = peak_tflops(args.device, args.peak_tflops)
    mfu = lambda ips: f"{ips * TRAIN_GFLOP_PER_IMAGE / 1e3 / tflops * 100:5.1f}%" if tflops else "   n/a"
    device_sets = ["--set", 'run.device="cuda"', "--set", 'data.loader.output="u8"'] if cuda else []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "images")
        # One epoch holds every timed step's full batch (10 % go to validation): a
        # new epoch restarts the loader, which would starve the GPU at the seam.
        per_class = max(12, -(-max(batches) * (args.steps + args.warmup + 1) * 10 // (4 * 9)))
        make_images(data, per_class=per_class, size=(256, 256) if cuda else (375, 500))
        fastest = 0.0
        memory = "GPU MiB" if cuda else "RSS MiB"
        print(f"device {args.device}" + (f", MFU against {tflops:.0f} TFLOP/s bf16 dense, {TRAIN_GFLOP_PER_IMAGE:.1f} GFLOP per image per step" if tflops else ""))
        print(f"{'batch':>5} {'prec':>5} | {'pytorch img/s':>13} {'ours img/s':>10} {'ratio':>6} | {'pytorch MFU':>11} {'ours MFU':>8} | "
              f"{'pytorch ' + memory:>15} {'ours ' + memory:>12} | {'our loader img/s':>16}")
        for b in batches:
            for prec in args.precisions.split(","):
                t = subprocess.run(
                    [sys.executable, __file__, "--torch-worker", str(b), prec, "--steps", str(args.steps),
                     "--warmup", str(args.warmup), "--device", args.device],
                    check=True, capture_output=True, text=True,
                )
                torch_r = json.loads(t.stdout.strip().splitlines()[-1])
                o = subprocess.run(
                    [cli, "bench", "--config", os.path.join(ROOT, "configs", "bench-vit-b-32.toml"),
                     "--steps", str(args.steps), "--warmup", str(args.warmup),
                     "--set", f'data.train={{kind="image_folder", path="{data}"}}',
                     "--set", f"data.loader.batch_size={b}", "--set", "data.loader.drop_last=true",
                     "--set", f'train.precision="{prec}"', *device_sets, "--quiet"],
                    check=True, capture_output=True, text=True,
                )
                ours = json.loads(o.stdout)
                if cuda and ours.get("memory_kind") != "cuda_allocated":
                    sys.exit(f"our bench did not run on the GPU: {ours}")
                ratio = ours["train_images_per_s"] / torch_r["train_images_per_s"]
                print(f"{b:>5} {prec:>5} | {torch_r['train_images_per_s']:>13.2f} {ours['train_images_per_s']:>10.2f} {ratio:>5.2f}x | "
                      f"{mfu(torch_r['train_images_per_s']):>11} {mfu(ours['train_images_per_s']):>8} | "
                      f"{torch_r['peak_memory_mib']:>15.0f} {ours['peak_memory_mib']:>12.0f} | {ours['loader_images_per_s']:>16.0f}", flush=True)
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
             "--set", f"data.train_transforms={tutorial}", *device_sets, "--quiet"],
            check=True, capture_output=True, text=True,
        )
        loader = json.loads(o.stdout)["loader_images_per_s"]
        print(f"loader, tutorial augmentation, all threads: {loader:.0f} img/s = {loader / fastest:.0f}x the fastest step above ({fastest:.2f} img/s)")


if __name__ == "__main__":
    main()
