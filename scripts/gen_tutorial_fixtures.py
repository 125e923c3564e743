#!/usr/bin/env python3
"""Runs the tutorial's own optimizer code (docs/tutorial.md, section 实施方法 2-3) on
openai/clip-vit-base-patch32's architecture and records what it gives, so that
configs/tutorial.toml can be checked against it tensor by tensor.

tests/fixtures/tutorial/groups.json
  trainable_params      the tutorial's "Trainable parameters" line on CLIPModel
                        (it prints 149,620,224; transformers' model has this many)
  params[]              every parameter of CLIPModel + the tutorial's
                        `model.classifier` (nn.Linear(512, 10) on the image
                        embeddings): name, numel, whether the tutorial's
                        get_parameter_groups puts it in the optimizer, its lr and
                        weight_decay there (AdamW(groups, weight_decay=0.01, ...)),
                        and whether a classification step gives it a gradient
                        (AdamW skips tensors whose .grad is None)
  schedule              get_cosine_schedule_with_warmup's LR factors for a run of
                        37 optimizer steps with the tutorial's int(0.1 * N) warmup

No pretrained weights are needed: the groups depend on the architecture only
(CLIPConfig()'s defaults are ViT-B/32's).

Run with the setup venv:  .venv/bin/python scripts/gen_tutorial_fixtures.py
"""
import json
import os

import torch
from torch import nn
from torch.optim import AdamW
from transformers import CLIPConfig, CLIPModel, get_cosine_schedule_with_warmup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tutorial")
NUM_CLASSES = 10
STEPS = 37


# ---- the tutorial's code, verbatim (comments translated) ----
def get_parameter_groups(model, base_lr=1e-5, decay_rate=0.95):
    parameter_groups = []

    # vision encoder
    num_layers = len(model.vision_model.encoder.layers)
    for i, layer in enumerate(model.vision_model.encoder.layers):
        # lower layers get smaller learning rates
        lr = base_lr * (decay_rate ** (num_layers - i - 1))
        parameter_groups.append({
            'params': layer.parameters(),
            'lr': lr
        })

    # every other parameter at the base learning rate
    other_params = [
        p for n, p in model.named_parameters()
        if 'encoder.layers' not in n
    ]
    parameter_groups.append({
        'params': other_params,
        'lr': base_lr
    })

    return parameter_groups
# ---- end of the tutorial's code ----


def main():
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig())
    for param in model.parameters():
        param.requires_grad = True
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # The tutorial's progressive-unfreezing snippet refers to `model.classifier`.
    model.classifier = nn.Linear(model.config.projection_dim, NUM_CLASSES)

    parameter_groups = get_parameter_groups(model, base_lr=1e-5)
    optimizer = AdamW(parameter_groups, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)
    in_optimizer = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            in_optimizer[id(p)] = (g["lr"], g["weight_decay"])

    # One classification step: which tensors get a gradient at all.
    pixels = torch.randn(2, 3, 224, 224)
    feats = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)(model.classifier(feats), torch.tensor([1, 7]))
    loss.backward()

    params = []
    for n, p in model.named_parameters():
        lr, wd = in_optimizer.get(id(p), (None, None))
        params.append({
            "name": n,
            "numel": p.numel(),
            "in_optimizer": id(p) in in_optimizer,
            "lr": lr,
            "weight_decay": wd,
            "has_grad": p.grad is not None,
        })

    sched_opt = AdamW([torch.zeros(1, requires_grad=True)], lr=1.0)
    num_warmup_steps = int(0.1 * STEPS)
    scheduler = get_cosine_schedule_with_warmup(sched_opt, num_warmup_steps=num_warmup_steps,
                                                num_training_steps=STEPS)
    factors = []
    for _ in range(STEPS):
        factors.append(sched_opt.param_groups[0]["lr"])
        sched_opt.step()
        scheduler.step()

    os.makedirs(OUT, exist_ok=True)
    out = {
        "trainable_params": trainable,
        "params": params,
        "schedule": {"steps": STEPS, "warmup_steps": num_warmup_steps, "factors": factors},
    }
    with open(os.path.join(OUT, "groups.json"), "w") as f:
        json.dump(out, f, indent=0)
    dropped = [p["name"] for p in params if not p["in_optimizer"]]
    print(f"{len(params)} tensors, {trainable:,} in CLIPModel, {len(dropped)} not in the optimizer -> {OUT}")


if __name__ == "__main__":
    main()
