#!/usr/bin/env python3
"""Generates the training-step fixtures: PyTorch's gradient accumulation and
nn.CrossEntropyLoss(label_smoothing=0.1), for crates/train/tests/step_parity.rs.

tests/fixtures/train_step/images/{cat,dog}/{0..4}.png
    ten 32x32 noise images (tiny-a's image size: no resize)
tests/fixtures/train_step/reference.safetensors (float32):
    a.<param>, b.<param>
        the accumulated gradient of every vision-tower and head parameter of the
        zero-shot classifier on tests/fixtures/model/tiny-a (head: the normalised
        text embedding of "a photo of a {class}." per class, bias 0, scale
        exp(logit_scale); logits = scale * (W . normalize(image_embeds) + b)) over
        the batches of size 2 in folder order (cat/0..4, dog/0..4), with
        `loss = CrossEntropyLoss(label_smoothing=0.1)(logits, y) / k; loss.backward()`:
        a: batches 0-2 (k = 3), b: the short last group, batches 3-4 (k = 2)
    loss.logits, loss.classes, loss.soft
        random logits (6 x 5), class indices, soft targets (rows summing to 1)
    loss.hard_value, loss.hard_grad, loss.soft_value, loss.soft_grad
        nn.CrossEntropyLoss(label_smoothing=0.1) on them and d loss / d logits

Run with the setup venv:  .venv/bin/python scripts/gen_train_fixtures.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPModel, CLIPTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "train_step")
MODEL = os.path.join(ROOT, "tests", "fixtures", "model", "tiny-a")
CLASSES = ["cat", "dog"]
PER_CLASS = 5
BATCH = 2
ACCUM = 3
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def make_images():
    rng = np.random.default_rng(7)
    paths = []
    for c in CLASSES:
        d = os.path.join(OUT, "images", c)
        os.makedirs(d, exist_ok=True)
        for i in range(PER_CLASS):
            p = os.path.join(d, f"{i}.png")
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
            paths.append((p, CLASSES.index(c)))
    return paths


def main():
    torch.manual_seed(0)
    paths = make_images()
    pixels = torch.stack([
        (torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1) - MEAN)
        / STD
        for p, _ in paths
    ])
    labels = torch.tensor([y for _, y in paths])

    model = CLIPModel.from_pretrained(MODEL).eval()
    tok = CLIPTokenizerFast.from_pretrained(MODEL)
    ids = tok([f"a photo of a {c}." for c in CLASSES], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        text = model.text_projection(model.text_model(input_ids=ids["input_ids"]).pooler_output)
    weight = nn.Parameter(F.normalize(text, dim=-1))
    bias = nn.Parameter(torch.zeros(len(CLASSES)))
    scale = model.logit_scale.exp().item()
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    trained = {n: p for n, p in model.named_parameters() if n.startswith("vision_model") or n == "visual_projection.weight"}
    trained["classification_head.weight"] = weight
    trained["classification_head.bias"] = bias

    out = {}
    batches = [list(range(i, min(i + BATCH, len(paths)))) for i in range(0, len(paths), BATCH)]
    groups = {"a": batches[:ACCUM], "b": batches[ACCUM:]}
    for key, group in groups.items():
        for p in trained.values():
            p.grad = None
        for idx in group:
            feats = model.visual_projection(model.vision_model(pixel_values=pixels[idx]).pooler_output)
            logits = scale * (F.normalize(feats, dim=-1) @ weight.T + bias)
            loss = criterion(logits, labels[idx]) / len(group)
            loss.backward()
        for n, p in trained.items():
            out[f"{key}.{n}"] = p.grad.detach().clone()

    logits = torch.randn(6, 5, requires_grad=True)
    classes = torch.tensor([0, 3, 4, 1, 1, 2])
    soft = torch.distributions.Dirichlet(torch.ones(5)).sample((6,))
    for kind, target in (("hard", classes), ("soft", soft)):
        logits.grad = None
        value = criterion(logits, target)
        value.backward()
        out[f"loss.{kind}_value"] = value.detach().reshape(1)
        out[f"loss.{kind}_grad"] = logits.grad.clone()
    out["loss.logits"] = logits.detach()
    out["loss.classes"] = classes
    out["loss.soft"] = soft
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "reference.safetensors"))
    print(f"{len(paths)} images, {len(trained)} trained tensors, groups {[len(g) for g in groups.values()]} -> {OUT}")


if __name__ == "__main__":
    main()
