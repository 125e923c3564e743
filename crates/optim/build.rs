//! Compiles the multi-tensor kernel shim (src/kernels.cpp) against the libtorch
//! torch-sys found, and gives this package's binaries, tests and benches an rpath
//! to it (torch-sys adds none).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/kernels.cpp");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB"),
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let include = lib
        .parent()
        .map(|p| p.join("include"))
        .expect("libtorch lib folder has a parent");
    cc::Build::new()
        .cpp(true)
        .file("src/kernels.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile("clip_optim_kernels");
}
