//! torch-sys puts no rpath into binaries: give this package's binaries, tests and
//! benches one to the libtorch they were linked against, so they run without
//! LD_LIBRARY_PATH.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
