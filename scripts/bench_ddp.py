#!/usr/bin/env python3
"""Data-parallel scaling on the CPU: 1 rank vs N ranks (Gloo, one thread each), ours
(`train-cli bench` under torchrun) beside PyTorch's own DistributedDataParallel
under the same torchrun, on the vit-b-32 training step of scripts/bench_vs_pytorch.py
(transformers' CLIPModel, linear head on the normalised image features, label
smoothing 0.1, clipping 1.0, AdamW; fp32).

Scaling efficiency = global images/s with N ranks / (N x images/s of one rank). With
one thread per rank and as many cores as ranks, the ideal is 1.0; what is lost is
the gradient all-reduce that the backward does not hide, the ranks waiting for each
other, and what N busy processes cost each other on the machine (memory bandwidth,
caches, the loader's threads without a spare core). The last is measured apart: N
independent single-process runs at once, no communication ("alone"); N ranks / that
is the cost of data parallelism itself.

    .venv/bin/python scripts/bench_ddp.py [--ranks 2] [--batch 8] [--steps 4] [--warmup 1]
        [--grad-sync reducer|after_backward]

Needs `cargo build --release -p train-cli` first. The same script is the PyTorch
worker (`--torch-worker`, launched by torchrun or alone).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


def torch_worker(batch, steps, warmup):
    import torch
    import torch.distributed as dist
    from transformers import CLIPConfig, CLIPModel

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            clip = CLIPModel(CLIPConfig())  # defaults = openai/clip-vit-base-patch32
            self.vision = clip.vision_model
            self.proj = clip.visual_projection
            self.head = torch.nn.Linear(512, 10)

        def forward(self, x):
            f = self.proj(self.vision(pixel_values=x).pooler_output)
            return self.head(f / f.norm(dim=-1, keepdim=True)) * 14.3

    model = Classifier()
    model.train()
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 10, (batch,))
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        loss = loss_fn(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    mine = torch.tensor([batch * len(times), sum(times)], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(mine)
    if int(os.environ.get("RANK", "0")) == 0:
        images, total = mine.tolist()
        print(json.dumps({"world_size": world, "global_train_images_per_s": images / (total / world)}), flush=True)
    # destroy_process_group() sometimes hangs in Gloo's teardown on one rank once the
    # other has left (seen twice here, torch 2.13); the figures are out, so leave.
    sys.stdout.flush()
    os._exit(0)


def concurrent(n, cmd):
    """n independent single-process runs at once: what the machine gives n
    processes without any communication (the ceiling for n ranks here)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", RUST_LOG="warn")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    total = 0.0
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
        try:
            total += json.loads(out)["global_train_images_per_s"]
        except json.JSONDecodeError:
            total += json.loads(out.strip().splitlines()[-1])["global_train_images_per_s"]
    return total


def launch(ranks, cmd):
    if ranks == 1:
        return cmd
    return [TORCHRUN, "--standalone", "--nproc-per-node", str(ranks), "--no-python"] + cmd


def run_json(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="1", RUST_LOG="warn")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    except subprocess.TimeoutExpired as e:
        sys.exit(f"{' '.join(cmd)} did not finish in {e.timeout} s:\n{(e.stderr or b'')[-3000:]}")
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    try:
        return json.loads(out.stdout)  # train-cli bench: one pretty-printed object
    except json.JSONDecodeError:
        return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--grad-sync", default="reducer")
    ap.add_argument("--torch-worker", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for ours (e.g. train.objective=\"contrastive\")")
    ap.add_argument("--ours-only", action="store_true",
                    help="skip PyTorch DDP (its worker trains the cross-entropy step only)")
    args = ap.parse_args()
    if args.torch_worker:
        torch_worker(args.batch, args.steps, args.warmup)
        return
    cli = os.path.join(ROOT, "target", "release", "train-cli")
    if not os.path.exists(cli):
        sys.exit("build first: cargo build --release -p train-cli")
    from bench_vs_pytorch import make_images

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "images")
        make_images(data, per_class=3 * args.ranks * args.batch)
        ours_cmd = [cli, "bench", "--config", os.path.join(ROOT, "configs", "bench-vit-b-32.toml"),
                    "--steps", str(args.steps), "--warmup", str(args.warmup), "--quiet",
                    "--set", f'data.train={{kind="image_folder", path="{data}"}}',
                    "--set", f"data.loader.batch_size={args.batch}",
                    "--set", "run.threads=1", "--set", "data.loader.threads=1",
                    "--set", f'run.grad_sync="{args.grad_sync}"', "--set", 'run.device="cpu"']
        for kv in args.set:
            ours_cmd += ["--set", kv]
        torch_cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", "--batch", str(args.batch),
                     "--steps", str(args.steps), "--warmup", str(args.warmup)]
        rows = {}
        # Same process order on both sides: one rank, then N.
        sides = [("pytorch DDP", torch_cmd), ("ours", ours_cmd)][1 if args.ours_only else 0:]
        for name, cmd in sides:
            one = run_json(launch(1, cmd))["global_train_images_per_s"]
            many = run_json(launch(args.ranks, cmd))["global_train_images_per_s"]
            ceiling = concurrent(args.ranks, cmd)
            rows[name] = (one, many, ceiling)
        print(f"vit-b-32 fp32, batch {args.batch} per rank, 1 thread per rank, {args.steps} timed steps, grad_sync={args.grad_sync}")
        print(f"{'':>12} | {'1 rank':>7} {f'{args.ranks} ranks':>8} {f'{args.ranks} alone':>8} | {'efficiency':>10} {'vs alone':>8}  (img/s)")
        for name, (one, many, ceiling) in rows.items():
            print(f"{name:>12} | {one:>7.2f} {many:>8.2f} {ceiling:>8.2f} | {many / (args.ranks * one) * 100:>9.1f}% {many / ceiling * 100:>7.1f}%")
        if "pytorch DDP" in rows:
            o, t = rows["ours"], rows["pytorch DDP"]
            print(f"ours / pytorch at {args.ranks} ranks: {o[1] / t[1]:.2f}x")
        if args.set:
            print("ours with " + " ".join(args.set))
        print(f"efficiency = {args.ranks} ranks / ({args.ranks} x 1 rank); vs alone = {args.ranks} ranks / "
              f"{args.ranks} independent processes at once (no communication: the machine's ceiling)")


if __name__ == "__main__":
    main()
