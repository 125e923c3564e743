#!/usr/bin/env python3
"""Interop check: checkpoints saved by Rust load in transformers with no missing
keys and give the same logits. Run by scripts/test.sh when the venv exists.

Builds and runs `cargo run -p clip-model --example export_random -- DIR`, then loads
DIR/clip and DIR/classifier with transformers' CLIPModel.
"""
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import CLIPModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    model, info = CLIPModel.from_pretrained(path, output_loading_info=True)
    return model.eval(), info


def main():
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["cargo", "run", "-q", "-p", "clip-model", "--example", "export_random", "--", out], cwd=ROOT, check=True)
        ref = load_file(os.path.join(out, "rust_outputs.safetensors"))
        failures = []

        model, info = load(os.path.join(out, "clip"))
        if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
            failures.append(f"plain CLIP export: loading info {info}")
        with torch.no_grad():
            logits = model(input_ids=ref["input_ids"], pixel_values=ref["pixel_values"]).logits_per_image
        diff = (logits - ref["logits_per_image"]).abs().max().item()
        print(f"plain CLIP export: max |logits_per_image - rust| = {diff:.3g}")
        if diff > 1e-5:
            failures.append(f"plain CLIP logits differ by {diff}")

        model, info = load(os.path.join(out, "classifier"))
        if info["missing_keys"] or info["mismatched_keys"]:
            failures.append(f"classifier export: missing/mismatched keys {info}")
        if model.config.id2label != {0: "cat", 1: "dog", 2: "bird"}:
            failures.append(f"classifier export: id2label is {model.config.id2label}")
        with torch.no_grad():
            feats = model.get_image_features(pixel_values=ref["pixel_values"])
            feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        diff = (feats - ref["classifier_image_features"]).abs().max().item()
        print(f"classifier export: max |image features - rust| = {diff:.3g}; extra keys {info['unexpected_keys']}")
        if diff > 1e-5:
            failures.append(f"classifier image features differ by {diff}")

        if failures:
            print("FAILED:\n  " + "\n  ".join(failures))
            sys.exit(1)
        print("interop with transformers: ok")


if __name__ == "__main__":
    main()
