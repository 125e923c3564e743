"""Shifted copies of Fashion-MNIST's test set, for robustness figures
(docs/robustness-fashion-mnist.md): each is an IDX images file beside a copy of
the labels, ready for `data.eval_sets` / `eval --data NAME=...`.

    .venv/bin/python scripts/make_shifted_fashion_mnist.py runs/fashion-shifted

- inverted: 255 - pixel (white clothes on black become black on white)
- rotated:  every image turned by an angle drawn uniformly in [-30, 30] degrees
            (bilinear, seed 0), the corners filled with black
- blurred:  a Gaussian blur of radius 1 pixel (PIL's GaussianBlur)
"""

import gzip
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SOURCE = Path("/usr/share/datasets/fashion-mnist")


def read_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            sys.exit(f"{path}: not an IDX images file (magic {magic})")
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows, cols)


def write_images(path: Path, images: np.ndarray) -> None:
    n, rows, cols = images.shape
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, rows, cols))
        f.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())


def each(images: np.ndarray, fn) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(x))) for x in images])


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: make_shifted_fashion_mnist.py OUT_DIR")
    out = Path(sys.argv[1])
    images = read_images(SOURCE / "t10k-images-idx3-ubyte.gz")
    rng = np.random.default_rng(0)
    angles = rng.uniform(-30.0, 30.0, size=len(images))
    it = iter(angles)
    shifts = {
        "inverted": 255 - images,
        "rotated": each(images, lambda im: im.rotate(float(next(it)), Image.BILINEAR)),
        "blurred": each(images, lambda im: im.filter(ImageFilter.GaussianBlur(1))),
    }
    for name, shifted in shifts.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        write_images(folder / "images-idx3-ubyte.gz", shifted)
        shutil.copy(SOURCE / "t10k-labels-idx1-ubyte.gz", folder / "labels-idx1-ubyte.gz")
        print(f"{folder}: {len(shifted)} images")


if __name__ == "__main__":
    main()
