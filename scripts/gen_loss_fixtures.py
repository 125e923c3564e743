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

tests/fixtures/train_step/retrieval.safetensors (float32 embeddings, float64 figures):
    image, text        1,200 L2-normalised pairs (8-d, text = image + noise)
    <dir>.R@1, .R@5, .R@10, .mean_rank, .median_rank
                       open_clip's get_clip_metrics (open_clip_train/train.py),
                       for dir in image_to_text, text_to_image

tests/fixtures/train_step/retrieval_grouped.safetensors (the same, several captions
per image, as COCO and Flickr30k have):
    image, text        1,100 images (8-d), 1 to 3 captions each (text = its image +
                       noise), image_of: each caption's image (int64)
    <dir>.R@1, .R@5, .R@10
                       clip_benchmark's zero-shot retrieval recall (a query is a hit
                       at k when any of its positives is among its top k; an image's
                       positives are all its captions)
    <dir>.mean_rank, .median_rank
                       as open_clip's, of each query's first-ranked positive

Run with the setup venv:  .venv/bin/python scripts/gen_loss_fixtures.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "train_step", "contrastive_loss.safetensors")
RETRIEVAL = os.path.join(ROOT, "tests", "fixtures", "train_step", "retrieval.safetensors")


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


def get_clip_metrics(image_features, text_features, logit_scale):
    """open_clip_train.train.get_clip_metrics, as written there."""
    metrics = {}
    logits_per_image = (logit_scale * image_features @ text_features.t()).detach().cpu()
    logits_per_text = logits_per_image.t().detach().cpu()
    logits = {"image_to_text": logits_per_image, "text_to_image": logits_per_text}
    ground_truth = torch.arange(len(text_features)).view(-1, 1)
    for name, logit in logits.items():
        ranking = torch.argsort(logit, descending=True)
        preds = torch.where(ranking == ground_truth)[1]
        preds = preds.detach().cpu().numpy()
        metrics[f"{name}_mean_rank"] = preds.mean() + 1
        metrics[f"{name}_median_rank"] = np.floor(np.median(preds)) + 1
        for k in [1, 5, 10]:
            metrics[f"{name}_R@{k}"] = np.mean(preds < k)
    return metrics


def retrieval():
    g = torch.Generator().manual_seed(5)
    image = F.normalize(torch.randn(1200, 8, generator=g), dim=-1)
    text = F.normalize(image + 0.3 * torch.randn(1200, 8, generator=g), dim=-1)
    out = {"image": image, "text": text}
    for key, value in get_clip_metrics(image, text, 100.0).items():
        # image_to_text_R@1 -> image_to_text.R@1, ..._mean_rank -> ....mean_rank
        for part in ("_R@", "_mean_rank", "_median_rank"):
            key = key.replace(part, "." + part[1:])
        out[key] = torch.tensor(float(value), dtype=torch.float64)
    save_file(out, RETRIEVAL)
    print(f"wrote {RETRIEVAL}")


def grouped_metrics(image, text, image_of):
    """Recall@k as clip_benchmark's `zeroshot_retrieval.evaluate` defines it (hit
    at k: a positive among the top k, by torch.topk), and open_clip's mean and
    median rank of the first-ranked positive."""
    scores = text @ image.T  # captions x images
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(text)), image_of] = True
    metrics = {}
    for name, s, pos in (("text_to_image", scores, positive),
                         ("image_to_text", scores.T, positive.T)):
        for k in (1, 5, 10):
            top = torch.topk(s, k, dim=1).indices
            hit = pos.gather(1, top).any(dim=1)
            metrics[f"{name}.R@{k}"] = hit.double().mean().item()
        ranking = torch.argsort(s, dim=1, descending=True)
        first = pos.gather(1, ranking).double().argmax(dim=1).numpy()
        metrics[f"{name}.mean_rank"] = first.mean() + 1
        metrics[f"{name}.median_rank"] = np.floor(np.median(first)) + 1
    return metrics


def retrieval_grouped():
    g = torch.Generator().manual_seed(7)
    image = F.normalize(torch.randn(1100, 8, generator=g), dim=-1)
    counts = torch.randint(1, 4, (1100,), generator=g)
    image_of = torch.repeat_interleave(torch.arange(1100), counts)
    # Captions in a shuffled order, not grouped by image.
    image_of = image_of[torch.randperm(len(image_of), generator=g)]
    text = F.normalize(image[image_of] + 0.5 * torch.randn(len(image_of), 8, generator=g), dim=-1)
    out = {"image": image, "text": text, "image_of": image_of}
    for key, value in grouped_metrics(image, text, image_of).items():
        out[key] = torch.tensor(float(value), dtype=torch.float64)
    path = RETRIEVAL.replace(".safetensors", "_grouped.safetensors")
    save_file(out, path)
    print(f"wrote {path}")


def main():
    retrieval()
    retrieval_grouped()
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
