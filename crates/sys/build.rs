//! Compiles the four C++ shims (`src/*.cpp`, one convention in
//! `include/clip_shim.h`) against the libtorch torch-sys links, gloo's headers
//! (Debian's `libgloo-dev`, which scripts/setup.sh installs; `CLIP_GLOO_INCLUDE`
//! names another folder holding `gloo/`) and, with the `nccl` feature, the torch
//! wheel's NCCL and CUDA headers.
include!("../libtorch_build.rs");

use std::path::Path;

const SHIMS: [&str; 4] = [
    "src/autocast.cpp",
    "src/cuda.cpp",
    "src/kernels.cpp",
    "src/c10d.cpp",
];

fn main() {
    println!("cargo:rerun-if-changed=include/clip_shim.h");
    println!("cargo:rerun-if-env-changed=CLIP_GLOO_INCLUDE");
    let lib = rpath_to_libtorch();
    // Where clip-model's `load_cuda` finds libtorch_cuda.so.
    println!("cargo:rustc-env=CLIP_LIBTORCH_LIB={}", lib.display());
    let include = lib
        .parent()
        .map(|p| p.join("include"))
        .expect("libtorch lib folder has a parent");
    let gloo = std::env::var("CLIP_GLOO_INCLUDE").unwrap_or_else(|_| "/usr/include".into());
    if !Path::new(&gloo).join("gloo/config.h").is_file() {
        panic!(
            "clip-sys needs gloo's C++ headers ({gloo}/gloo/config.h is missing): run scripts/setup.sh \
             (it installs Debian's libgloo-dev) or set CLIP_GLOO_INCLUDE to a folder holding gloo/"
        );
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .include("include")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        .define("USE_GLOO", None)
        .warnings(false);
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        // The wheel's site-packages/nvidia/{nccl,cu13}/include.
        let real = std::fs::canonicalize(&lib).expect("the libtorch lib folder exists");
        let site = real
            .parent()
            .and_then(Path::parent)
            .expect("libtorch sits in site-packages/torch");
        build
            .define("USE_C10D_NCCL", None)
            .include(site.join("nvidia/nccl/include"))
            .include(site.join("nvidia/cu13/include"));
    }
    for shim in SHIMS {
        println!("cargo:rerun-if-changed={shim}");
        build.file(shim);
    }
    build.compile("clip_shims");
}
