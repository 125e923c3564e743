#!/usr/bin/env python3
"""Generates the contrastive-loss fixture (FLYP): open_clip's ClipLoss on one
process, written out here with torch, for crates/train/tests/step_parity.rs.

tests/fixtures/train_step/contrastive_loss.safetensors (float32):
    image, text        L2-normalised embeddings (6 x 16); text rows 0 and 3 are
                       the same caption (two images of one class, one template)
    logit_scale        the parameter (exp(logit_scale) multiplies the logits)
    ls<S>.loss, ls<S>.grad_image, ls<S>.grad_text, ls<S>.grad_logit_scale
                       for label smoothing S in {0, 0.1}: the loss
                       (CE(logits, arange) + CE(logits.T, arange)) / 2 with
                       logits = exp(logit_scale) * image @ text.T, and its gradients

Run with the setup venv:  .venv/bin/python scripts/gen_loss_fixtures.py
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "train_step", "contrastive_loss.safetensors")


def clip_loss(image_features, text_features, logit_scale, label_smoothing):
    """open_clip.loss.ClipLoss.forward with world_size 1 (logit_scale exp'd first,
    as open_clip's CLIP.forward returns it)."""
    scale = logit_scale.exp()
    logits_per_image = scale * image_features @ text_features.T
    logits_per_text = scale * text_features @ image_features.T
    labels = torch.arange(logits_per_image.shape[0])
    return (
        F.cross_entropy(logits_per_image, labels, label_smoothing=label_smoothing)
        + F.cross_entropy(logits_per_text, labels, label_smoothing=label_smoothing)
    ) / 2


def main():
    g = torch.Generator().manual_seed(19)
    image = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    text = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    text[3] = text[0]
    logit_scale = torch.tensor(2.6592)
    out = {"image": image, "text": text, "logit_scale": logit_scale}
    for ls in (0.0, 0.1):
        i = image.clone().requires_grad_(True)
        t = text.clone().requires_grad_(True)
        s = logit_scale.clone().requires_grad_(True)
        loss = clip_loss(i, t, s, ls)
        loss.backward()
        key = f"ls{ls}"
        out[f"{key}.loss"] = loss.detach().reshape(())
        out[f"{key}.grad_image"] = i.grad
        out[f"{key}.grad_text"] = t.grad
        out[f"{key}.grad_logit_scale"] = s.grad.reshape(())
    save_file({k: v.contiguous() for k, v in out.items()}, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
