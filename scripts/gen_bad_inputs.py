#!/usr/bin/env python3
"""Generates the bad-input corpus: the files a careless user, a broken download or a
full disk hands the tool, each paired with the outcome it must get in
tests/fixtures/bad_inputs/cases.toml (hand-written; the test
`crates/train-cli/tests/bad_inputs.rs` runs every case on a copy of the corpus and
asserts its exit code, that nothing panicked or aborted, and the key or file the
message names).

tests/fixtures/bad_inputs/
  data/good/{cat,dog,fox}/*.png        16x16 images that train (the base of most cases)
  data/corrupt/{cat,dog}/*.png         good images
  data/corrupt/fox/*                   every fox image unreadable: truncated PNG, random
                                       bytes, an empty file, HTML named .jpg, a PNG and a
                                       GIF that claim 0x0 pixels
  data/one_bad/{cat,dog,fox}           good, plus fox/truncated.png
  data/zero_size/...                   good, plus cat/zero.gif (0x0)
  data/empty_class/fox/notes.txt       a class folder without images
  data/single_class/cat                one class only
  data/no_classes/readme.txt           no class folders at all
  data/links/                          a loop (cat/loop -> .), a link to the parent
                                       (dog/up -> ..), a link into another class
                                       (fox/from_cat.png -> ../cat/0.png), a broken link
  data/shards/*.tar                     good.tar (12 samples); a key repeated in its shard
                                       with another label / the same label; a .cls
                                       outside the class names; a .cls and .txt that
                                       disagree; good.tar.gz (compressed)
  data/gz_only/                        a folder of compressed shards only
  data/parquet/float_labels.parquet    labels of a float type
  data/val_copies/                     copies (other files, same bytes) of data/good images
  data/hidden/                         classes beside .thumbnails/ and __MACOSX/
  data/bomb/                           good, plus a PNG header claiming 20000 x 20000
  csv/*.csv                            extra column, empty label, missing file, wrong
                                       header, header only, not UTF-8; image-caption
                                       pairs (captions.csv) and an empty caption; a row
                                       repeated, a row repeated with another label
  idx/*                                IDX files: huge dimensions, truncated data,
                                       0 rows, label count mismatch, labels skipping
                                       numbers (255 without class names)
  configs/*.toml                       unknown keys, wrong types, negative sizes,
                                       bad enum, TOML syntax, binary garbage, run
                                       names escaping output_dir, huge thread counts,
                                       an epoch count that overflows, no model
  models/*                             tiny-a (tests/fixtures/model) damaged: weights
                                       truncated, garbage header, a tensor missing, a
                                       tensor of the wrong shape, config.json not JSON,
                                       no config.json; huge_dims (a config.json whose
                                       dimensions make 10^14 parameters); bin_* (PyTorch
                                       .bin: a raw pickle, a zip cut short, a pickle
                                       calling os.system)
  runs/damaged/                        a run whose only checkpoint is damaged

Cases git cannot hold portably (a class folder whose name is not UTF-8) are made by
the test on its copy. Run with the setup venv:
    .venv/bin/python scripts/gen_bad_inputs.py
"""
import io
import json
import os
import random
import shutil
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "bad_inputs")
TINY = os.path.join(ROOT, "tests", "fixtures", "model", "tiny-a")
COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}
rng = random.Random(0)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def png_bytes(cls, i):
    base = np.array(COLOURS[cls], dtype=np.int32)
    noise = np.random.default_rng(zlib.crc32(f"{cls}/{i}".encode())).integers(-20, 20, (16, 16, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    path = "/tmp/_bad_inputs.png"
    img.save(path)
    with open(path, "rb") as f:
        return f.read()


def good_class(folder, cls, n=4):
    for i in range(n):
        write(os.path.join(folder, cls, f"{i}.png"), png_bytes(cls, i))


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_zero():
    """A PNG whose header says 0x0 (CRCs right, so only the size is wrong)."""
    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b""))


