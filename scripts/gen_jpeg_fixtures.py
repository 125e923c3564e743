#!/usr/bin/env python3
"""Generates the JPEG fixtures: one small JPEG of each flavour and the RGB pixels PIL
decodes from it, for crates/data/tests/jpeg.rs.

tests/fixtures/data/jpeg/<name>.jpg, one of each:
    baseline_444, baseline_422, baseline_420   baseline, odd sizes, subsampling
    progressive_420, progressive_444           progressive
    restart_420                                restart markers every 2 MCU rows
    grey                                       one component (PIL "L")
    cmyk                                       Adobe CMYK (PIL writes the inverted
                                               convention and its APP14 marker)
    ycck                                       CMYK stored as YCCK (Adobe APP14
                                               transform 2), written by
                                               scripts/jpeg_flavours.c
    arith                                      arithmetic-coded, by jpeg_flavours.c
    exif6                                      EXIF orientation 6 (rotate 90 cw)
    photo                                      a larger photo-like image (smooth
                                               gradients and noise), for draft
    bits12                                     a baseline file whose SOF says 12-bit
                                               samples: PIL and we refuse it
tests/fixtures/data/jpeg/reference.safetensors (uint8, H x W x 3):
    <name>                  Image.open(path).convert("RGB")
    photo.draft<s>          im.draft("RGB", (W // s, H // s)) then convert("RGB"),
                            s = 2, 4, 8: libjpeg's scaled IDCT
    exif6.transposed        ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    versions                (text in the metadata) Pillow's and its libjpeg-turbo's

Run with the setup venv:  .venv/bin/python scripts/gen_jpeg_fixtures.py
(needs a C compiler and libjpeg's headers for jpeg_flavours.c).
"""
import os
import subprocess
import tempfile

import numpy as np
import PIL
from PIL import Image, ImageOps, features
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "data", "jpeg")


def photo(w, h, seed):
    """Smooth colour gradients with a blob and fine noise: what JPEG is for."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(x / (w / 3.1)) * np.cos(y / (h / 2.3))
    g = 90 + 140 * (x / w) * (1 - y / h)
    b = 60 + 160 * np.exp(-((x - w * 0.6) ** 2 + (y - h * 0.4) ** 2) / (0.05 * w * h))
    img = np.stack([r, g, b], -1) + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def flavours_tool(tmp):
    exe = os.path.join(tmp, "jpeg_flavours")
    subprocess.check_call(["cc", "-O2", os.path.join(ROOT, "scripts", "jpeg_flavours.c"), "-ljpeg", "-o", exe])
    return exe


def main():
    os.makedirs(OUT, exist_ok=True)
    ref = {}
    files = {}

    def save(name, img, **kw):
        p = os.path.join(OUT, f"{name}.jpg")
        img.save(p, **kw)
        files[name] = p

    save("baseline_444", Image.fromarray(photo(37, 29, 1)), quality=90, subsampling=0)
    save("baseline_422", Image.fromarray(photo(45, 31, 2)), quality=90, subsampling=1)
    save("baseline_420", Image.fromarray(photo(53, 41, 3)), quality=85, subsampling=2)
    save("progressive_420", Image.fromarray(photo(64, 48, 4)), quality=85, subsampling=2, progressive=True)
    save("progressive_444", Image.fromarray(photo(41, 35, 5)), quality=92, subsampling=0, progressive=True)
    save("restart_420", Image.fromarray(photo(67, 45, 6)), quality=85, subsampling=2, restart_marker_rows=2)
    save("grey", Image.fromarray(photo(33, 27, 7)).convert("L"), quality=90)
    save("cmyk", Image.fromarray(photo(35, 29, 8)).convert("CMYK"), quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif6", Image.fromarray(photo(40, 24, 9)), quality=90, exif=exif)
    save("photo", Image.fromarray(photo(256, 200, 10)), quality=90, subsampling=2)

    with tempfile.TemporaryDirectory() as tmp:
        tool = flavours_tool(tmp)
        cmyk = np.asarray(Image.fromarray(photo(39, 31, 11)).convert("CMYK"))
        raw = os.path.join(tmp, "cmyk.raw")
        (255 - cmyk).astype(np.uint8).tofile(raw)  # PIL's "CMYK;I": what libjpeg stores
        files["ycck"] = os.path.join(OUT, "ycck.jpg")
        subprocess.check_call([tool, "ycck", "39", "31", raw, files["ycck"]])
        rgb = photo(43, 37, 12)
        raw = os.path.join(tmp, "rgb.raw")
        rgb.tofile(raw)
        files["arith"] = os.path.join(OUT, "arith.jpg")
        subprocess.check_call([tool, "arith", "43", "37", raw, files["arith"]])

    for name, p in files.items():
        ref[name] = np.asarray(Image.open(p).convert("RGB"))
    im = Image.open(files["photo"])
    w, h = im.size
    for s in (2, 4, 8):
        im = Image.open(files["photo"])
        im.draft("RGB", (w // s, h // s))
        ref[f"photo.draft{s}"] = np.asarray(im.convert("RGB"))
        assert ref[f"photo.draft{s}"].shape == ((h + s - 1) // s, (w + s - 1) // s, 3)
    ref["exif6.transposed"] = np.asarray(ImageOps.exif_transpose(Image.open(files["exif6"])).convert("RGB"))
    assert ref["exif6.transposed"].shape[:2] == ref["exif6"].shape[1::-1]

    # 12-bit: the SOF0 marker's precision byte set to 12 (the data stay 8-bit).
    data = bytearray(open(files["baseline_420"], "rb").read())
    sof = data.index(b"\xff\xc0")
    data[sof + 4] = 12
    with open(os.path.join(OUT, "bits12.jpg"), "wb") as f:
        f.write(bytes(data))
    try:
        Image.open(os.path.join(OUT, "bits12.jpg")).load()
        raise SystemExit("PIL decoded the 12-bit file")
    except (OSError, SyntaxError) as e:
        print(f"bits12.jpg: PIL refuses it ({e})")

    versions = f"Pillow {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}"
    save_file({k: np.ascontiguousarray(v) for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"),
              metadata={"versions": versions})
    print(f"{len(files)} JPEGs + bits12.jpg, {len(ref)} arrays ({versions}) -> {OUT}")


if __name__ == "__main__":
    main()
