"""PyTorch `.bin` checkpoints of a safetensors CLIP folder, for the tests of
reading them (crates/train-cli/tests/cli.rs): each a folder with the source's
config.json and tokenizer.json.

    .venv/bin/python scripts/make_bin_checkpoints.py SRC OUT MARKER

- OUT/bin:     pytorch_model.bin as transformers 4 wrote it (torch.save of the
               state dict: an OrderedDict with its `_metadata`)
- OUT/sharded: two shards of plain dicts and pytorch_model.bin.index.json
- OUT/fp16:    every tensor in fp16
- OUT/evil:    a pickle whose object calls os.system('touch MARKER') when
               Python unpickles it (a reader must refuse it; MARKER must not
               appear)
"""

import collections
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file


def folder(src: str, out: str, name: str) -> str:
    d = os.path.join(out, name)
    os.makedirs(d)
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(os.path.join(src, f), d)
    return d


class Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


def main() -> None:
    src, out, marker = sys.argv[1:4]
    sd = load_file(os.path.join(src, "model.safetensors"))
    od = collections.OrderedDict(sd)
    od._metadata = collections.OrderedDict({"": {"version": 1}})
    torch.save(od, os.path.join(folder(src, out, "bin"), "pytorch_model.bin"))
    d = folder(src, out, "sharded")
    keys = list(sd)
    weight_map = {}
    for i, part in enumerate([keys[: len(keys) // 2], keys[len(keys) // 2 :]]):
        name = "pytorch_model-%05d-of-00002.bin" % (i + 1)
        torch.save({k: sd[k] for k in part}, os.path.join(d, name))
        weight_map.update({k: name for k in part})
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    half = {k: v.half() for k, v in sd.items()}
    torch.save(half, os.path.join(folder(src, out, "fp16"), "pytorch_model.bin"))
    torch.save({"x": Evil(marker)}, os.path.join(folder(src, out, "evil"), "pytorch_model.bin"))


if __name__ == "__main__":
    main()
