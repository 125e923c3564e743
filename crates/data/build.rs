//! With the `tch` feature, gives this package's binaries, tests and benches an
//! rpath to libtorch; without it there is nothing to do.
include!("../libtorch_build.rs");

fn main() {
    if std::env::var_os("DEP_TCH_LIBTORCH_LIB").is_some() {
        rpath_to_libtorch();
    }
}
