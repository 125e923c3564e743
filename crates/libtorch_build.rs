// Shared by the build scripts of the crates that link libtorch (each `include!`s it).
//
// torch-sys puts no rpath into binaries: `rpath_to_libtorch` gives the package's
// binaries, tests and benches one to the libtorch they were linked against, so they
// run without LD_LIBRARY_PATH. `compile_shim` builds a few lines of C++ against that
// libtorch's headers, for the calls tch does not wrap.

use std::path::PathBuf;

#[allow(dead_code)]
fn rpath_to_libtorch() -> PathBuf {
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB"));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    lib
}

#[allow(dead_code)]
fn compile_shim(source: &str, name: &str) {
    println!("cargo:rerun-if-changed={source}");
    let lib = rpath_to_libtorch();
    let include = lib.parent().map(|p| p.join("include")).expect("libtorch lib folder has a parent");
    cc::Build::new()
        .cpp(true)
        .file(source)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile(name);
}
