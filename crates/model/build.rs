//! Compiles the autocast shim and gives this package's binaries an rpath to libtorch.
include!("../libtorch_build.rs");

fn main() {
    compile_shim("src/autocast.cpp", "clip_autocast");
}
