//! Compiles the c10d shim against libtorch's headers and gloo's (Debian's
//! `libgloo-dev`, which scripts/setup.sh installs; `CLIP_GLOO_INCLUDE` names another
//! folder holding `gloo/`). With the `nccl` feature, ProcessGroupNCCL too.
include!("../libtorch_build.rs");

use std::path::Path;

fn main() {
    let source = "src/c10d.cpp";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CLIP_GLOO_INCLUDE");
    let lib = rpath_to_libtorch();
    let include = lib
        .parent()
        .map(|p| p.join("include"))
        .expect("libtorch lib folder has a parent");
    let gloo = std::env::var("CLIP_GLOO_INCLUDE").unwrap_or_else(|_| "/usr/include".into());
    if !Path::new(&gloo).join("gloo/config.h").is_file() {
        panic!(
            "clip-dist needs gloo's C++ headers ({gloo}/gloo/config.h is missing): run scripts/setup.sh \
             (it installs Debian's libgloo-dev) or set CLIP_GLOO_INCLUDE to a folder holding gloo/"
        );
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file(source)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        .define("USE_GLOO", None)
        .warnings(false);
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        // The wheel's site-packages/nvidia/{nccl,cu13}/include (DESIGN.md section 7).
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
    build.compile("clip_c10d");
}