def gif_zero():
    """A GIF whose screen and only frame are 0x0."""
    return (b"GIF89a" + struct.pack("<HHBBB", 0, 0, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 0, 0, 0) + b"\x02\x02\x44\x01\x00" + b"\x3b")


def data():
    d = os.path.join(OUT, "data")
    for cls in COLOURS:
        good_class(os.path.join(d, "good"), cls)
    # Every fox image unreadable.
    for cls in ("cat", "dog"):
        good_class(os.path.join(d, "corrupt"), cls)
    fox = os.path.join(d, "corrupt", "fox")
    write(os.path.join(fox, "truncated.png"), png_bytes("fox", 0)[:60])
    write(os.path.join(fox, "random.jpg"), bytes(rng.getrandbits(8) for _ in range(300)))
    write(os.path.join(fox, "empty.png"), b"")
    write(os.path.join(fox, "html.jpg"), "<html><body>404 Not Found</body></html>\n")
    write(os.path.join(fox, "zero.png"), png_zero())
    write(os.path.join(fox, "zero.gif"), gif_zero())
    # One unreadable image among many: skipped when allowed.
    for cls in COLOURS:
        good_class(os.path.join(d, "one_bad"), cls, 12)
    write(os.path.join(d, "one_bad", "fox", "truncated.png"), png_bytes("fox", 1)[:60])
    # A 0x0 image among good ones.
    for cls in COLOURS:
        good_class(os.path.join(d, "zero_size"), cls)
    write(os.path.join(d, "zero_size", "cat", "zero.gif"), gif_zero())
    # Class folders that cannot be classes.
    for cls in ("cat", "dog"):
        good_class(os.path.join(d, "empty_class"), cls)
    write(os.path.join(d, "empty_class", "fox", "notes.txt"), "no images here\n")
    good_class(os.path.join(d, "single_class"), "cat")
    write(os.path.join(d, "no_classes", "readme.txt"), "images belong in class folders\n")
    # Links: a loop, a link to the parent, one into another class, a broken one.
    links = os.path.join(d, "links")
    for cls in COLOURS:
        good_class(links, cls)
    os.symlink(".", os.path.join(links, "cat", "loop"))
    os.symlink("..", os.path.join(links, "dog", "up"))
    os.symlink("../cat/0.png", os.path.join(links, "fox", "from_cat.png"))
    os.symlink("missing.png", os.path.join(links, "fox", "broken.png"))
    scale_formats(d)
    round_three(d)


