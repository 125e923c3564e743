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
tests/fixtures/train_step/contrastive_step.safetensors (float32): one optimizer
step of the contrastive objective (FLYP) on tiny-a, as open_clip's ClipLoss trains
it, over the same images and groups:
    a.<param>, b.<param>
        the accumulated gradient of every parameter of the CLIPModel (both towers,
        both projections, logit_scale) with `loss = ClipLoss(label_smoothing=0.1)
        / k; loss.backward()` per batch of 2, each image's caption its class name in
        the template "a photo of a {}." (batch 0 holds two cats: a duplicate
        caption), k = 3 for group a and 2 for its short last group b
    a.loss, b.loss
        the loss a trainer reports for the step: the mean of the micro-batches'
        unweighted losses
    a.grad_norm, b.grad_norm
        the global L2 norm of the accumulated gradients (before clipping)

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
    contrastive_step(pixels, labels, groups)


def clip_loss(image, text, logit_scale, label_smoothing):
    """open_clip.loss.ClipLoss.forward on one process: logits_per_image =
    exp(logit_scale) * image @ text.T, the mean of both directions' cross-entropy
    against the diagonal."""
    logits = logit_scale.exp() * image @ text.T
    target = torch.arange(len(image))
    return (
        F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        + F.cross_entropy(logits.T, target, label_smoothing=label_smoothing)
    ) / 2


def contrastive_step(pixels, labels, groups):
    model = CLIPModel.from_pretrained(MODEL).eval()
    tok = CLIPTokenizerFast.from_pretrained(MODEL)
    captions = [f"a photo of a {CLASSES[int(y)]}." for y in labels]
    ids = tok(captions, padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
    params = dict(model.named_parameters())
    out = {}
    for key, group in groups.items():
        for p in params.values():
            p.grad = None
        losses = []
        for idx in group:
            o = model(input_ids=ids[idx], pixel_values=pixels[idx])
            loss = clip_loss(o.image_embeds, o.text_embeds, model.logit_scale, 0.1)
            (loss / len(group)).backward()
            losses.append(loss.item())
        grads = {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}
        assert len(grads) == len(params), "every parameter of the CLIPModel gets a gradient"
        for n, g in grads.items():
            out[f"{key}.{n}"] = g
        out[f"{key}.loss"] = torch.tensor([sum(losses) / len(losses)])
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))
        out[f"{key}.grad_norm"] = norm.float().reshape(1)
    path = os.path.join(OUT, "contrastive_step.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    print(f"contrastive step: {len(params)} tensors, losses {out['a.loss'].item():.6f} / {out['b.loss'].item():.6f} -> {path}")


if __name__ == "__main__":
    main()
