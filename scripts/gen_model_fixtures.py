#!/usr/bin/env python3
"""Generates clip-model's parity fixtures with Python transformers.

Writes, under tests/fixtures/model/:
  tokenizer/            a real CLIP BPE tokenizer (tokenizer.json) cut to the first
                        MERGES merges of OpenAI's vocabulary, so it stays small
  tokens.json           texts and the ids transformers' CLIPTokenizer gives them
  <name>/               a tiny random CLIPModel saved with save_pretrained
                        (config.json, model.safetensors, tokenizer.json)
  <name>/reference.safetensors
                        inputs (pixel_values, input_ids, loss_weights) and outputs
                        (image_embeds, text_embeds, logits_per_image, vision_pooled,
                        text_pooled) and grad.<param> for every parameter, of
                        loss = sum(logits_per_image * loss_weights)

Run with the setup venv:  .venv/bin/python scripts/gen_model_fixtures.py
OpenAI's BPE merges come from the open_clip_torch wheel (downloaded, not installed).
"""
import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "model")
MERGES = 1000

TEXTS = [
    "a photo of a cat",
    "A PHOTO of a Dog!!",
    "",
    "t-shirt/top, trouser; pullover... dress? coat: sandal",
    "naïve café – 東京 🚀 émoji",
    "   spaces\tand\nnewlines   ",
    "it's 2026, isn't it? 3.14159 $100 #tag @user",
    " ".join(["a very long caption that keeps going"] * 20),
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def openai_merges():
    tmp = tempfile.mkdtemp()
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "open_clip_torch==3.3.0", "-d", tmp],
            check=True,
        )
        (wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
        with zipfile.ZipFile(wheel) as z:
            data = gzip.decompress(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode("utf-8")
    finally:
        shutil.rmtree(tmp)
    return data.split("\n")[1 : 1 + MERGES]


def make_tokenizer(path):
    merges = openai_merges()
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m.split()) for m in merges], model_max_length=77)
    tok.save_pretrained(path)
    return tok


def tiny_config(name, vocab_size, eos_token_id, **kw):
    text = dict(
        vocab_size=vocab_size, max_position_embeddings=77, eos_token_id=eos_token_id, bos_token_id=vocab_size - 2,
        pad_token_id=vocab_size - 1,
    )
    text.update(kw["text"])
    return CLIPConfig(text_config=text, vision_config=kw["vision"], projection_dim=kw["projection_dim"],
                      logit_scale_init_value=kw.get("logit_scale", 2.6592))


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    tok_dir = os.path.join(OUT, "tokenizer")
    tok = make_tokenizer(tok_dir)
    enc = tok(TEXTS, padding="max_length", max_length=77, truncation=True)
    with open(os.path.join(OUT, "tokens.json"), "w") as f:
        json.dump({"texts": TEXTS, "input_ids": enc["input_ids"]}, f, ensure_ascii=False, indent=0)
    vocab_size = len(tok)
    configs = {
        # Legacy eos_token_id = 2: pooling at argmax(input_ids).
        "tiny-a": tiny_config(
            "tiny-a", vocab_size, 2,
            text=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2),
            vision=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                        image_size=32, patch_size=8),
            projection_dim=16,
        ),
        # Modern eos_token_id: pooling at the first end-of-text token; other widths,
        # heads, depth, patch and image size, gelu, a different eps.
        "tiny-b": tiny_config(
            "tiny-b", vocab_size, vocab_size - 1,
            text=dict(hidden_size=24, intermediate_size=40, num_attention_heads=2, num_hidden_layers=1,
                      layer_norm_eps=1e-6),
            vision=dict(hidden_size=48, intermediate_size=80, num_attention_heads=3, num_hidden_layers=3,
                        image_size=20, patch_size=4, hidden_act="gelu", layer_norm_eps=1e-6),
            projection_dim=24, logit_scale=2.0,
        ),
    }
    for name, cfg in configs.items():
        torch.manual_seed(1 + len(name) + ord(name[-1]))
        model = CLIPModel(cfg).eval()
        # Random init leaves biases and norms at 0/1: perturb every tensor so parity
        # checks each of them.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        d = os.path.join(OUT, name)
        model.save_pretrained(d)
        tok.save_pretrained(d)
        for extra in ("tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
            p = os.path.join(d, extra)
            if os.path.exists(p):
                os.remove(p)
        vc = cfg.vision_config
        pixel_values = torch.randn(3, 3, vc.image_size, vc.image_size)
        input_ids = torch.tensor(enc["input_ids"][:4])
        out = model(input_ids=input_ids, pixel_values=pixel_values)
        loss_weights = torch.randn_like(out.logits_per_image)
        loss = (out.logits_per_image * loss_weights).sum()
        loss.backward()
        ref = {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "loss_weights": loss_weights,
            "image_embeds": out.image_embeds,
            "text_embeds": out.text_embeds,
            "logits_per_image": out.logits_per_image,
            "vision_pooled": out.vision_model_output.pooler_output,
            "text_pooled": out.text_model_output.pooler_output,
            "loss": loss.reshape(1),
        }
        for n, p in model.named_parameters():
            ref["grad." + n] = p.grad
        save_file({k: v.detach().contiguous() for k, v in ref.items()}, os.path.join(d, "reference.safetensors"))
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters -> {d}")


if __name__ == "__main__":
    main()
