#!/usr/bin/env bash
# Runs every test of the project: sets up libtorch and the Python references
# (scripts/setup.sh), then the Rust tests of the whole workspace (the interop tests
# call the venv's transformers) and clip-data on its own without libtorch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh

echo "== cargo test --workspace"
cargo test --workspace --all-targets
cargo test --workspace --doc

echo "== cargo test -p clip-data (without libtorch)"
cargo test -p clip-data --all-targets
