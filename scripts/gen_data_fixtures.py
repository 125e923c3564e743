#!/usr/bin/env python3
"""Generates clip-data's pixel-parity fixtures with PIL, torchvision and transformers.

tests/fixtures/data/images/   synthetic test images: edges, gradients, noise, odd
                              sizes and aspect ratios, and every PIL mode CLIP meets
                              (RGB, L, LA, RGBA, P, I;16, a JPEG)
tests/fixtures/data/reference.safetensors (uint8 HWC arrays):
  rgb.{file}      PIL Image.open(file).convert("RGB")
  clip.{file}     transformers' CLIPImageProcessorPil (shortest edge 224 bicubic,
                  center crop 224), before rescale/normalise
  tv.{op}         torchvision.transforms.functional ops on PIL (deterministic ones:
                  flip, crop, resize, colour adjustments at fixed factors, rotation)
                  applied to images/gradient_97x131.png
  aug.{op}.{interpolation}.{magnitude}
                  torchvision.transforms.autoaugment._apply_op on the same image
  space.{wide|rand}.{op} (float32)
                  the magnitude bins of TrivialAugmentWide and of RandAugment (for
                  that image's size), 31 bins, as torchvision's _augmentation_space

Run with the setup venv: .venv/bin/python scripts/gen_data_fixtures.py
"""
import os

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode, RandAugment, TrivialAugmentWide
from torchvision.transforms.autoaugment import _apply_op
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "data")
IMAGES = os.path.join(OUT, "images")


