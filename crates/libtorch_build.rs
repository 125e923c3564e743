// Shared by the build scripts of the crates that link libtorch (each `include!`s it).
//
// torch-sys puts no rpath into binaries: `rpath_to_libtorch` gives the package's
// binaries, tests and benches one to the libtorch they were linked against, so they
// run without LD_LIBRARY_PATH (a link argument reaches only the package that emits
// it, hence one call per package). The C++ shims are compiled by clip-sys alone.

use std::path::PathBuf;

fn rpath_to_libtorch() -> PathBuf {
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB"),
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    lib
}
