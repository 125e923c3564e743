#!/usr/bin/env python3
"""Write an image folder (root/<class>/.../<image>) as a Parquet file the way Hugging
Face `datasets` does (an `image` struct column of bytes and path, a `label` ClassLabel
column whose names go into the file's `huggingface` metadata), so that
`data.train = { kind = "parquet", path = "OUT.parquet" }` reads it, and so does
`datasets.load_dataset("parquet", data_files=...)`.

The rows are in the order clip-finetune's image folder source reads the folder
(classes sorted, files sorted within each class, sub-folders included), so a run on
the file equals a run on the folder. WebDataset shards: `train-cli convert`.

    .venv/bin/python scripts/to_parquet.py data/train train.parquet [--row-group-size 100]
"""

import argparse
import os
import sys

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def images(class_dir):
    found = []
    for dirpath, _, files in os.walk(class_dir, followlinks=True):
        for f in files:
            if f.lower().endswith(EXTENSIONS):
                found.append(os.path.join(dirpath, f))
    return sorted(found)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="an image folder: root/<class>/.../<image>")
    ap.add_argument("output", help="the Parquet file to write")
    ap.add_argument(
        "--row-group-size",
        type=int,
        default=100,
        help="rows per row group (the unit a reader reads; default 100, as the Hub's image datasets)",
    )
    args = ap.parse_args()
    try:
        from datasets import ClassLabel, Dataset, Features, Image
    except ImportError:
        sys.exit("to_parquet.py needs the `datasets` package: run scripts/setup.sh and use .venv/bin/python")
    if not os.path.isdir(args.folder):
        sys.exit(f"{args.folder} is not a folder")
    if args.row_group_size < 1:
        sys.exit("--row-group-size must be at least 1")
    classes = sorted(d for d in os.listdir(args.folder) if os.path.isdir(os.path.join(args.folder, d)))
    if not classes:
        sys.exit(f"{args.folder} has no class folders (expected root/<class>/<image>)")
    rows = [(label, path) for label, c in enumerate(classes) for path in images(os.path.join(args.folder, c))]
    if not rows:
        sys.exit(f"{args.folder} holds no images")

    def read(path):
        with open(path, "rb") as f:
            return {"bytes": f.read(), "path": None}

    features = Features({"image": Image(), "label": ClassLabel(names=classes)})
    ds = Dataset.from_dict(
        {"image": [read(p) for _, p in rows], "label": [label for label, _ in rows]},
        features=features,
    )
    ds.to_parquet(args.output, batch_size=args.row_group_size)
    print(f"wrote {len(rows)} images in {len(classes)} classes to {args.output}", file=sys.stderr)
    print(f'{{ kind = "parquet", path = "{args.output}" }}')


if __name__ == "__main__":
    main()
