#!/usr/bin/env bash
# The main job on the embedded default: trains a small CLIP-architecture model on
# Fashion-MNIST with the tutorial's whole recipe (configs/demo.toml). Extra arguments
# go to train-cli, e.g. `scripts/demo.sh --set train.epochs=1`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --release -p train-cli
exec target/release/train-cli --config configs/demo.toml "$@"
