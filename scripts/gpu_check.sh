#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, in one go and within about 8
# minutes on a warm checkout (setup and a release build included; an existing
# .venv and target/ are reused):
#   1. scripts/setup.sh (the venv with torch 2.13.0, whose libtorch we link;
#      skipped when it is in place)
#   2. the GPU and driver (nvidia-smi), and what libtorch sees
#   3. the CUDA tests: cargo test --release -p clip-train --features cuda-tests
#      --test cuda (a vit-b-32-shaped step on the GPU against the CPU, fp32 and
#      bf16; the fp16 GradScaler skipping overflowing steps; GPU memory figures and
#      gradient checkpointing)
#   4. scripts/bench_vs_pytorch.py --device cuda: vit-b-32 bf16 at batch 256, ours
#      against PyTorch eager in the same order, the ratio, images/s, MFU and peak
#      GPU memory
#   5. FLYP's contrastive step on the GPU (train-cli bench): images/s
# Everything it prints also goes to docs/gpu-check-<date>.txt (commit it).
#
#   scripts/gpu_check.sh [--batches 256] [--precisions bf16] [--steps 10]
#
# It needs what scripts/setup.sh needs (the package registries, or a .venv already
# set up) and a Rust toolchain; the build links the venv's libtorch 2.13.0, so a
# machine's own, different PyTorch is not used.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

batches=256 precisions=bf16 steps=10
while [[ $# -gt 0 ]]; do
    case "$1" in
        --batches) batches="$2"; shift 2 ;;
        --precisions) precisions="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

out="docs/gpu-check-$(date +%F).txt"
exec > >(tee "$out") 2>&1
start=$SECONDS
phase() { echo; echo "== [$((SECONDS - start)) s] $*"; }

phase "setup"
if ! command -v nvidia-smi >/dev/null; then
    echo "gpu_check.sh: no nvidia-smi: this machine has no NVIDIA driver" >&2
    exit 1
fi
scripts/setup.sh
command -v cargo >/dev/null || { echo "gpu_check.sh: no cargo on PATH (install Rust: rust-toolchain.toml names the version)" >&2; exit 1; }

phase "machine"
date -u +"%F %T UTC"
git log -1 --format="commit %h %s" 2>/dev/null || true
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
echo "cpu cores: $(nproc)"
.venv/bin/python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'sees', torch.cuda.device_count(), 'GPU(s):', torch.cuda.get_device_name(0))"

phase "build (release)"
cargo build --release -p train-cli
cargo test --release -p clip-train --features cuda-tests --test cuda --no-run

phase "CUDA tests"
# pipefail: a failing test fails the check.
cargo test --release -p clip-train --features cuda-tests --test cuda -- --test-threads 1 --nocapture

phase "ours vs PyTorch eager on the GPU"
PYTHONUNBUFFERED=1 .venv/bin/python scripts/bench_vs_pytorch.py --device cuda \
    --batches "$batches" --precisions "$precisions" --steps "$steps" --warmup 3

phase "FLYP (contrastive) step on the GPU: train-cli bench, vit-b-32 bf16, batch 256"
# Both towers (the text tower at 77 tokens with the test tokenizer), the learned
# logit scale; its images/s beside the cross-entropy figure above.
target/release/train-cli bench --config configs/bench-vit-b-32.toml --steps 5 --warmup 2 \
    --set 'train.precision="bf16"' --set 'data.loader.batch_size=256' \
    --set 'train.objective="contrastive"' --set 'optim.frozen_towers=[]' \
    --set "model.tokenizer=\"$root/tests/fixtures/model/tokenizer/tokenizer.json\"" \
    --set 'model.architecture.text={vocab_size=1514, eos_token_id=1513}'

phase "done in $((SECONDS - start)) s; the output is in $out"
