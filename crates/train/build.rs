//! Gives this package's binaries, tests and benches an rpath to libtorch.
include!("../libtorch_build.rs");

fn main() {
    rpath_to_libtorch();
}
