#!/usr/bin/env python3
"""PEFT interop check: LoRA adapters saved by Rust load with
`peft.PeftModel.from_pretrained` on transformers' `CLIPModel` and give the same
image features; the merged model loads in plain transformers and gives them too.

Called by clip-model's test `lora.rs` with a folder holding base/ (the CLIP
before adapters), adapter/ (adapter_config.json + adapter_model.safetensors),
merged/ (adapters folded in) and io.safetensors (pixel_values, image_embeds):

    .venv/bin/python scripts/check_peft_interop.py DIR
"""
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import CLIPModel


def features(model, pixel_values):
    with torch.no_grad():
        f = model.get_image_features(pixel_values=pixel_values)
    return f.pooler_output if hasattr(f, "pooler_output") else f


def main():
    out = sys.argv[1]
    io = load_file(os.path.join(out, "io.safetensors"))
    failures = []

    base = CLIPModel.from_pretrained(os.path.join(out, "base")).eval()
    plain = features(base, io["pixel_values"])
    peft_model = PeftModel.from_pretrained(base, os.path.join(out, "adapter")).eval()
    n_lora = sum(1 for n, _ in peft_model.named_parameters() if "lora_" in n)
    adapted = features(peft_model.base_model.model, io["pixel_values"])
    diff = (adapted - io["image_embeds"]).abs().max().item()
    moved = (plain - io["image_embeds"]).abs().max().item()
    print(f"peft: {n_lora} LoRA tensors loaded; peft max abs diff {diff:.3g} (adapters move features by {moved:.3g})")
    if n_lora == 0 or diff > 1e-5 or moved < 1e-4:
        failures.append(f"PEFT features differ by {diff} (lora tensors {n_lora}, adapter effect {moved})")

    merged, info = CLIPModel.from_pretrained(os.path.join(out, "merged"), output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        failures.append(f"merged: loading info {info}")
    diff = (features(merged.eval(), io["pixel_values"]) - io["image_embeds"]).abs().max().item()
    print(f"merged max abs diff {diff:.3g}")
    if diff > 1e-5:
        failures.append(f"merged features differ by {diff}")

    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("ok")


if __name__ == "__main__":
    main()