def scale_formats(d):
    """WebDataset shards and Parquet files that cannot be read."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = os.path.join(d, "shards")
    os.makedirs(shards, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for i, cls in enumerate(COLOURS):
            for name, data in ((f"{i:04d}.png", png_bytes(cls, i)), (f"{i:04d}.txt", cls.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 0
                t.addfile(info, io.BytesIO(data))
    whole = buf.getvalue()
    # Cut inside the second sample's image: its header claims more than is there.
    write(os.path.join(shards, "truncated.tar"), whole[:512 * 5 + 100])
    write(os.path.join(shards, "random.tar"), bytes(random.Random(7).getrandbits(8) for _ in range(2048)))
    pq_dir = os.path.join(d, "parquet")
    os.makedirs(pq_dir, exist_ok=True)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": png_bytes(c, 0), "path": None} for c in COLOURS], type=image),
        "label": pa.array([0, 1, 2], type=pa.int64()),
    })
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    good = sink.getvalue().to_pybytes()
    write(os.path.join(pq_dir, "truncated.parquet"), good[: len(good) // 2])
    write(os.path.join(pq_dir, "text.parquet"), "path,label\na.png,cat\n")
    sink = pa.BufferOutputStream()
    pq.write_table(table.drop(["label"]), sink)
    write(os.path.join(pq_dir, "no_label.parquet"), sink.getvalue().to_pybytes())


def tar_of(members):
    """A tar file (bytes) of `(name, data)` members, in order."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def round_three(d):
    """Reliability round three (#32): repeated samples, overlaps, sizes, formats."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = os.path.join(d, "shards")
    samples = [(f"{c}{i}", c) for c in COLOURS for i in range(4)]
    good = [m for k, c in samples for m in ((f"{k}.png", png_bytes(c, int(k[-1]))), (f"{k}.txt", c.encode()))]
    write(os.path.join(shards, "good.tar"), tar_of(good))
    # The key cat0 written twice: with another label, and with the same one.
    write(os.path.join(shards, "repeated_key.tar"),
          tar_of(good + [("cat0.png", png_bytes("dog", 9)), ("cat0.txt", b"dog")]))
    write(os.path.join(shards, "repeated_same.tar"),
          tar_of(good + [("cat0.png", png_bytes("cat", 0)), ("cat0.txt", b"cat")]))
    # Index labels: one outside the three class names; one whose .cls and .txt disagree.
    indexed = [m for n, (k, c) in enumerate(samples)
               for m in ((f"{k}.png", png_bytes(c, int(k[-1]))), (f"{k}.cls", str(list(COLOURS).index(c)).encode()))]
    write(os.path.join(shards, "cls_outside.tar"), tar_of(indexed + [("odd.png", png_bytes("cat", 5)), ("odd.cls", b"7")]))
    write(os.path.join(shards, "cls_txt_disagree.tar"),
          tar_of(indexed + [("odd.png", png_bytes("cat", 5)), ("odd.cls", b"0"), ("odd.txt", b"dog")]))
    # Compressed shards: one named, and a folder holding only compressed ones.
    write(os.path.join(shards, "good.tar.gz"), gzip.compress(tar_of(good), mtime=0))
    write(os.path.join(d, "gz_only", "train-000000.tar.gz"), gzip.compress(tar_of(good), mtime=0))
    # Parquet labels of a float type.
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [(c, i) for c in COLOURS for i in range(4)]
    table = pa.table({
        "image": pa.array([{"bytes": png_bytes(c, i), "path": None} for c, i in rows], type=image),
        "label": pa.array([float(list(COLOURS).index(c)) for c, _ in rows], type=pa.float64()),
    })
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write(os.path.join(d, "parquet", "float_labels.parquet"), sink.getvalue().to_pybytes())
    # Validation images that are copies of training images (other files, same bytes).
    for c in COLOURS:
        for i in range(2):
            write(os.path.join(d, "val_copies", c, f"copy{i}.png"), png_bytes(c, i))
    # Hidden folders and macOS metadata beside the classes: not classes.
    for c in COLOURS:
        good_class(os.path.join(d, "hidden"), c)
    write(os.path.join(d, "hidden", ".thumbnails", "0.png"), png_bytes("cat", 0))
    write(os.path.join(d, "hidden", "__MACOSX", "cat", "._0.png"), b"\x00\x05\x16\x07")
    # A decompression bomb: a PNG header claiming 20000 x 20000 pixels in 100 bytes.
    bomb = os.path.join(d, "bomb")
    for c in COLOURS:
        good_class(bomb, c)
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    write(os.path.join(bomb, "cat", "bomb.png"), b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
          + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def csv():
    c = os.path.join(OUT, "csv")
    rows = [f"../data/good/{cls}/{i}.png,{cls}" for cls in COLOURS for i in range(4)]
    body = "\n".join(rows) + "\n"
    write(os.path.join(c, "extra_column.csv"), "path,label\n" + body + "../data/good/cat/1.png,cat,oops\n")
    write(os.path.join(c, "empty_label.csv"), "path,label\n" + body + "../data/good/cat/2.png,\n")
    write(os.path.join(c, "missing_file.csv"), "path,label\n" + body + "../data/good/cat/nope.png,cat\n")
    write(os.path.join(c, "wrong_header.csv"), "file,class\n" + body)
    write(os.path.join(c, "header_only.csv"), "path,label\n")
    write(os.path.join(c, "not_utf8.csv"), b"path,label\n../data/good/cat/0.png,caf\xe9\n")
    # Image-caption pairs (open_clip's filepath,title CSVs).
    pairs = "\n".join(f"../data/good/{cls}/{i}.png,\"a {cls}, picture {i}\"" for cls in COLOURS for i in range(4))
    write(os.path.join(c, "captions.csv"), "filepath,title\n" + pairs + "\n")
    write(os.path.join(c, "empty_caption.csv"), "filepath,title\n" + pairs + "\n../data/good/cat/1.png,\n")
    # A row repeated (the same label), and a row repeated with another label.
    write(os.path.join(c, "repeated_row.csv"), "path,label\n" + body + rows[0] + "\n" + rows[1] + "\n")
    write(os.path.join(c, "two_labels.csv"), "path,label\n" + body + "../data/good/cat/0.png,dog\n")


def idx_file(dims, payload, code=0x08):
    return struct.pack(">BBBB", 0, 0, code, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + payload


def idx():
    i = os.path.join(OUT, "idx")
    pixels = bytes(rng.getrandbits(8) for _ in range(6 * 4 * 4))
    write(os.path.join(i, "images"), idx_file([6, 4, 4], pixels))
    write(os.path.join(i, "labels"), idx_file([6], bytes([0, 1, 2, 0, 1, 2])))
    write(os.path.join(i, "huge-images"), idx_file([0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], b""))
    write(os.path.join(i, "truncated-images"), idx_file([6, 4, 4], pixels[:50]))
    write(os.path.join(i, "zero-rows-images"), idx_file([6, 0, 4], b""))
    write(os.path.join(i, "five-labels"), idx_file([5], bytes([0, 1, 2, 0, 1])))
    write(os.path.join(i, "labels-255"), idx_file([6], bytes([0, 1, 255, 0, 1, 255])))


SMOKE_HEAD = """[run]
name = "bad"
output_dir = "runs"
device = "cpu"

