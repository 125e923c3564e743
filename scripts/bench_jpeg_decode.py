#!/usr/bin/env python3
"""JPEG decoding alone, ours (libjpeg-turbo through clip-data) vs PIL's, one core,
alternating rounds so both see the same machine; also the `image` crate's
zune-jpeg, which decoded JPEGs before (its pixels are not PIL's).

.venv/bin/python scripts/bench_jpeg_decode.py FILE... [--rounds 7] [--repeat 9]

Prints each side's median ms per image over the rounds and the ratio PIL / ours.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pil_ms(files, repeat):
    per = []
    for _ in range(repeat):
        t = time.perf_counter()
        for f in files:
            with Image.open(f) as im:
                im.convert("RGB")
        per.append((time.perf_counter() - t) * 1e3 / len(files))
    return statistics.median(per)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "clip-data", "--example", "pipeline_bench"], cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target", "release", "examples", "pipeline_bench")
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    pil, ours, zune = [], [], []
    for _ in range(args.rounds):
        pil.append(pil_ms(args.files, args.repeat))
        r = json.loads(subprocess.run([exe, *args.files, "--repeat", str(args.repeat), "--decode-only"],
                                      check=True, capture_output=True, text=True, env=env).stdout)
        ours.append(r["decode_ms_per_image"])
        zune.append(r["decode_zune_ms_per_image"])
    p, o, z = (statistics.median(v) for v in (pil, ours, zune))
    print(f"PIL {p:.2f} ms/image, ours (libjpeg-turbo) {o:.2f} ms/image ({p / o:.2f}x), "
          f"zune-jpeg {z:.2f} ms/image ({p / z:.2f}x); rounds: PIL {[round(x, 2) for x in pil]}, ours {[round(x, 2) for x in ours]}")


if __name__ == "__main__":
    main()
