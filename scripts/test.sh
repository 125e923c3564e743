#!/usr/bin/env bash
# Runs every test of the project: sets up libtorch and the Python references
# (scripts/setup.sh), then the Rust tests of the whole workspace (the interop tests
# call the venv's transformers) and clip-data on its own without libtorch, and ends
# with the total count.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run() { "$@" 2>&1 | tee -a "$log"; }

echo "== cargo test --workspace"
run cargo test --workspace --all-targets
run cargo test --workspace --doc

echo "== the CUDA tests compile (they run on a GPU: scripts/gpu_check.sh)"
run cargo test -p clip-train --features cuda-tests --test cuda --no-run

echo "== cargo test -p clip-data (without libtorch)"
run cargo test -p clip-data --lib --tests

echo "== cargo test -p clip-data with the AVX2 kernels off (what other CPUs run)"
CLIP_DATA_SCALAR=1 run cargo test -p clip-data --lib --tests

awk '/^test result:/ { p += $4; f += $6 } END { printf "total: %d passed, %d failed\n", p, f }' "$log"