def pattern(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin(x / 5.0) * np.cos(y / 7.0)
    img = np.stack([r, g, b], -1)
    img[(x // 16 + y // 16) % 2 == 0] *= 0.6  # hard edges
    img[h // 3 : h // 2, w // 4 : w // 2] = [250, 10, 40]  # a solid block
    img += rng.normal(0, 12, img.shape)  # noise
    return np.clip(img, 0, 255).round().astype(np.uint8)


def make_images():
    os.makedirs(IMAGES, exist_ok=True)
    files = {}
    for (w, h), seed in [((257, 181), 1), ((97, 131), 2), ((224, 224), 3), ((300, 61), 4), ((50, 67), 5)]:
        name = f"gradient_{w}x{h}.png"
        Image.fromarray(pattern(w, h, seed)).save(os.path.join(IMAGES, name))
        files[name] = None
    base = pattern(120, 90, 6)
    Image.fromarray(base).convert("L").save(os.path.join(IMAGES, "grey_120x90.png"))
    Image.fromarray(base).convert("LA").save(os.path.join(IMAGES, "grey_alpha_120x90.png"))
    rgba = np.concatenate([base, np.linspace(0, 255, 120 * 90).reshape(90, 120, 1).astype(np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(os.path.join(IMAGES, "rgba_120x90.png"))
    Image.fromarray(base).quantize(64).save(os.path.join(IMAGES, "palette_120x90.png"))
    grey16 = (np.linspace(0, 65535, 120 * 90).reshape(90, 120)).astype(np.uint16)
    Image.fromarray(grey16).save(os.path.join(IMAGES, "grey16_120x90.png"))
    Image.fromarray(base).save(os.path.join(IMAGES, "photo_120x90.jpg"), quality=90)
    Image.fromarray(base).save(os.path.join(IMAGES, "plain_120x90.bmp"))
    Image.fromarray(base).save(os.path.join(IMAGES, "lossless_120x90.webp"), lossless=True)
    return sorted(os.listdir(IMAGES))


def arr(img):
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())


def main():
    files = make_images()
    out = {}
    processor = CLIPImageProcessorPil()
    for f in files:
        rgb = Image.open(os.path.join(IMAGES, f)).convert("RGB")
        out[f"rgb.{f}"] = arr(rgb)
        px = processor(rgb, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
        out[f"clip.{f}"] = torch.from_numpy(np.ascontiguousarray(px.transpose(1, 2, 0)).round().astype(np.uint8))
    img = Image.open(os.path.join(IMAGES, "gradient_97x131.png")).convert("RGB")
    ops = {
        "hflip": TF.hflip(img),
        "center_crop_60x51": TF.center_crop(img, [60, 51]),
        "center_crop_150x150": TF.center_crop(img, [150, 150]),
        "resize_bilinear_64": TF.resize(img, 64, InterpolationMode.BILINEAR),
        "resize_bicubic_50x70": TF.resize(img, [50, 70], InterpolationMode.BICUBIC),
        "resize_bicubic_up_200": TF.resize(img, 200, InterpolationMode.BICUBIC),
        "brightness_1.3": TF.adjust_brightness(img, 1.3),
        "contrast_0.7": TF.adjust_contrast(img, 0.7),
        "saturation_1.4": TF.adjust_saturation(img, 1.4),
        "hue_0.1": TF.adjust_hue(img, 0.1),
        "hue_-0.3": TF.adjust_hue(img, -0.3),
        "rotate_15_nearest": TF.rotate(img, 15, InterpolationMode.NEAREST),
        "rotate_-20_bilinear_fill": TF.rotate(img, -20, InterpolationMode.BILINEAR, fill=[10, 20, 30]),
        "rotate_180_nearest": TF.rotate(img, 180, InterpolationMode.NEAREST),
        "rotate_-270_square": TF.rotate(TF.center_crop(img, 97), -270, InterpolationMode.NEAREST),
        "rotate_90_square": TF.rotate(TF.center_crop(img, 97), 90, InterpolationMode.BILINEAR),
        "resized_crop_10_5_60_40_to_32": TF.resized_crop(img, 10, 5, 60, 40, [32, 32], InterpolationMode.BILINEAR),
        "posterize_3": TF.posterize(img, 3),
        "solarize_128": TF.solarize(img, 128),
        "autocontrast": TF.autocontrast(img),
        "equalize": TF.equalize(img),
        "sharpness_1.7": TF.adjust_sharpness(img, 1.7),
        "sharpness_0.3": TF.adjust_sharpness(img, 0.3),
    }
    for k, v in ops.items():
        out[f"tv.{k}"] = arr(v)
    nearest, bilinear = InterpolationMode.NEAREST, InterpolationMode.BILINEAR
    augment = [
        ("ShearX", 0.3, nearest), ("ShearX", -0.99, nearest), ("ShearY", 0.5, nearest),
        ("ShearY", -0.2, bilinear), ("ShearX", 0.7, bilinear),
        ("TranslateX", 10.0, nearest), ("TranslateX", -31.0, nearest),
        ("TranslateY", -7.4, nearest), ("TranslateY", 12.0, bilinear),
        ("Rotate", -40.5, nearest), ("Rotate", 135.0, bilinear),
        ("Brightness", -0.6, nearest), ("Color", 0.83, nearest), ("Contrast", -0.35, nearest),
        ("Sharpness", 0.9, nearest), ("Posterize", 5.0, nearest), ("Solarize", 246.5, nearest),
        ("AutoContrast", 0.0, nearest), ("Equalize", 0.0, nearest), ("Identity", 0.0, nearest),
    ]
    for op, m, interp in augment:
        out[f"aug.{op}.{interp.value}.{m}"] = arr(_apply_op(img, op, m, interpolation=interp, fill=None))
    width, height = img.size
    spaces = {
        "wide": TrivialAugmentWide()._augmentation_space(31),
        "rand": RandAugment()._augmentation_space(31, (height, width)),
    }
    for name, space in spaces.items():
        for op, (mags, _signed) in space.items():
            if mags.ndim > 0:
                out[f"space.{name}.{op}"] = mags.to(torch.float32)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "reference.safetensors"))
    print(f"{len(files)} images, {len(out)} references -> {OUT}")


if __name__ == "__main__":
    main()
