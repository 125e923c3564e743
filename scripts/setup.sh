#!/usr/bin/env bash
# Idempotent setup: a Python venv in .venv/ holding the libtorch that tch 0.26 links
# against (PyPI's torch==2.13.0) and the packages the fixture and baseline scripts
# use, a .venv/libtorch link that .cargo/config.toml points cargo at, and Debian's
# Fashion-MNIST (the demo's data) when apt is available.
# A second run on a set-up machine only checks, and says so.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
# Pinned: fixtures are generated with these versions; torch must be the one tch expects.
# flask, sqlalchemy and alembic let the tests run MLflow's own tracking server
# (scripts/mlflow_test_server.py) beside mlflow-skinny's client.
requirements=(torch==2.13.0 torchvision==0.28.0 transformers==5.24.0 safetensors==0.8.0 peft==0.21.2 tensorboard==2.21.0 pyarrow==25.0.1 datasets==5.0.1 mlflow-skinny==3.18.0 flask==3.1.3 sqlalchemy==2.1.9 alembic==1.20.1)
stamp="$venv/.setup-complete"
want="${requirements[*]}"
fmnist=/usr/share/datasets/fashion-mnist

die() { echo "setup.sh: $*" >&2; exit 1; }
say() { echo "setup.sh: $*"; }

setup_python() {
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -e "$venv/libtorch/lib/libtorch_cpu.so" ]]; then
        say "Python venv already set up ($want)"
        return
    fi
    command -v python3 >/dev/null || die "python3 not found: install Python 3.9+ (e.g. apt-get install python3 python3-venv)"
    if [[ ! -x "$venv/bin/python" ]]; then
        say "creating $venv"
        python3 -m venv "$venv" || die "python3 -m venv failed: install the venv module (e.g. apt-get install python3-venv)"
    fi
    "$venv/bin/python" -m pip --version >/dev/null 2>&1 || die "pip is missing in $venv: install python3-pip / ensurepip"
    # The wheels take ~5.5 GB installed; pip unpacks each beside its download. Without
    # the room, pip fails half-way with "No space left on device" and nothing says why.
    local free_kb need_kb=$((7 * 1024 * 1024))
    free_kb="$(df -Pk "$venv" | awk 'NR == 2 { print $4 }')"
    if [[ -n "$free_kb" && "$free_kb" -lt "$need_kb" ]]; then
        die "only $((free_kb / 1024)) MiB free on the file system of $venv; the Python packages need ~7 GiB (and a cold cargo build ~10 GiB more): free some space (e.g. old target/ folders) and run again"
    fi
    say "installing ${want} (first run: ~5.5 GB, a few minutes)"
    # --no-cache-dir: pip's cache would keep a second copy of the ~3.5 GB of wheels.
    "$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check "${requirements[@]}" \
        || die "pip install of ${want} failed (see pip's output above)"
    local torch_dir
    torch_dir="$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
        || die "torch does not import from $venv"
    ln -sfn "$torch_dir" "$venv/libtorch"
    [[ -e "$venv/libtorch/lib/libtorch_cpu.so" ]] || die "no libtorch_cpu.so under $torch_dir/lib"
    echo "$want" > "$stamp"
    say "libtorch ready at $venv/libtorch -> $torch_dir"
}

font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
gloo_header=/usr/include/gloo/config.h
jpeg_header=/usr/include/jpeglib.h

setup_data() {
    local packages=()
    [[ -d "$fmnist" ]] || packages+=(dataset-fashion-mnist)
    [[ -f "$font" ]] || packages+=(fonts-dejavu-core)
    # gloo's headers: clip-dist's c10d shim includes ProcessGroupGloo.hpp, which the wheel
    # ships without them.
    [[ -f "$gloo_header" ]] || packages+=(libgloo-dev)
    # libjpeg-turbo's headers and library: clip-data decodes JPEGs with it, as PIL.
    [[ -f "$jpeg_header" ]] || packages+=(libjpeg62-turbo-dev)
    if [[ ${#packages[@]} == 0 ]]; then
        say "Fashion-MNIST present in $fmnist, plot font, gloo and libjpeg-turbo headers present"
        return
    fi
    if ! command -v apt-get >/dev/null; then
        say "warning: no apt-get; the demo needs Fashion-MNIST's IDX files in $fmnist, plots need a TrueType font (CLIP_PLOT_FONT) and the build needs gloo's headers (CLIP_GLOO_INCLUDE) and libjpeg-turbo's (CLIP_JPEG_INCLUDE, CLIP_JPEG_LIB)"
        return
    fi
    local sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    say "installing Debian's ${packages[*]}"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null; } \
        || die "apt-get install ${packages[*]} failed (see above)"
    [[ -d "$fmnist" ]] || die "dataset-fashion-mnist installed but $fmnist is missing"
}

setup_python
setup_data
