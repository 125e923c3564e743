#!/usr/bin/env python3
"""Generates the evaluation-preprocessing fixtures: transformers' CLIPImageProcessor
on images of every aspect-ratio case, and zero-shot logits of the tiny CLIP.

tests/fixtures/eval/images/<class>/<name>.png
    noisy images (high-frequency content, so a one-pixel shift of the centre crop
    changes the pixels a lot): landscape and portrait with odd and even
    `long - short` after the resize, square, very wide, smaller than the crop;
    one JPEG (PIL's decode and ours are the same pixels: both are libjpeg-turbo)
tests/fixtures/eval/reference.safetensors (float32):
    pil.<class>/<name>  CLIPImageProcessorPil (the PIL backend) pixel_values, CHW
    tv.<class>/<name>   CLIPImageProcessor (the default torchvision backend)
    logits.pil, logits.tv
                        CLIPModel(tiny-a) logits_per_image for the images in sorted
                        path order and the prompts "a photo of a {class}." of the
                        sorted class names (zero-shot with one template)
tests/fixtures/eval/jpeg/<class>/<flavour>.jpg, tests/fixtures/eval/reference_jpeg.safetensors
    the JPEG flavours of scripts/gen_jpeg_fixtures.py (run it first) as labelled
    data, and logits.pil, logits.tv as above on their PIL-decoded pixels: what
    transformers gives real JPEG photos (no EXIF rotation: the processors take
    PIL images as opened)
Both processors use shortest_edge = crop = 32 (tiny-a's image_size) and CLIP's
mean / std, as `train-cli zero-shot --model tests/fixtures/model/tiny-a` does.

Run with the setup venv:  .venv/bin/python scripts/gen_eval_fixtures.py
"""
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPModel, CLIPTokenizerFast
from transformers.models.clip.image_processing_clip import CLIPImageProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "eval")
IMAGES = os.path.join(OUT, "images")
MODEL = os.path.join(ROOT, "tests", "fixtures", "model", "tiny-a")
SIZE = 32
TEMPLATE = "a photo of a {}."

# (class, name, width, height): after the shorter side goes to 32, the longer one is
# int(32 * long / short) and the crop offset is (long - 32) // 2 in transformers,
# round((long - 32) / 2) (ties to even) in torchvision: they differ when
# long - 32 = 3 (mod 4).
CASES = [
    ("cat", "landscape_odd_307x205", 307, 205),   # 47x32: offset 7 (transformers) vs 8
    ("cat", "portrait_odd_40x64", 40, 64),        # 32x51: 9 vs 10
    ("cat", "portrait_odd_41x64", 41, 64),        # 32x49: 8 either way (8.5 ties to 8)
    ("cat", "landscape_even_96x64", 96, 64),      # 48x32: 8 either way
    ("dog", "portrait_even_60x90", 60, 90),       # 32x48: 8 either way
    ("dog", "small_odd_23x17", 23, 17),           # smaller than the crop, up to 43x32: 5 vs 6
    ("dog", "square_50x50", 50, 50),
    ("dog", "wide_odd_210x41", 210, 41),          # 163x32: 65 vs 66
    ("dog", "photo_odd_307x205", 307, 205),       # a JPEG (quality 90) of the first shape
]


def noisy(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 128 + 100 * np.sin(x / 3.0)], -1)
    img = 0.5 * base + 0.5 * rng.uniform(0, 255, (h, w, 3))
    return np.clip(img, 0, 255).round().astype(np.uint8)


def main():
    files = []
    for i, (cls, name, w, h) in enumerate(CASES):
        d = os.path.join(IMAGES, cls)
        os.makedirs(d, exist_ok=True)
        ext = "jpg" if name.startswith("photo") else "png"
        path = os.path.join(d, f"{name}.{ext}")
        img = Image.fromarray(noisy(w, h, 100 + i))
        if ext == "jpg":
            img.save(path, quality=90)
        else:
            img.save(path)
        files.append(f"{cls}/{name}.{ext}")
    out = zero_shot(IMAGES, files, pixels=True)
    save_file(out, os.path.join(OUT, "reference.safetensors"))
    print(f"{len(files)} images -> {OUT}")
    jpeg_set()


def zero_shot(root, files, pixels):
    """Both processors' pixels (with `pixels`) and tiny-a's zero-shot logits for
    `files` (class/name under `root`), in sorted order."""
    files = sorted(files)
    images = [Image.open(os.path.join(root, f)).convert("RGB") for f in files]
    kw = dict(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    processors = {"pil": CLIPImageProcessorPil(**kw), "tv": CLIPImageProcessor(**kw)}
    model = CLIPModel.from_pretrained(MODEL).eval()
    tok = CLIPTokenizerFast.from_pretrained(MODEL)
    classes = sorted({f.split("/")[0] for f in files})
    ids = tok([TEMPLATE.format(c) for c in classes], padding="max_length", max_length=77, return_tensors="pt")
    out = {}
    for key, proc in processors.items():
        px = proc(images, return_tensors="pt")["pixel_values"].to(torch.float32)
        if pixels:
            for f, p in zip(files, px):
                out[f"{key}.{f}"] = p.contiguous()
        with torch.no_grad():
            logits = model(input_ids=ids["input_ids"], pixel_values=px).logits_per_image
        out[f"logits.{key}"] = logits.contiguous()
    return out


# The JPEG flavours as two classes of labelled data.
JPEG_CLASSES = {
    "cat": ["baseline_420", "progressive_444", "grey", "cmyk", "photo"],
    "dog": ["baseline_422", "ycck", "arith", "restart_420", "exif6", "progressive_420"],
}


def jpeg_set():
    src = os.path.join(ROOT, "tests", "fixtures", "data", "jpeg")
    root = os.path.join(OUT, "jpeg")
    files = []
    for cls, names in JPEG_CLASSES.items():
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for n in names:
            shutil.copyfile(os.path.join(src, f"{n}.jpg"), os.path.join(root, cls, f"{n}.jpg"))
            files.append(f"{cls}/{n}.jpg")
    save_file(zero_shot(root, files, pixels=False), os.path.join(OUT, "reference_jpeg.safetensors"))
    print(f"{len(files)} JPEGs -> {root}")


if __name__ == "__main__":
    main()
