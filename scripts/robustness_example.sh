#!/usr/bin/env bash
# The robustness worked example of docs/robustness-fashion-mnist.md, end to end:
#   1. shifted copies of Fashion-MNIST's test set (inverted, rotated, blurred);
#   2. a base model: configs/demo.toml's recipe on upright images, exported;
#   3. the base on the test set and every shift (`eval` with several --data);
#   4. a sweep of fine-tunings of the base (2 learning rates x 2 augmentations),
#      every evaluation also on the shifts, then its uniform and greedy soups.
# Everything lands in runs/robustness/ (about 10 minutes on 2 CPU cores).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --release -p train-cli
tc=target/release/train-cli
fm=/usr/share/datasets/fashion-mnist
classes='["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]'
idx() { echo "{ kind = \"idx\", images = \"$1\", labels = \"$2\", class_names = $classes }"; }

.venv/bin/python scripts/make_shifted_fashion_mnist.py runs/fashion-shifted
sh=runs/fashion-shifted

"$tc" --config configs/demo.toml --set data.train_limit=20000 \
  --set 'run.output_dir="runs/robustness"' --set 'run.name="base"'
"$tc" export --checkpoint runs/robustness/base --output runs/robustness/base-export --overwrite

"$tc" eval --model runs/robustness/base-export \
  --data "test=$(idx $fm/t10k-images-idx3-ubyte.gz $fm/t10k-labels-idx1-ubyte.gz)" \
  --data "inverted=$(idx $sh/inverted/images-idx3-ubyte.gz $sh/inverted/labels-idx1-ubyte.gz)" \
  --data "rotated=$(idx $sh/rotated/images-idx3-ubyte.gz $sh/rotated/labels-idx1-ubyte.gz)" \
  --data "blurred=$(idx $sh/blurred/images-idx3-ubyte.gz $sh/blurred/labels-idx1-ubyte.gz)" \
  > runs/robustness/base-eval.json

flip='[{ op = "center_crop", size = 28 }, { op = "random_horizontal_flip", p = 0.5 }, { op = "normalize" }]'
rotate='[{ op = "center_crop", size = 28 }, { op = "random_horizontal_flip", p = 0.5 }, { op = "random_rotation", degrees = 30 }, { op = "normalize" }]'
"$tc" sweep --config configs/robustness.toml --output runs/robustness/sweep \
  --grid optim.lr=3e-4,1e-3 --grid "data.train_transforms=$flip,$rotate" \
  --soup "$(idx $fm/t10k-images-idx3-ubyte.gz $fm/t10k-labels-idx1-ubyte.gz)" "$@"
