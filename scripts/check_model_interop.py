#!/usr/bin/env python3
"""Interop check: checkpoints saved by Rust load in transformers with no missing
keys and give the same logits.

Called by clip-model's test `interop.rs` (part of scripts/test.sh) with a folder
holding clip/ and classifier/ (saved by Rust) and rust_outputs.safetensors:

    .venv/bin/python scripts/check_model_interop.py DIR
"""
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import CLIPModel



def load(path):
    model, info = CLIPModel.from_pretrained(path, output_loading_info=True)
    return model.eval(), info


def main():
    out = sys.argv[1]
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
