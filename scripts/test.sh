#!/usr/bin/env bash
# Runs every test of the project: sets up libtorch (scripts/setup.sh), then the Rust
# tests of the whole workspace, clip-data on its own without libtorch, and the
# Python interop checks against transformers when the venv has it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh

echo "== cargo test --workspace"
cargo test --workspace --all-targets
cargo test --workspace --doc

echo "== cargo test -p clip-data (without libtorch)"
cargo test -p clip-data --all-targets

shopt -s nullglob
for check in scripts/check_*.py; do
    echo "== $check"
    .venv/bin/python "$check"
done
