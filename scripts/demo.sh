#!/usr/bin/env bash
# The main job on the embedded default: fine-tunes a small CLIP-architecture model on
# Fashion-MNIST with the tutorial's whole recipe (configs/demo.toml).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ ! -f configs/demo.toml ]]; then
    echo "demo.sh: not built yet: the trainer and configs/demo.toml are still to come (see the open issues)" >&2
    exit 1
fi
scripts/setup.sh
cargo run --release -p train-cli -- --config configs/demo.toml "$@"