[model.architecture]
preset = "tiny"
projection_dim = 16
[model.architecture.vision]
image_size = 16
patch_size = 4
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 2
num_attention_heads = 4

[data]
train = { kind = "image_folder", path = "data/good" }
val_fraction = 0.25
train_transforms = [{ op = "random_resized_crop", size = 16, scale = [0.8, 1.0] }, { op = "normalize" }]
"""


def configs():
    c = os.path.join(OUT, "configs")
    write(os.path.join(c, "unknown_keys.toml"),
          SMOKE_HEAD + "[train]\nepochs = 1\nepoch = 2\nlabel_smothing = 0.1\n[optim]\nlrr = 1e-3\n")
    write(os.path.join(c, "wrong_types.toml"),
          SMOKE_HEAD + "[train]\nepochs = \"three\"\ngrad_accum = 1.5\n[data.loader]\nbatch_size = \"big\"\n")
    write(os.path.join(c, "negative.toml"), SMOKE_HEAD + "[data.loader]\nbatch_size = -8\n")
    write(os.path.join(c, "bad_enum.toml"), SMOKE_HEAD + "[train]\nprecision = \"fp8\"\n")
    write(os.path.join(c, "syntax.toml"), SMOKE_HEAD + "[train\nepochs = 1\n")
    write(os.path.join(c, "binary.toml"), bytes(rng.getrandbits(8) for _ in range(200)))
    write(os.path.join(c, "name_dotdot.toml"), SMOKE_HEAD.replace('name = "bad"', 'name = ".."'))
    write(os.path.join(c, "name_slash.toml"), SMOKE_HEAD.replace('name = "bad"', 'name = "a/b"'))
    write(os.path.join(c, "threads.toml"), SMOKE_HEAD.replace('device = "cpu"', 'device = "cpu"\nthreads = 1000000'))
    write(os.path.join(c, "loader_threads.toml"), SMOKE_HEAD + "[data.loader]\nthreads = 100000\n")
    # 2^62 epochs of 9 steps: the step count overflows.
    write(os.path.join(c, "huge_epochs.toml"),
          SMOKE_HEAD + "[data.loader]\nbatch_size = 1\n[train]\nepochs = 4611686018427387904\n")
    write(os.path.join(c, "no_model.toml"), SMOKE_HEAD.split("[model.architecture]")[0]
          + SMOKE_HEAD.split('num_attention_heads = 4\n')[1])
    write(os.path.join(c, "missing_data.toml"), SMOKE_HEAD.replace("data/good", "data/nowhere"))


def models():
    m = os.path.join(OUT, "models")
    with open(os.path.join(TINY, "model.safetensors"), "rb") as f:
        weights = f.read()
    cfg = os.path.join(TINY, "config.json")

    def model(name, blob=None, tensors=None):
        d = os.path.join(m, name)
        os.makedirs(d, exist_ok=True)
        shutil.copy(cfg, os.path.join(d, "config.json"))
        if blob is not None:
            write(os.path.join(d, "model.safetensors"), blob)
        if tensors is not None:
            save_file(tensors, os.path.join(d, "model.safetensors"))
        return d

    model("truncated", weights[:4096])
    model("garbage_header", b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}  " + b"\x00" * 64)
    t = load_file(os.path.join(TINY, "model.safetensors"))
    name = "vision_model.post_layernorm.weight"
    model("missing_tensor", tensors={k: v for k, v in t.items() if k != name})
    model("wrong_shape", tensors={k: (v[:-1] if k == name else v) for k, v in t.items()})
    d = model("bad_config_json", weights[:64])
    write(os.path.join(d, "config.json"), "{\"model_type\": \"clip\", \n")
    write(os.path.join(m, "no_config", "model.txt"), "not a model\n")
    # Dimensions that would allocate terabytes: refused before any tensor exists.
    d = model("huge_dims", weights[:64])
    with open(cfg) as f:
        config = json.load(f)
    config["text_config"].update(hidden_size=4000000, num_attention_heads=1)
    write(os.path.join(d, "config.json"), json.dumps(config, indent=2))
    # PyTorch .bin checkpoints: a legacy raw pickle (not the zip torch.save writes
    # since 1.6), a zip cut short, and a pickle that calls os.system when Python
    # loads it (refused by name; it never runs).
    def bin_model(name, blob):
        d = os.path.join(m, name)
        os.makedirs(d, exist_ok=True)
        shutil.copy(cfg, os.path.join(d, "config.json"))
        write(os.path.join(d, "pytorch_model.bin"), blob)

    bin_model("bin_raw_pickle", b"\x80\x02}q\x00.")
    evil = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        info = zipfile.ZipInfo("archive/data.pkl", date_time=(1980, 1, 1, 0, 0, 0))
        z.writestr(info, evil)
    bin_model("bin_foreign_global", buf.getvalue())
    bin_model("bin_truncated", buf.getvalue()[:40])


def runs():
    r = os.path.join(OUT, "runs", "damaged")
    write(os.path.join(r, "config.resolved.toml"), SMOKE_HEAD.replace('name = "bad"', 'name = "damaged"'))
    ck = os.path.join(r, "checkpoints", "step-00000003")
    write(os.path.join(ck, "trainer_state.json"), "{\"global_step\": 3, \"epo")
    with open(os.path.join(TINY, "model.safetensors"), "rb") as f:
        write(os.path.join(ck, "model", "model.safetensors"), f.read()[:2048])
    write(os.path.join(ck, "optimizer.safetensors"), b"")


def main():
    cases = os.path.join(OUT, "cases.toml")
    kept = open(cases).read() if os.path.exists(cases) else None
    shutil.rmtree(OUT, ignore_errors=True)
    data()
    csv()
    idx()
    configs()
    models()
    runs()
    if kept is not None:
        write(cases, kept)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
