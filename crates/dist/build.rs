//! Gives this package's binaries, tests and benches an rpath to libtorch (the
//! C++ shims are clip-sys's).
include!("../libtorch_build.rs");

fn main() {
    rpath_to_libtorch();
}
